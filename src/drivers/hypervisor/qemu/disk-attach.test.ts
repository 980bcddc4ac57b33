import { describe, expect, it } from 'vitest';
import { vmPaths } from './cmdline.js';
import { attachDisksAtStart, type DiskToAttach, dropSecrets, originOf } from './disk-attach.js';
import { diskSlotIds } from './disk-slots.js';
import type { FdChannel } from './pass-fd.js';

/** A QMP that records commands and answers `qom-list` with `objects`. */
function fakeQmp(objects: Array<{ name: string; type: string }> = []) {
  const calls: Array<{ command: string; args?: unknown }> = [];
  return {
    calls,
    execute: async <T>(command: string, args?: unknown): Promise<T> => {
      calls.push({ command, args });
      return (command === 'qom-list' ? objects : {}) as T;
    },
  };
}

const paths = vmPaths('/var/lib/vmlink/agent', 'web');
const vault: DiskToAttach = {
  disk: { name: 'vault', sizeMiB: 16, encryption: { secret: 'vault-key' } },
  origin: originOf({ name: 'vault', sizeMiB: 16 }, paths),
  ids: diskSlotIds(0),
  slot: 0,
  secrets: [{ name: 'vault-key', value: Buffer.alloc(32, 1).toString('base64') }],
};
const ctx = (qmp: ReturnType<typeof fakeQmp>) => ({
  vm: 'web',
  qmp,
  fdChannel: {} as FdChannel,
  paths,
});

describe('disk secrets at start', () => {
  it('a VM started here deletes a LUKS key once its nodes are open, then runs', async () => {
    const qmp = fakeQmp();
    await attachDisksAtStart(ctx(qmp), [vault]);
    const names = qmp.calls.map((c) => c.command);
    expect(names).toContain('object-del');
    expect(names.indexOf('object-del')).toBeGreaterThan(names.lastIndexOf('blockdev-add'));
    expect(names.at(-1)).toBe('cont');
  });

  it('an incoming VM keeps the key (activating a LUKS node opens it again) and stays paused', async () => {
    const qmp = fakeQmp();
    await attachDisksAtStart(ctx(qmp), [vault], { incoming: true });
    const names = qmp.calls.map((c) => c.command);
    expect(names).toContain('object-add');
    expect(names).not.toContain('object-del');
    expect(names).not.toContain('cont');
  });

  it('dropSecrets deletes every secret object, and nothing else', async () => {
    const qmp = fakeQmp([
      { name: 'disk0-key', type: 'child<secret>' },
      { name: 'disk1-chap', type: 'child<secret>' },
      { name: 'iothread0', type: 'child<iothread>' },
    ]);
    await dropSecrets(qmp);
    expect(qmp.calls.filter((c) => c.command === 'object-del').map((c) => c.args)).toEqual([
      { id: 'disk0-key' },
      { id: 'disk1-chap' },
    ]);
  });
});
