import { describe, expect, it } from 'vitest';
import { BadResponseError } from '../../shared/errors.js';
import { parseTgtTargets, TGT_SHOW_LIST_MAX } from './tgt-show.js';

// Captured from tgtd 1.0.85 (`tgtadm --op show --mode target`) with QEMU's initiator logged in to target 1.
const SHOWN = `Target 1: iqn.2026-12.io.vmlink:san.p.v1
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
        I_T nexus: 2
            Initiator: iqn.2008-11.org.linux-kvm alias: none
            Connection: 0
                IP Address: 127.0.0.1
    LUN information:
        LUN: 0
            Type: controller
            SCSI ID: IET     00010000
            SCSI SN: beaf10
            Size: 0 MB, Block size: 1
            Backing store type: null
            Backing store path: None
            Backing store flags: 
        LUN: 1
            Type: disk
            SCSI ID: IET     00010001
            Size: 67 MB, Block size: 512
            Backing store type: rdwr
            Backing store path: /tmp/pool/v1.img
            Backing store flags: 
    Account information:
        u1
        mutual (outgoing)
    ACL information:
        10.0.0.0/24
        127.0.0.1
Target 2: iqn.2026-12.io.vmlink:san.p.v2
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
    LUN information:
        LUN: 0
            Type: controller
            Backing store type: null
            Backing store path: None
    Account information:
    ACL information:
        ALL
`;

describe('parseTgtTargets', () => {
  it('reads targets with their sessions, LUNs, accounts and ACLs', () => {
    const [a, b] = parseTgtTargets(SHOWN);
    expect(a).toEqual({
      tid: 1,
      name: 'iqn.2026-12.io.vmlink:san.p.v1',
      state: 'ready',
      sessions: [
        {
          nexus: 2,
          initiator: 'iqn.2008-11.org.linux-kvm',
          addresses: ['127.0.0.1'],
          connections: [{ cid: 0, address: '127.0.0.1' }],
        },
      ],
      luns: [
        { lun: 0, type: 'controller', backingStoreType: 'null' },
        { lun: 1, type: 'disk', backingStoreType: 'rdwr', backingStorePath: '/tmp/pool/v1.img' },
      ],
      accounts: ['u1'],
      outgoingAccounts: ['mutual'],
      acls: ['10.0.0.0/24', '127.0.0.1'],
    });
    expect(b).toMatchObject({ tid: 2, sessions: [], accounts: [], acls: ['ALL'] });
    expect(b!.luns).toHaveLength(1);
  });

  it('reads an empty list as no targets', () => {
    expect(parseTgtTargets('')).toEqual([]);
  });

  it('refuses text it cannot place', () => {
    expect(() => parseTgtTargets('    LUN information:\n')).toThrow(BadResponseError);
    expect(() => parseTgtTargets('Something else\n')).toThrow(BadResponseError);
  });

  it('refuses a target listing more entries than the cap', () => {
    const acls = Array.from({ length: TGT_SHOW_LIST_MAX + 1 }, (_, i) => `        10.0.${i >> 8}.${i & 255}`);
    const text = `Target 1: iqn.2026-12.io.vmlink:a.b.c\n    ACL information:\n${acls.join('\n')}\n`;
    expect(() => parseTgtTargets(text)).toThrow(/more than 4096 ACLs/);
  });
});
