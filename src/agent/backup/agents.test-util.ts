// Test harness shared by the agent and controller backup tests that run real agents in-process: backup services on
// Agent servers over real mutual TLS on 127.0.0.1 (certificates of one CA), and a hypervisor whose one stopped VM
// `web` has a qcow2 root disk read through a real qemu-nbd, with persistent bitmaps as capture's stopped-VM view.
import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { FastifyInstance } from 'fastify';
import type { HostCredentials } from '../../controller/pki/service.js';
import { DirChunkStore } from '../../drivers/backup/chunk-store.js';
import { connectNbd } from '../../drivers/backup/nbd-client.js';
import { type QemuNbdServer, startQemuNbd } from '../../drivers/backup/qemu-nbd.js';
import type { BackupView, HypervisorDriver, RestoreView } from '../../drivers/hypervisor/types.js';
import { RecordingRunner, SystemRunner } from '../../exec/runner.js';
import { BackupKeySet } from '../../shared/backup-crypto.js';
import { applyRetention } from '../../shared/backup-retention.js';
import { listen } from '../../shared/http/server.js';
import { readCredentials, type TlsCredentials } from '../../shared/tls.js';
import { Agent } from '../agent.js';
import { createAgentServer } from '../server.js';
import { BackupService } from './service.js';
import { BackupStores } from './stores.js';

export const run = promisify(execFile);

/** One in-process agent with its backup service: its TLS URL and its root-socket URL. */
export interface BackupNode {
  name: string;
  url: string;
  local: string;
  creds: TlsCredentials;
  svc: BackupService;
}

export class BackupAgentsHarness {
  readonly runner = new SystemRunner();
  private readonly servers: QemuNbdServer[] = [];
  private readonly apps: FastifyInstance[] = [];
  private n = 0;

  constructor(
    /** A scratch directory the harness owns (agents' state, pools, NBD sockets). */
    readonly dir: string,
    readonly diskBytes: number,
  ) {}

  /** The VM's root disk. */
  get image(): string {
    return join(this.dir, 'web-root.qcow2');
  }

  /** Runs qemu-io commands on `file` (default: the VM's root disk). */
  qemuIo(cmds: string[], file = this.image) {
    return run('qemu-io', ['-f', 'qcow2', ...cmds.flatMap((c) => ['-c', c]), file]);
  }

  /** qemu-nbd serving `image`, stopped by `close` if the test does not. */
  async serve(image: string, readOnly: boolean, bitmap?: string): Promise<QemuNbdServer> {
    const s = await startQemuNbd(this.runner, {
      image,
      format: 'qcow2',
      readOnly,
      ...(bitmap ? { bitmap } : {}),
      socketDir: join(this.dir, 'nbd'),
      exportName: `export${++this.n}`,
    });
    this.servers.push(s);
    return s;
  }

  private async unserve(s: QemuNbdServer): Promise<void> {
    await s.stop();
    this.servers.splice(this.servers.indexOf(s), 1);
  }

  /** The persistent bitmaps of the VM's disk. */
  private async bitmaps(): Promise<string[]> {
    const { stdout } = await run('qemu-img', ['info', '--output=json', '-U', this.image]);
    const info = JSON.parse(stdout) as {
      'format-specific'?: { data?: { bitmaps?: Array<{ name: string }> } };
    };
    return (info['format-specific']?.data?.bitmaps ?? []).map((b) => b.name);
  }

  /**
   * The hypervisor of the one stopped VM `web`: backup views read its disk with the base's bitmap exported and add
   * the next bitmap at commit; restore views write into `restoreImage` (when given).
   */
  hypervisor(restoreImage?: string): HypervisorDriver {
    const hv: Partial<HypervisorDriver> = {
      config: async (name: string) =>
        name === 'web' ? ({ name: 'web', cpus: 1, memoryMiB: 256, disks: [], nics: [] } as never) : undefined,
      backupOpen: async (_name, opts): Promise<BackupView> => {
        const base =
          opts.bitmaps.base && (await this.bitmaps()).includes(opts.bitmaps.base)
            ? opts.bitmaps.base
            : undefined;
        const s = await this.serve(this.image, true, base);
        return {
          consistency: 'stopped',
          at: new Date(),
          disks: [
            {
              name: 'root',
              sizeBytes: this.diskBytes,
              socket: s.socket,
              exportName: s.exportName,
              changed:
                base && !opts.full
                  ? { context: `qemu:dirty-bitmap:${base}` }
                  : { fullReason: base ? 'forced' : 'first' },
            },
          ],
          commit: async () => {
            await this.unserve(s);
            if (base) await run('qemu-img', ['bitmap', '--remove', this.image, base]);
            await run('qemu-img', ['bitmap', '--add', this.image, opts.bitmaps.next]);
          },
          abort: () => this.unserve(s),
        };
      },
    };
    if (restoreImage)
      hv.restoreOpen = async (): Promise<RestoreView> => {
        const s = await this.serve(restoreImage, false);
        return {
          disks: [{ name: 'root', sizeBytes: this.diskBytes, socket: s.socket, exportName: s.exportName }],
          close: () => this.unserve(s),
        };
      };
    return hv as HypervisorDriver;
  }

  /** Starts agent `name` (certificate from `pki`) with its backup service, on TLS and on a root socket. */
  async node(pki: HostCredentials, name: string, hypervisor: HypervisorDriver): Promise<BackupNode> {
    const stateDir = join(this.dir, name);
    await mkdir(stateDir, { recursive: true });
    await pki.ensureLabHost(name, join(stateDir, 'tls'));
    const creds = readCredentials(join(stateDir, 'tls'))!;
    const svc = new BackupService({
      host: name,
      stateDir,
      runner: this.runner,
      hypervisor,
      stores: this.stores(name),
      tls: () => creds,
      connect: connectNbd,
      keys: (k) => BackupKeySet.fromBase64(k.value, k.name),
      retention: applyRetention,
    });
    await svc.start();
    const agent = new Agent({
      host: name,
      runner: new RecordingRunner(),
      networks: {},
      hypervisor,
      stateDir,
    });
    const tcp = await createAgentServer(agent, { tls: creds, prerequisites: async () => [], backup: svc });
    await listen(tcp, 'https://127.0.0.1:0');
    const local = await createAgentServer(agent, { prerequisites: async () => [], backup: svc });
    const sock = join(stateDir, 'agent.sock');
    await listen(local, `unix://${sock}`);
    this.apps.push(tcp, local);
    const port = (tcp.server.address() as { port: number }).port;
    return { name, url: `https://127.0.0.1:${port}`, creds, svc, local: `unix://${sock}` };
  }

  /** The backup stores of agent `name` (a second instance over the same state: what a restarted agent serves). */
  stores(name: string): BackupStores {
    return new BackupStores({
      host: name,
      stateDir: join(this.dir, name),
      poolRoots: [join(this.dir, 'pools')],
      open: (c) => DirChunkStore.open(c),
    });
  }

  /** Stops every server and qemu-nbd (the caller removes `dir`). */
  async close(): Promise<void> {
    for (const a of this.apps) await a.close().catch(() => {});
    for (const s of [...this.servers]) await s.stop().catch(() => {});
  }
}
