import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SpawnOptions, SystemRunner } from '../../exec/runner.js';
import { InvalidRequestError } from '../../shared/errors.js';
import { Tgtd, tgtdArgv, tgtdFiles } from './tgtd.js';

describe('tgtd instance', () => {
  let dir = '';
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-tgtd-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('runs tgtd in the foreground on its control port and portal', () => {
    expect(tgtdArgv({ controlPort: 3 })).toEqual(['tgtd', '-f', '--control-port', '3']);
    expect(tgtdArgv({ controlPort: 3, portal: { address: '10.9.0.5' } })).toEqual([
      'tgtd',
      '-f',
      '--control-port',
      '3',
      '--iscsi',
      'portal=10.9.0.5:3260',
    ]);
    expect(() => tgtdArgv({ controlPort: 70_000 })).toThrow(InvalidRequestError);
    expect(() => tgtdArgv({ controlPort: 1, portal: { address: '10.0.0.1,x' } })).toThrow(
      InvalidRequestError,
    );
  });

  it('keeps its files in its directory, named by its port', () => {
    expect(tgtdFiles('/run/x', 4)).toEqual({
      identity: '/run/x/tgtd-4.id.json',
      pidfile: '/run/x/tgtd-4.pid',
      log: '/run/x/tgtd-4.log',
    });
  });

  it('quotes its log when it exits at once, and is not found running afterwards', async () => {
    // Stands in for a tgtd that dies on start (e.g. its port's lock taken): what start() does with it is the test.
    class DyingRunner extends SystemRunner {
      override spawnDetached(_argv: readonly string[], opts: SpawnOptions = {}): Promise<number> {
        return super.spawnDetached(
          ['sh', '-c', 'echo "unable to get lock of management IPC" >&2; exit 1'],
          opts,
        );
      }
    }
    const t = new Tgtd({ runner: new DyingRunner(), controlPort: 32_001, dir });
    await expect(t.start()).rejects.toThrow(
      /tgtd \(control port 32001\) exited at once; its log:\n.*unable to get lock/,
    );
    expect(await readFile(t.files.log, 'utf8')).toContain('unable to get lock');
    expect(await t.running()).toBeUndefined();
    await t.stop(); // nothing to stop: fine
  });
});
