import { describe, expect, it } from 'vitest';
import { deleteTableScript, Nft, replaceTableScript } from './nft.js';
import { RecordingRunner } from './runner.js';

describe('nft', () => {
  it('replaces a table atomically in one nft -f - transaction', async () => {
    const runner = new RecordingRunner();
    await new Nft(runner, 'lab').replaceTable('inet', 'vmlink', 'table inet vmlink {\n}');
    expect(runner.calls).toEqual([
      {
        argv: ['nft', '-f', '-'],
        netns: 'lab',
        input: 'table inet vmlink {}\ndelete table inet vmlink\ntable inet vmlink {\n}\n',
      },
    ]);
  });

  it('deletes a table whether or not it exists', () => {
    expect(deleteTableScript('inet', 'vmlink')).toBe('table inet vmlink {}\ndelete table inet vmlink\n');
    expect(() => replaceTableScript('inet', 'x; flush ruleset', '')).toThrow(/invalid nftables table name/);
  });

  it('lists a table, undefined when missing', async () => {
    const runner = new RecordingRunner()
      .on(['nft', 'list', 'table', 'inet', 'gone'], { code: 1, stderr: 'Error: No such file or directory' })
      .on(['nft', 'list', 'table', 'inet', 'vmlink'], { stdout: 'table inet vmlink {\n}\n' })
      .on(['nft', 'list', 'tables'], { stdout: 'table inet vmlink\ntable ip filter\n' });
    const nft = new Nft(runner);
    expect(await nft.listTable('inet', 'gone')).toBeUndefined();
    expect(await nft.listTable('inet', 'vmlink')).toContain('table inet vmlink');
    expect(await nft.listTables()).toEqual([
      { family: 'inet', name: 'vmlink' },
      { family: 'ip', name: 'filter' },
    ]);
  });
});
