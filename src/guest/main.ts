import { SystemRunner } from '../exec/runner.js';
import { VmlinkError } from '../shared/errors.js';
import { DEFAULT_DEB_CACHE, DEFAULT_GUEST_DIR, ensureTestGuest } from './build.js';

// CLI: npx tsx src/guest/main.ts [--force] [--out DIR] [--cache DIR]
const usage = 'usage: tsx src/guest/main.ts [--force] [--out DIR] [--cache DIR]';
const args = process.argv.slice(2);
let force = false;
let outDir = DEFAULT_GUEST_DIR;
let cacheDir = DEFAULT_DEB_CACHE;
for (let i = 0; i < args.length; i++) {
  const a = args[i]!;
  if (a === '--force') force = true;
  else if ((a === '--out' || a === '--cache') && args[i + 1]) {
    if (a === '--out') outDir = args[++i]!;
    else cacheDir = args[++i]!;
  } else {
    console.error(a === '-h' || a === '--help' ? usage : `unknown argument ${JSON.stringify(a)}\n${usage}`);
    process.exit(a === '-h' || a === '--help' ? 0 : 2);
  }
}

try {
  const started = Date.now();
  const g = await ensureTestGuest({
    runner: new SystemRunner(),
    outDir,
    cacheDir,
    force,
    progress: (line) => console.log(line),
  });
  const pvh = g.bootKernel !== g.kernel ? `, booted as its PVH ELF ${g.bootKernel}` : '';
  console.log(`kernel ${g.kernel}${pvh}\ninitrd ${g.initrd} (${g.manifest.files['initrd.img'].size} bytes)`);
  console.log(`${g.rebuilt ? 'built' : 'checked'} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} catch (e) {
  console.error(e instanceof Error ? e.message : String(e));
  process.exit(e instanceof VmlinkError ? 1 : 70);
}
