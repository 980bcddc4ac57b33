// One kept QMP connection per VM: QEMU serves one QMP client at a time, so the driver shares it and reconnects
// after it closes.
import { QMP_TIMEOUT_MS } from '../../../shared/limits.js';
import { QmpClient } from './qmp.js';

/** The driver's QMP connections, by VM name. */
export class QmpPool {
  private readonly clients = new Map<string, Promise<QmpClient>>();

  constructor(private readonly socketOf: (name: string) => string) {}

  /**
   * The VM's connection, opened (within `connectTimeoutMs`) if there is none. Its commands' limit is always
   * QMP_TIMEOUT_MS: whoever happened to open the shared connection must not set it for everyone after.
   */
  get(name: string, connectTimeoutMs = QMP_TIMEOUT_MS): Promise<QmpClient> {
    let p = this.clients.get(name);
    if (!p) {
      p = QmpClient.connect(this.socketOf(name), {
        connectTimeoutMs,
        timeoutMs: QMP_TIMEOUT_MS,
        subject: `vm/${name}`,
      });
      this.clients.set(name, p);
      const mine = p;
      const forget = () => {
        if (this.clients.get(name) === mine) this.clients.delete(name);
      };
      p.then((c) => void c.closed().then(forget), forget);
    }
    return p;
  }

  /** Closes and forgets the VM's connection (QEMU keeps running). */
  async drop(name: string): Promise<void> {
    const p = this.clients.get(name);
    this.clients.delete(name);
    await p?.then((c) => c.close()).catch(() => {});
  }

  /** Closes every connection. */
  closeAll(): void {
    for (const p of this.clients.values()) p.then((c) => c.close()).catch(() => {});
    this.clients.clear();
  }
}
