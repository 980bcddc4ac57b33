import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { checkIdRange, DEFAULT_VM_ID_RANGE, idsInUse, pickFreeId, VmIds } from './identity.js';

describe('idsInUse', () => {
  it('takes uids and primary gids from passwd lines and gids from group lines', () => {
    const passwd = 'root:x:0:0:root:/root:/bin/bash\nvmlink-qemu:x:995:996::/nonexistent:/usr/sbin/nologin\n';
    const group = 'root:x:0:\nkvm:x:104:vmlink-qemu\nbroken line\n';
    expect([...idsInUse(passwd, group)].sort((a, b) => a - b)).toEqual([0, 104, 995, 996]);
  });
});

describe('pickFreeId', () => {
  it('returns the lowest id neither a VM nor the system uses, or undefined when the range is full', () => {
    const r = { first: 5000, count: 4 };
    expect(pickFreeId(r, new Set(), new Set())).toBe(5000);
    expect(pickFreeId(r, new Set([5000]), new Set([5001]))).toBe(5002);
    expect(pickFreeId(r, new Set([5000, 5002]), new Set([5001, 5003]))).toBeUndefined();
  });
});

describe('checkIdRange', () => {
  it('accepts the default and refuses ranges into system ids or past 2^31-1', () => {
    expect(() => checkIdRange(DEFAULT_VM_ID_RANGE)).not.toThrow();
    expect(() => checkIdRange({ first: 0, count: 10 })).toThrow(/start at 1000/);
    expect(() => checkIdRange({ first: 0x7fff_fff0, count: 100 })).toThrow(/ends above 2147483647/);
    expect(() => checkIdRange({ first: 5000, count: 0 })).toThrow(/hold ids/);
  });
});

describe('VmIds', () => {
  let dir = '';
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-ids-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const ids = (systemText = '') => {
    return writeFile(join(dir, 'passwd'), systemText).then(
      () =>
        new VmIds({
          file: join(dir, 'state', 'vm-ids.json'),
          claimsDir: join(dir, 'claims'),
          range: { first: 7000, count: 3 },
          systemFiles: [join(dir, 'passwd')],
        }),
    );
  };

  it('allocates distinct ids, skips ids the system uses, records them atomically and keeps them', async () => {
    const v = await ids('svc:x:7000:7000::/:/bin/false\n');
    const got = await Promise.all([v.allocate('a'), v.allocate('b')]);
    expect(got).toEqual([7001, 7002]);
    expect(await v.allocate('a')).toBe(7001); // recorded: the same id again
    const file = join(dir, 'state', 'vm-ids.json');
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual({ vms: { a: 7001, b: 7002 } });
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    // A new process (a restarted agent) reads the same allocation.
    const again = await ids('svc:x:7000:7000::/:/bin/false\n');
    expect(await again.get('b')).toBe(7002);
  });

  it('says the range is full, and frees an id for reuse', async () => {
    const v = await ids();
    for (const n of ['a', 'b', 'c']) await v.allocate(n);
    await expect(v.allocate('d')).rejects.toThrow(
      /no free VM id left in 7000\.\.7002 \(3 taken on this machine\): widen the range/,
    );
    await v.free('b');
    expect(await v.allocate('d')).toBe(7001);
    await v.free('missing');
    expect(await v.all()).toEqual({ a: 7000, c: 7002, d: 7001 });
  });

  it('serves calls that arrive together as one group: distinct ids, one record, only the overflow refused', async () => {
    const v = await ids();
    const got = await Promise.allSettled(['a', 'b', 'c', 'd', 'a'].map((n) => v.allocate(n)));
    expect(got.map((r) => (r.status === 'fulfilled' ? r.value : 'refused'))).toEqual([
      7000,
      7001,
      7002,
      'refused',
      7000,
    ]);
    expect(await v.all()).toEqual({ a: 7000, b: 7001, c: 7002 });
    expect(await readdir(join(dir, 'claims'))).toHaveLength(3);
  });

  it('never hands out an id another agent on this machine holds, and drops only its own claims', async () => {
    const other = new VmIds({
      file: join(dir, 'other', 'vm-ids.json'),
      claimsDir: join(dir, 'claims'),
      range: { first: 7000, count: 3 },
      systemFiles: [],
    });
    const v = await ids();
    expect(await other.allocate('x')).toBe(7000);
    expect(await v.allocate('a')).toBe(7001);
    expect(await other.allocate('y')).toBe(7002);
    await expect(v.allocate('b')).rejects.toThrow(/no free VM id left/);
    expect((await readFile(join(dir, 'claims', '7001'), 'utf8')).endsWith('\ta\n')).toBe(true);
    await other.free('x');
    expect(existsSync(join(dir, 'claims', '7000'))).toBe(false);
    expect(existsSync(join(dir, 'claims', '7001'))).toBe(true);
    expect(await v.allocate('b')).toBe(7000);
  });

  it('takes over a claim whose agent no longer records the id (its state dir was removed)', async () => {
    const gone = new VmIds({
      file: join(dir, 'gone', 'vm-ids.json'),
      claimsDir: join(dir, 'claims'),
      range: { first: 7000, count: 1 },
      systemFiles: [],
    });
    expect(await gone.allocate('x')).toBe(7000);
    await rm(join(dir, 'gone'), { recursive: true });
    const v = await ids();
    expect(await v.allocate('a')).toBe(7000);
    expect((await readFile(join(dir, 'claims', '7000'), 'utf8')).endsWith('\ta\n')).toBe(true);
  });
});
