import { describe, expect, it } from 'vitest';
import { formatArgv } from '../../../exec/runner.js';
import { UnsupportedError } from '../../../shared/errors.js';
import type { ConfidentialKind, VmConfig } from '../../../shared/model.js';
import { buildQemuArgv, vmPaths } from './cmdline.js';
import { diskSlotIds } from './disk-slots.js';
import { diskAttachCommands } from './disk-sources.js';

const base: VmConfig = {
  name: 'cvm1',
  cpus: 2,
  memoryMiB: 1024,
  image: { kind: 'test-guest' },
  disks: [],
  nics: [
    {
      network: 'lan',
      backend: 'linux',
      bridge: 'vlb-00000000',
      tap: 'vlt-1234abc0',
      mac: '52:54:00:00:00:01',
      mtu: 1500,
    },
  ],
  state: 'running',
};
const paths = vmPaths('/var/lib/vmlink/agent', 'cvm1');
const launch = { firmware: '/usr/share/ovmf/OVMF.amdsev.fd', cbitpos: 51, reducedPhysBits: 1 };

function argv(cfg: VmConfig, accel: 'kvm' | 'tcg' = 'kvm', confidential: typeof launch | null = launch) {
  return buildQemuArgv({
    config: cfg,
    accel,
    paths,
    imagesDir: '/var/lib/vmlink/images',
    qemuBinary: '/usr/bin/qemu-system-x86_64',
    ...(confidential ? { confidential } : {}),
  });
}

/** The options that differ from an ordinary VM's command line, one per line. */
function extra(cfg: VmConfig, kind: ConfidentialKind, fw = launch): string {
  const plain = argv({ ...cfg, confidential: undefined }, 'kvm', null);
  const conf = argv({ ...cfg, confidential: kind }, 'kvm', fw);
  const machine = conf[conf.indexOf('-machine') + 1];
  const added = conf.slice(
    plain.indexOf('-machine') + 2,
    conf.length - (plain.length - plain.indexOf('-machine') - 2),
  );
  return `-machine ${machine}\n${formatArgv(added)}\n`;
}

describe('confidential VM command lines (golden)', () => {
  it('sev: sev-guest with the host C-bit, confidential-guest-support, OVMF', async () => {
    await expect(extra(base, 'sev')).toMatchFileSnapshot('./__golden__/confidential-sev.txt');
  });
  it('sev-snp: sev-snp-guest', async () => {
    await expect(extra(base, 'sev-snp')).toMatchFileSnapshot('./__golden__/confidential-sev-snp.txt');
  });
  it('tdx: tdx-guest, split irqchip', async () => {
    const fw = { firmware: '/usr/share/ovmf/OVMF.inteltdx.fd' } as typeof launch;
    await expect(extra(base, 'tdx', fw)).toMatchFileSnapshot('./__golden__/confidential-tdx.txt');
  });
  it('refuses TCG, a missing firmware and an unknown C-bit', () => {
    expect(() => argv({ ...base, confidential: 'sev' }, 'tcg')).toThrow(/needs KVM/);
    expect(() => argv({ ...base, confidential: 'sev' }, 'kvm', null)).toThrow(UnsupportedError);
    expect(() =>
      argv({ ...base, confidential: 'sev-snp' }, 'kvm', { firmware: '/f.fd' } as typeof launch),
    ).toThrow(/C-bit/);
  });
  it('an ordinary VM has no confidential options', () => {
    expect(argv(base, 'kvm', null).join(' ')).not.toMatch(/confidential-guest-support|sev|tdx/);
  });
});

describe('encrypted disks', () => {
  const cfg: VmConfig = {
    ...base,
    disks: [
      { name: 'plain', sizeMiB: 64 },
      { name: 'vault', sizeMiB: 64, encryption: { secret: 'vault-key' } },
    ],
  };
  it('start paused with a root port for the encrypted disk and no key or blockdev of it on the command line', async () => {
    const a = argv(cfg, 'tcg', null);
    expect(a).toContain('-S');
    expect(a).toContain('pcie-root-port,id=diskport1,bus=pcie.0,chassis=10,addr=0x18.1');
    expect(a.join(' ')).toContain('disk-plain.qcow2');
    expect(a.join(' ')).not.toMatch(/disk-vault|secret|encrypt/);
    expect(argv(base, 'tcg', null)).not.toContain('-S');
  });
  it('QMP attaches the key as a secret object, then the LUKS qcow2 node, then the device into its port', async () => {
    const c = diskAttachCommands({
      disk: cfg.disks[1]!,
      origin: { kind: 'path', path: paths.disk('vault'), format: 'qcow2' },
      ids: diskSlotIds(1),
      keyBase64: 'S0VZ',
    });
    const cmds = [...c.secrets, c.protocol, ...c.rest];
    await expect(`${JSON.stringify(cmds, null, 2)}\n`).toMatchFileSnapshot(
      './__golden__/encrypted-disk-qmp.json',
    );
  });
});
