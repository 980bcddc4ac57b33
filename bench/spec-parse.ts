// What the controller spends on the applied spec of a simulated fleet (docs/fleet-sim.md): the whole load (YAML,
// schema, placement, validation) of N hosts x 20 VMs, its phases, and a placement change (one host's VMs moved by
// owner records, as an HA restart does) through the controller's SpecParser, which parses a text once and runs only
// the checks that read placement again. In one run, side by side: the whole load per placement (what every owner
// record change cost before) and the parser's.
//   npx tsx bench/spec-parse.ts [--hosts 1000] [--vms 20] [--moves 3]
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseDocument } from 'yaml';
import { SpecParser } from '../src/controller/spec-store.js';
import { fleetSpecText } from '../src/fleet-sim/fleet-spec.js';
import { hostNames } from '../src/fleet-sim/sim.js';
import { loadSpec } from '../src/spec/load.js';
import { type Placement, placeSpec } from '../src/spec/placement.js';
import { SpecSchema } from '../src/spec/schema.js';
import { validateSpec } from '../src/spec/validate/index.js';
import { hostInfo, load1, numArg, round, since } from './lib.js';

const HOSTS = numArg('--hosts', 1000);
const VMS = numArg('--vms', 20);
const MOVES = numArg('--moves', 3);

const hosts = hostNames(HOSTS);
const text = fleetSpecText({
  hosts: hosts.map((name) => ({ name, address: `unix:///run/vmlink-sim/${name}.sock` })),
  vmsPerHost: VMS,
  heartbeatSeconds: 10,
  etcd: ['https://127.0.0.1:2379'],
});
const loadAtStart = load1();

// Phases of one whole load.
let t = performance.now();
const doc = parseDocument(text, { uniqueKeys: true });
const yamlMs = since(t);
t = performance.now();
const parsed = SpecSchema.parse(doc.toJS({ maxAliasCount: 100 }));
const schemaMs = since(t);
t = performance.now();
const unplaced = placeSpec(parsed);
const placeMs = since(t);
t = performance.now();
const issues = validateSpec(unplaced);
const validateMs = since(t);
if (issues.length)
  throw new Error(`the fleet's spec does not validate: ${issues[0]!.path}: ${issues[0]!.message}`);

/** Host `k`'s VMs moved to the next host, by owner records (the rest where the spec puts them). */
const moved = (k: number): Placement => {
  const out: Record<string, { host: string; source: 'owner' }> = {};
  for (let i = 0; i < VMS; i++) out[`v${hosts[k]}-${i}`] = { host: hosts[(k + 1) % HOSTS]!, source: 'owner' };
  return out;
};

// The parser: the first parse of the text, then placement changes.
const parser = new SpecParser();
t = performance.now();
parser.parse(text, 'fleet.yaml');
const firstMs = since(t);
const parserMoves: number[] = [];
const wholeMoves: number[] = [];
for (let k = 0; k < MOVES; k++) {
  t = performance.now();
  const s = parser.parse(text, 'fleet.yaml', moved(k));
  parserMoves.push(since(t));
  if (s.vms[k * VMS]!.host !== hosts[(k + 1) % HOSTS]) throw new Error('the placement was not applied');
  t = performance.now();
  loadSpec(text, 'fleet.yaml', moved(k));
  wholeMoves.push(since(t));
}
// A read of the applied spec in a cluster (`SpecStore.current()`: every status, vm list and reconcile): placed by
// every VM's owner record, host 0's VMs moved; the first such read places anew, the rest find it kept.
const owners: Record<string, { host: string; specHost: string }> = {};
for (const [h, host] of hosts.entries())
  for (let i = 0; i < VMS; i++)
    owners[`v${host}-${i}`] = { host: h ? host : hosts[1 % HOSTS]!, specHost: host };
const reads: number[] = [];
for (let k = 0; k < 4; k++) {
  t = performance.now();
  const s = parser.placed(text, 'fleet.yaml', owners);
  reads.push(since(t));
  if (s.vms[0]!.host !== hosts[1 % HOSTS]) throw new Error('the owner records were not applied');
}
if (parser.parsedTexts !== 1) throw new Error(`the parser parsed the text ${parser.parsedTexts} times`);

const result = {
  at: new Date().toISOString(),
  host: hostInfo(),
  load1: { start: loadAtStart, end: load1() },
  fleet: { hosts: HOSTS, vmsPerHost: VMS, specBytes: text.length },
  wholeLoadMs: { yaml: yamlMs, schema: schemaMs, place: placeMs, validate: validateMs },
  parserFirstMs: firstMs,
  placementChangeMs: { parser: parserMoves, wholeLoad: wholeMoves },
  ownerPlacedReadMs: { first: reads[0], kept: reads.slice(1) },
  ratio: round(Math.min(...wholeMoves) / Math.max(...parserMoves), 1),
};
console.log(JSON.stringify(result, null, 2));
writeFileSync(
  fileURLToPath(new URL('./results/spec-parse.json', import.meta.url)),
  `${JSON.stringify(result, null, 2)}\n`,
);
