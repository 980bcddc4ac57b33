import { describe, expect, it } from 'vitest';
import { RecordingRunner } from '../../exec/runner.js';
import { InvalidRequestError, InvalidStateError } from '../../shared/errors.js';
import { nfsBackingChain, nfsChainBlockdevs, nfsFileNode, nfsImageOpts } from './nfs-client.js';

const loc = { server: '10.0.0.5', export: '/vmlink/nas', file: 'clone.qcow2' };
const infoArgv = (file: string) => [
  'qemu-img',
  'info',
  '-U',
  '--output=json',
  `json:${JSON.stringify({ driver: 'qcow2', file: nfsFileNode(loc, file) })}`,
];
const info = (backing?: string, format = 'qcow2') =>
  JSON.stringify({
    format: 'qcow2',
    'virtual-size': 1 << 20,
    ...(backing ? { 'backing-filename': backing, 'backing-filename-format': format } : {}),
  });

describe('nfs client', () => {
  it('names a volume file as QEMU opens it, in options and in --image-opts', () => {
    expect(nfsFileNode(loc)).toEqual({
      driver: 'nfs',
      server: { type: 'inet', host: '10.0.0.5' },
      path: '/vmlink/nas/clone.qcow2',
    });
    expect(nfsImageOpts(loc)).toBe(
      'file.driver=nfs,file.server.type=inet,file.server.host=10.0.0.5,file.path=/vmlink/nas/clone.qcow2',
    );
  });

  it('refuses servers, exports and files that could smuggle options or leave the export', () => {
    for (const bad of [
      { ...loc, server: '10.0.0.5,file.driver=file' },
      { ...loc, export: '/vmlink/../etc' },
      { ...loc, export: 'vmlink/nas' },
      { ...loc, file: '../x.qcow2' },
      { ...loc, file: 'a,b.qcow2' },
      { ...loc, file: 'x.vmdk' },
    ])
      expect(() => nfsImageOpts(bad)).toThrow(InvalidRequestError);
  });

  it('opens a chain with a node per link, each backing the node below by name, the volume last', () => {
    expect(nfsChainBlockdevs(loc, ['base.qcow2', 'gold.qcow2'], 'd0')).toEqual([
      { 'node-name': 'd0-b2-file', ...nfsFileNode(loc, 'gold.qcow2'), 'read-only': true },
      { 'node-name': 'd0-b2', driver: 'qcow2', file: 'd0-b2-file', backing: null, 'read-only': true },
      { 'node-name': 'd0-b1-file', ...nfsFileNode(loc, 'base.qcow2'), 'read-only': true },
      { 'node-name': 'd0-b1', driver: 'qcow2', file: 'd0-b1-file', backing: 'd0-b2', 'read-only': true },
      { 'node-name': 'd0-file', ...nfsFileNode(loc) },
      { 'node-name': 'd0', driver: 'qcow2', file: 'd0-file', backing: 'd0-b1' },
    ]);
    expect(nfsChainBlockdevs(loc, [], 'd0')).toEqual([
      { 'node-name': 'd0-file', ...nfsFileNode(loc) },
      { 'node-name': 'd0', driver: 'qcow2', file: 'd0-file', backing: null },
    ]);
    expect(() => nfsChainBlockdevs(loc, [], 'd0,x')).toThrow(InvalidRequestError);
  });

  it('reads the backing chain link by link over NFS', async () => {
    const r = new RecordingRunner()
      .on(infoArgv('clone.qcow2'), { stdout: info('base.qcow2') })
      .on(infoArgv('base.qcow2'), { stdout: info('gold.qcow2') })
      .on(infoArgv('gold.qcow2'), { stdout: info() });
    expect(await nfsBackingChain(r, loc)).toEqual(['base.qcow2', 'gold.qcow2']);
    expect(r.calls).toHaveLength(3);
    const plain = new RecordingRunner().on(infoArgv('clone.qcow2'), { stdout: info() });
    expect(await nfsBackingChain(plain, loc)).toEqual([]);
  });

  it('refuses a header that names anything but a qcow2 volume of the export, or a loop', async () => {
    for (const [backing, format] of [
      ['/etc/shadow', 'qcow2'],
      ['../other/x.qcow2', 'qcow2'],
      ['nfs://10.6.6.6/x/y.qcow2', 'qcow2'],
      ['json:{"driver":"file","filename":"/etc/shadow"}', 'qcow2'],
      ['base.qcow2', 'raw'],
    ] as const) {
      const r = new RecordingRunner().on(infoArgv('clone.qcow2'), { stdout: info(backing, format) });
      await expect(nfsBackingChain(r, loc)).rejects.toThrow(InvalidStateError);
      expect(r.calls).toHaveLength(1);
    }
    const loop = new RecordingRunner()
      .on(infoArgv('clone.qcow2'), { stdout: info('base.qcow2') })
      .on(infoArgv('base.qcow2'), { stdout: info('clone.qcow2') });
    await expect(nfsBackingChain(loop, loc)).rejects.toThrow(/loops/);
    const data = new RecordingRunner().on(infoArgv('clone.qcow2'), {
      stdout: JSON.stringify({
        format: 'qcow2',
        'virtual-size': 1,
        'format-specific': { type: 'qcow2', data: { 'data-file': '/etc/shadow' } },
      }),
    });
    await expect(nfsBackingChain(data, loc)).rejects.toThrow(/data file/);
  });
});
