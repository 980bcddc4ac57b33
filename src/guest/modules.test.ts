import { describe, expect, it } from 'vitest';
import { moduleLoadOrder, moduleName, parseModulesBuiltin, parseModulesDep } from './modules.js';

// Lines as depmod writes them for Debian's 6.1 kernel.
const DEP = `kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/acpi/button.ko:
`;

describe('kernel module ordering', () => {
  it('normalises names', () => {
    expect(moduleName('kernel/drivers/char/hw_random/virtio-rng.ko')).toBe('virtio_rng');
    expect(moduleName('a/b/foo.ko.xz')).toBe('foo');
  });

  it('loads dependencies first, each once', () => {
    const order = moduleLoadOrder(parseModulesDep(DEP), ['virtio_net', 'virtio_pci', 'virtio-rng']);
    expect(order.map(moduleName)).toEqual([
      'failover',
      'net_failover',
      'virtio',
      'virtio_ring',
      'virtio_net',
      'virtio_pci_legacy_dev',
      'virtio_pci_modern_dev',
      'virtio_pci',
      'virtio_rng',
    ]);
    const pos = (m: string) => order.map(moduleName).indexOf(m);
    for (const [mod, deps] of parseModulesDep(DEP)) {
      for (const d of deps.deps) if (pos(mod) >= 0) expect(pos(d)).toBeLessThan(pos(mod));
    }
  });

  it('skips built-in modules and refuses unknown ones', () => {
    const builtin = parseModulesBuiltin('kernel/net/packet/af_packet.ko\n');
    expect(moduleLoadOrder(parseModulesDep(DEP), ['af_packet', 'button'], builtin)).toEqual([
      'kernel/drivers/acpi/button.ko',
    ]);
    expect(() => moduleLoadOrder(parseModulesDep(DEP), ['nope'])).toThrow(/nope not found/);
  });

  it('detects cycles', () => {
    const dep = parseModulesDep('a.ko: b.ko\nb.ko: a.ko\n');
    expect(() => moduleLoadOrder(dep, ['a'])).toThrow(/cycle: a -> b -> a/);
  });
});
