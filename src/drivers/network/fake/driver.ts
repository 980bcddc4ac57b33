// A network backend that keeps networks and ports in memory (no bridges, taps, nftables or dnsmasq): the simulated
// fleet's hosts (src/fleet-sim/) drive it through the real agent. It keeps the NetworkDriver contract as the
// contract suite (../conformance-contract.ts) states it, the linux backend's refusals included (a port needs its
// network's bridge; a network's bridge belongs to one network).
import { ConflictError, NotFoundError } from '../../../shared/errors.js';
import type { HostCapabilities, NetworkConfig, ObservedNetwork } from '../../../shared/model.js';
import type {
  AppliedNetworkConfig,
  ItemResult,
  NetworkDriver,
  NetworkItem,
  OpContext,
  PortConfig,
} from '../types.js';

/** Modes the fake realises: all of them (no kernel to lack a feature). */
const MODES: NetworkConfig['mode'][] = ['nat', 'bridge', 'isolated', 'vlan', 'vxlan'];

/** `NetworkDriver` over in-memory tables. */
export class FakeNetworkDriver implements NetworkDriver {
  private readonly networks = new Map<string, AppliedNetworkConfig>();
  private readonly ports = new Map<string, PortConfig>();

  async ensureNetwork(cfg: NetworkConfig, configHash: string, ctx?: OpContext): Promise<void> {
    ctx?.signal?.throwIfAborted();
    for (const [name, n] of this.networks)
      if (name !== cfg.name && n.config.bridge === cfg.bridge)
        throw new ConflictError(
          `bridge ${cfg.bridge} already belongs to network ${name}`,
          `network/${cfg.name}`,
        );
    this.networks.set(cfg.name, { config: structuredClone(cfg), configHash });
  }

  async ensureNetworks(items: readonly NetworkItem[], ctx?: OpContext): Promise<ItemResult[]> {
    const out: ItemResult[] = [];
    for (const it of items) {
      try {
        await this.ensureNetwork(it.cfg, it.configHash, ctx);
        out.push({ ok: true });
      } catch (error) {
        out.push({ ok: false, error });
        break;
      }
    }
    return out;
  }

  async deleteNetwork(name: string, ctx?: OpContext): Promise<void> {
    ctx?.signal?.throwIfAborted();
    const n = this.networks.get(name);
    if (!n) return;
    // Its bridge goes, and with it the ports' attachment (the taps stay, as the kernel leaves them).
    this.networks.delete(name);
  }

  async listNetworks(): Promise<ObservedNetwork[]> {
    return [...this.networks.values()].map((n) => ({
      name: n.config.name,
      bridge: n.config.bridge,
      configHash: n.configHash,
      problems: [],
      config: structuredClone(n.config),
    }));
  }

  async appliedConfig(name: string): Promise<AppliedNetworkConfig | undefined> {
    const n = this.networks.get(name);
    return n ? structuredClone(n) : undefined;
  }

  async ensurePort(port: PortConfig, ctx?: OpContext): Promise<void> {
    ctx?.signal?.throwIfAborted();
    if (!this.bridgeExists(port.bridge)) throw new NotFoundError('bridge', port.bridge);
    this.ports.set(port.tap, structuredClone(port));
  }

  async ensurePorts(ports: readonly PortConfig[], ctx?: OpContext): Promise<void> {
    // All or nothing: every bridge is checked before any port is made.
    const missing = ports.find((p) => !this.bridgeExists(p.bridge));
    if (missing) throw new NotFoundError('bridge', missing.bridge);
    for (const p of ports) await this.ensurePort(p, ctx);
  }

  async deletePort(tap: string, ctx?: OpContext): Promise<void> {
    ctx?.signal?.throwIfAborted();
    this.ports.delete(tap);
  }

  async deletePorts(taps: readonly string[], ctx?: OpContext): Promise<void> {
    for (const t of taps) await this.deletePort(t, ctx);
  }

  async portAttached(tap: string, bridge: string): Promise<boolean> {
    const p = this.ports.get(tap);
    return p !== undefined && p.bridge === bridge && this.bridgeExists(bridge);
  }

  async portMasters(): Promise<Map<string, string | undefined>> {
    return new Map(
      [...this.ports.values()].map((p) => [p.tap, this.bridgeExists(p.bridge) ? p.bridge : undefined]),
    );
  }

  async capabilities(): Promise<HostCapabilities['network']> {
    return {
      vlan: true,
      vxlan: true,
      macvlan: true,
      bond: true,
      geneve: true,
      bridgeVlanFiltering: true,
      nftables: true,
      tap: true,
    };
  }

  supportedModes(): NetworkConfig['mode'][] {
    return [...MODES];
  }

  /** Whether tap `tap` exists (the fake hypervisor's check before it creates a VM on it). */
  hasPort(tap: string): boolean {
    return this.ports.has(tap);
  }

  private bridgeExists(bridge: string): boolean {
    for (const n of this.networks.values()) if (n.config.bridge === bridge) return true;
    return false;
  }
}
