import { describe, expect, it } from 'vitest';
import { formatArgv } from '../../../exec/runner.js';
import type { DeviceRequest } from '../../../shared/devices.js';
import type { VmConfig } from '../../../shared/model.js';
import { buildQemuArgv, vmPaths } from './cmdline.js';
import { PASSTHROUGH_CHASSIS_BASE, passthroughArgs } from './passthrough-args.js';

/** One `-device ...` per line. */
function lines(args: string[]): string {
  const out: string[] = [];
  for (let i = 0; i < args.length; i += 2) out.push(`${args[i]} ${args[i + 1]}`);
  return `${out.join('\n')}\n`;
}

describe('passthrough QEMU arguments (golden)', () => {
  it('a data-center GPU alone: its own hot-pluggable root port', async () => {
    await expect(lines(passthroughArgs([{ pci: '0000:18:00.0' }]))).toMatchFileSnapshot(
      './__golden__/passthrough-gpu.txt',
    );
  });

  it('a GPU with its audio function, another GPU, a VF and USB devices', async () => {
    const devices: DeviceRequest[] = [
      { pci: '0000:01:00.1' },
      { usb: '046d:c52b' },
      { pci: '0000:01:00.0' },
      { pci: '0000:3b:02.2' },
      { usb: '1050:0407' },
    ];
    await expect(lines(passthroughArgs(devices))).toMatchFileSnapshot('./__golden__/passthrough-mixed.txt');
  });
});

describe('passthroughArgs', () => {
  it('puts the functions of one slot in one port, function 0 multifunction, ids after the request order', () => {
    const args = passthroughArgs([{ pci: '0000:01:00.1' }, { pci: '0000:01:00.0' }]);
    expect(args).toEqual([
      '-device',
      `pcie-root-port,id=ptport0,bus=pcie.0,chassis=${PASSTHROUGH_CHASSIS_BASE}`,
      '-device',
      'vfio-pci,host=0000:01:00.0,id=pt1,bus=ptport0,addr=0x0.0,multifunction=on',
      '-device',
      'vfio-pci,host=0000:01:00.1,id=pt0,bus=ptport0,addr=0x0.1',
    ]);
  });

  it('numbers the functions of a slot from 0 when its function 0 stays on the host', () => {
    expect(passthroughArgs([{ pci: '0000:3b:02.3' }])).toContain(
      'vfio-pci,host=0000:3b:02.3,id=pt0,bus=ptport0,addr=0x0.0',
    );
  });

  it('adds nothing without devices, and no USB controller without USB devices', () => {
    expect(passthroughArgs([])).toEqual([]);
    expect(passthroughArgs([{ pci: '0000:18:00.0' }]).join(' ')).not.toContain('qemu-xhci');
  });

  it('refuses a value that could smuggle a QEMU option', () => {
    expect(() => passthroughArgs([{ pci: '0000:18:00.0,romfile=/etc/shadow' }])).toThrow(/bad passthrough/);
    expect(() => passthroughArgs([{ usb: '046d:c52b,hostdevice=/dev/sda' }])).toThrow(/bad passthrough/);
  });

  it('chassis numbers stay clear of NIC and disk ports and within 8 bits', () => {
    expect(PASSTHROUGH_CHASSIS_BASE).toBeGreaterThan(8 + 16);
    expect(PASSTHROUGH_CHASSIS_BASE + 8).toBeLessThanOrEqual(256);
  });

  it('is part of the VM command line', () => {
    const cfg: VmConfig = {
      name: 'gpu1',
      cpus: 2,
      memoryMiB: 1024,
      image: { kind: 'test-guest' },
      disks: [],
      devices: [{ pci: '0000:18:00.0' }, { usb: '046d:c52b' }],
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
    const argv = formatArgv(
      buildQemuArgv({
        config: cfg,
        accel: 'kvm',
        paths: vmPaths('/var/lib/vmlink/agent', 'gpu1'),
        imagesDir: '/var/lib/vmlink/images',
        qemuBinary: '/usr/bin/qemu-system-x86_64',
      }),
    );
    expect(argv).toContain('-device vfio-pci,host=0000:18:00.0,id=pt0,bus=ptport0,addr=0x0.0');
    expect(argv).toContain('-device usb-host,id=pt1,bus=ptxhci.0,vendorid=0x046d,productid=0xc52b');
  });
});
