import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RecordingRunner, type SpawnOptions } from '../exec/runner.js';
import { LabSchema } from '../spec/schema-lab.js';
import { Lab } from './lab.js';
import { labNamespaces } from './names.js';
import { LabStorage } from './storage.js';

const spec = LabSchema.parse({
  name: 'qs',
  lan: { cidr: '192.168.50.0/24', gateway: '192.168.50.1' },
  upstream: { cidr: '203.0.113.0/24', address: '203.0.113.1' },
  hosts: [{ name: 'host1', address: '192.168.50.10' }],
  peers: [{ name: 'pc1', address: '192.168.50.20' }],
});

/** Records like RecordingRunner; a spawned relay "listens" at once (its socket files appear, its pid is alive). */
class RelayingRunner extends RecordingRunner {
  override async spawnDetached(argv: readonly string[], opts: SpawnOptions = {}): Promise<number> {
    const pid = await super.spawnDetached(argv, opts);
    if (!argv.includes('relay')) return pid;
    argv.forEach((a, i) => {
      if (argv[i - 1] === '--listen') writeFileSync(a.slice('unix://'.length), '');
    });
    return process.pid;
  }
}

describe('lab', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmlink-lab-'));
  beforeAll(() => {
    process.env.VMLINK_RUN_DIR = join(dir, 'run');
    process.env.VMLINK_STATE_DIR = join(dir, 'state');
  });
  afterAll(() => {
    delete process.env.VMLINK_RUN_DIR;
    delete process.env.VMLINK_STATE_DIR;
    rmSync(dir, { recursive: true, force: true });
  });

  it('never changes the root network namespace', async () => {
    // Every link lookup fails, so `up` builds everything; the agent never answers, so it times out at the end.
    const runner = new RelayingRunner()
      .on(['ip', 'link', 'show'], { code: 1 })
      .on(['ip', '-json', 'netns', 'list'], { stdout: '[]' });
    const lab = new Lab(runner, spec);
    await expect(lab.up()).rejects.toThrow(/agent of host1 did not come up/);
    const rootNs = runner.calls.filter((c) => !c.netns && !c.detached);
    // Outside a namespace the lab only lists, adds, deletes or inspects namespaces themselves.
    for (const c of rootNs)
      expect(c.argv.join(' ')).toMatch(/^ip (netns (add|del|pids) vl-qs-|-json netns list$)/);
    // The management relay, then the agent; both in their own namespaces.
    const spawned = runner.calls.filter((c) => c.detached);
    expect(spawned.map((c) => c.netns)).toEqual(['vl-qs--mgmt', 'vl-qs-host1']);
    expect(spawned[0]!.argv.slice(2)).toEqual([
      'lab',
      'relay',
      '--listen',
      `unix://${join(dir, 'run', 'lab', 'qs', 'host1.sock')}`,
      '--to',
      'https://192.168.50.10:7443',
    ]);
    expect(spawned[1]!.argv).toContain('--listen-tcp');
    // The management station takes the LAN's highest address.
    expect(
      runner.calls.some((c) => c.netns === 'vl-qs--mgmt' && c.input?.includes('192.168.50.254/24')),
    ).toBe(true);
  }, 60_000);

  it('puts a storage machine on the LAN, behind the relay, with an agent in the storage role', async () => {
    const withSan = LabSchema.parse({ ...spec, storage: [{ name: 'san1', address: '192.168.50.30' }] });
    expect(labNamespaces(withSan).at(-1)).toBe('vl-qs-san1');
    const runner = new RelayingRunner()
      .on(['ip', 'link', 'show'], { code: 1 })
      .on(['ip', '-json', 'netns', 'list'], { stdout: '[]' });
    await expect(new Lab(runner, withSan).up()).rejects.toThrow(/agent of host1 did not come up/);
    // Wired to the LAN like a peer, with its own address.
    expect(runner.calls.some((c) => c.netns === 'vl-qs-san1' && c.input?.includes('192.168.50.30/24'))).toBe(
      true,
    );
    // The controller reaches its agent through the relay like a host's.
    const relay = runner.calls.find((c) => c.detached && c.argv.includes('relay'))!;
    expect(relay.argv.join(' ')).toContain(
      `--listen unix://${join(dir, 'run', 'lab', 'qs', 'san1.sock')} --to https://192.168.50.30:7443`,
    );
    expect(new LabStorage(runner, withSan).agentArgs(withSan.storage[0]!, 0)).toEqual([
      '--role',
      'storage',
      '--tgt-control-port',
      '1',
      '--nfs-dir',
      join(dir, 'state', 'lab', 'qs', 'san1', 'nfs'),
      '--pool-root',
      '/var/lib/vmlink/pools',
      '--pool-root',
      join(dir, 'state', 'lab', 'qs', 'san1', 'pools'),
    ]);
  }, 60_000);

  it('names infrastructure namespaces so no machine name can collide with them', () => {
    const names = labNamespaces(spec);
    expect(names).toEqual(['vl-qs--sw', 'vl-qs--rt', 'vl-qs--up', 'vl-qs--mgmt', 'vl-qs-host1', 'vl-qs-pc1']);
    expect(new Set(names).size).toBe(names.length);
  });

  it('puts the router next to the upstream machine without taking its address', () => {
    expect(new Lab(new RecordingRunner(), spec).routerUpstreamAddress()).toBe('203.0.113.2');
    expect(
      new Lab(new RecordingRunner(), {
        ...spec,
        upstream: { cidr: '203.0.113.0/24', address: '203.0.113.9' },
      }).routerUpstreamAddress(),
    ).toBe('203.0.113.1');
  });
});
