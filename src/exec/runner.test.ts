// The system runner against real commands: output is bounded, and a command that floods it is killed.
import { describe, expect, it } from 'vitest';
import { ExecError, SystemRunner } from './runner.js';

describe('SystemRunner', () => {
  const runner = new SystemRunner();

  it('returns output and exit code', async () => {
    const r = await runner.run(['sh', '-c', 'printf out; printf err >&2; exit 3'], { allowFailure: true });
    expect(r).toMatchObject({ code: 3, stdout: 'out', stderr: 'err' });
  });

  it('kills a command whose output passes the cap, keeping only the cap', async () => {
    // `yes` never ends by itself: only the cap stops it.
    const e = await runner.run(['yes'], { maxOutputBytes: 1024 * 1024 }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ExecError);
    const err = e as ExecError;
    expect(err.message).toMatch(/^command failed \(stdout exceeded 1048576 bytes\): yes\n/);
    expect(err.result.stdout.length).toBe(1024 * 1024);
    // The message quotes only the end of the output.
    expect(err.message.length).toBeLessThan(3 * 4096);
  });

  it('caps stderr the same way', async () => {
    const e = await runner.run(['sh', '-c', 'yes >&2'], { maxOutputBytes: 4096 }).catch((x: unknown) => x);
    expect((e as ExecError).message).toMatch(/stderr exceeded 4096 bytes/);
  });
});
