// Tests' runner for LUKS volumes made by a real qemu-img: the same commands, with a short key-derivation time.
// qemu-img times PBKDF2 so that deriving a LUKS key takes `encrypt.iter-time` of CPU (2000 ms by default) at every
// open of the volume (create, resize, each snapshot step, each qemu-io): on a loaded 2-core machine an encrypted
// test spent most of its time there. The iteration count is written at creation, so adding `encrypt.iter-time=` to
// the creating command makes every later open cheap too. What the tests check does not depend on the count: the
// key reaches qemu-img on stdin only, the volume opens with its key and no other, the file holds no plaintext.
// Production code never passes it: a volume the agent makes keeps qemu-img's default.
import { type RunOptions, type RunResult, SystemRunner } from '../../exec/runner.js';

/** Key-derivation time (ms of CPU) the tests' LUKS volumes are made with (qemu-img's default is 2000). */
export const FAST_LUKS_ITER_TIME_MS = 10;

/**
 * argv with `encrypt.iter-time=ms` added to each `encrypt.format=luks,...` option (a `qemu-img create`/`convert`
 * making a LUKS volume); anything else unchanged. The second value: whether it changed.
 */
export function withFastLuks(argv: readonly string[], ms = FAST_LUKS_ITER_TIME_MS): [string[], boolean] {
  let changed = false;
  const out = argv.map((a) => {
    if (!/^encrypt\.format=luks(,|$)/.test(a) || a.includes('encrypt.iter-time=')) return a;
    changed = true;
    return `${a},encrypt.iter-time=${ms}`;
  });
  return [out, changed];
}

/** A real runner making LUKS volumes with a short key derivation; `luksCreates` counts the commands it changed. */
export class FastLuksRunner extends SystemRunner {
  luksCreates = 0;
  override run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    const [fast, changed] = withFastLuks(argv);
    if (changed) this.luksCreates++;
    return super.run(fast, opts);
  }
}
