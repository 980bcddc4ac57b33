// `lab up` / `lab down`: the one place the controller drives host commands itself (the lab's namespaces).

import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Runner } from '../exec/runner.js';
import { labControllerSockets } from '../lab/cluster.js';
import { labEtcdDirs, labEtcdEndpoints, labEtcdPeerCaDir, labEtcdSocket } from '../lab/etcd.js';
import { Lab, type LabOptions } from '../lab/lab.js';
import { labNamespaces } from '../lab/names.js';
import { labPoolDirs, removeLabPoolDirs } from '../lab/storage.js';
import { InvalidSpecError, InvalidStateError, UnavailableError } from '../shared/errors.js';
import { etcdClient } from '../shared/etcd.js';
import { LAB_PATH_CHECK_TIMEOUT_MS } from '../shared/limits.js';
import { log } from '../shared/log.js';
import { labAgentSocket, labHostTlsDir } from '../shared/paths.js';
import { inNetns } from '../shared/process.js';
import { readCredentials, writeCredentials } from '../shared/tls.js';
import type { LabSpec, Spec } from '../spec/schema.js';
import { AgentClient } from './agents.js';
import { ensureEtcdAuth } from './cluster/etcd-auth.js';
import { Pki } from './pki/pki.js';
import type { HostCredentials } from './pki/service.js';
import type { SpecStore } from './spec-store.js';
import type { Store } from './store/types.js';
import type { TaskContext } from './tasks.js';

/** Builds and removes a spec's lab. */
export class LabControl {
  constructor(
    private readonly store: Store,
    private readonly specs: SpecStore,
    private readonly runner: Runner,
    private readonly credentials: HostCredentials | undefined,
    /** The key secrets are sealed with, for the lab's cluster controllers (default: `secrets.key` beside the CA). */
    private readonly secretsKeyFile?: string,
  ) {}

  /**
   * Builds the spec's lab (namespaces, LAN, router, agents); idempotent. Each lab host gets a certificate bound to
   * its name (kept while current), and the controller's path to every agent is checked over mutual TLS.
   */
  async up(
    text: string,
    source: string,
    ctx: TaskContext,
  ): Promise<{ namespaces: string[]; etcd?: string[]; controllers?: string[] }> {
    const spec = this.specs.parser.parse(text, source);
    const labSpec = requireLab(spec, source, 'lab up');
    await refuseInsideLab(labSpec, 'lab up');
    const creds = this.credentials;
    if (!creds)
      throw new InvalidStateError(
        "lab up needs the controller's CA (this controller was started without one)",
      );
    const renewed: string[] = [];
    for (const h of agentMachines(labSpec))
      if (await creds.ensureLabHost(h.name, labHostTlsDir(labSpec.name, h.name))) renewed.push(h.name);
    if (renewed.length) ctx.progress?.(`issued certificates to ${renewed.join(', ')}`);
    const renewedEtcd = await ensureEtcdCredentials(creds, labSpec);
    if (renewedEtcd.length) ctx.progress?.(`issued etcd member certificates to ${renewedEtcd.join(', ')}`);
    const heartbeatSeconds = spec.cluster?.heartbeatSeconds ?? 5;
    const lab = new Lab(this.runner, labSpec, {
      ...labAgentOptions(spec, labSpec),
      restartAgents: renewed,
      restartEtcd: renewedEtcd,
      etcdReady: async () => {
        ctx.progress?.(`setting up etcd users and roles (${labSpec.hosts.map((h) => h.name).join(', ')})`);
        await bootstrapEtcdAuth(labSpec, creds);
      },
      ...(labSpec.controllers.length
        ? {
            controllers: {
              pkiDir: creds.pki.dir,
              secretsKeyFile: this.clusterSecretsKey(creds),
              heartbeatSeconds,
            },
          }
        : {}),
      reachable: (host) =>
        new AgentClient(host, `https+unix://${labAgentSocket(labSpec.name, host)}`)
          .health(LAB_PATH_CHECK_TIMEOUT_MS)
          .then(
            () => true,
            () => false,
          ),
    });
    await lab.up(ctx);
    await this.store.appendEvent('lab.up', `${labSpec.name} from ${source}`);
    return {
      namespaces: await lab.existingNamespaces(),
      ...(labSpec.etcd.length ? { etcd: labEtcdEndpoints(labSpec) } : {}),
      ...(labSpec.controllers.length ? { controllers: labControllerSockets(labSpec) } : {}),
    };
  }

  /** The spec's lab with its agents' arguments as `up` gives them (drills start a killed host's agent with it). */
  labOf(spec: Spec): Lab {
    const labSpec = requireLab(spec, 'spec', 'drill');
    return new Lab(this.runner, labSpec, labAgentOptions(spec, labSpec));
  }

  /** The secrets key the lab's cluster controllers share with this controller; it must exist. */
  private clusterSecretsKey(creds: HostCredentials): string {
    const file = this.secretsKeyFile ?? join(dirname(creds.pki.dir), 'secrets.key');
    if (!existsSync(file))
      throw new InvalidStateError(
        `the lab's cluster controllers need this controller's secrets key, which is not at ${file}`,
        'lab',
      );
    return file;
  }

  /** Removes the spec's lab and everything in it (VMs, dnsmasq, agents, namespaces, state files). */
  async down(text: string, source: string, ctx: TaskContext): Promise<{ removed: string[] }> {
    const spec = this.specs.parser.parse(text, source);
    const labSpec = requireLab(spec, source, 'lab down');
    await refuseInsideLab(labSpec, 'lab down');
    const lab = new Lab(this.runner, labSpec);
    const removed = await lab.existingNamespaces();
    await lab.down(ctx);
    // The lab's machines share this computer's disk: their pools' files go with them (a pool's own `path` stays).
    const pools = labPoolDirs(spec);
    for (const dir of pools) ctx.progress?.(`removing pool directory ${dir}`);
    await removeLabPoolDirs(pools);
    // The lab's machines are gone: their certificates must not open any door again.
    const revoked = agentMachines(labSpec).filter((h) =>
      this.credentials?.revoke(h.name, `lab ${labSpec.name} went down`),
    );
    if (revoked.length)
      await this.store.appendEvent('host.revoked', `${revoked.map((h) => h.name).join(', ')}: lab down`);
    // The applied spec lived in this lab: nothing of it is left.
    const cur = await this.specs.current().catch(() => undefined);
    if (cur?.spec.lab?.name === labSpec.name) await this.specs.clear();
    await this.store.appendEvent('lab.down', labSpec.name);
    return { removed };
  }
}

/** The lab machines that run an agent with a certificate of their own: hosts and storage machines. */
const agentMachines = (lab: LabSpec) => [...lab.hosts, ...lab.storage];

/** What a lab's host agents are started with: their uplinks, and their etcd when the spec is a cluster on etcd. */
function labAgentOptions(spec: Spec, labSpec: LabSpec): LabOptions {
  const clusterOnEtcd = spec.cluster?.store === 'etcd' && labSpec.etcd.length > 0;
  return {
    uplinks: Object.fromEntries(spec.hosts.map((h) => [h.name, h.uplink])),
    ...(clusterOnEtcd ? { joinEtcd: { heartbeatSeconds: spec.cluster?.heartbeatSeconds ?? 5 } } : {}),
  };
}

function requireLab(spec: Spec, source: string, command: string): LabSpec {
  if (!spec.lab)
    throw new InvalidSpecError(
      [{ path: 'lab', message: `is required for \`${command}\`: the spec describes no lab` }],
      source,
    );
  return spec.lab;
}

/**
 * Refuses `lab up`/`lab down` on a controller that runs inside the lab itself (one of its cluster controllers): it
 * would stop or restart itself halfway. Checked by namespace, not by a flag: what counts is where this process runs.
 */
async function refuseInsideLab(lab: LabSpec, command: string): Promise<void> {
  for (const ns of labNamespaces(lab))
    if (await inNetns(process.pid, ns))
      throw new InvalidStateError(
        `this controller runs inside lab ${lab.name} (namespace ${ns}): \`${command}\` would stop it halfway; run it against the controller that brought the lab up (its socket, not VMLINK_SOCKET of the cluster controllers)`,
        `lab/${lab.name}`,
      );
}

/**
 * Gives each etcd member its credentials unless it holds current ones: a client-side certificate from this CA
 * (`OU=etcd, CN=<member>`, its IP in subjectAltName) and a peer certificate from the lab's own peer CA (which signs
 * nothing else, so only members speak raft to members). Returns the members whose credentials were renewed.
 */
async function ensureEtcdCredentials(creds: HostCredentials, lab: LabSpec): Promise<string[]> {
  if (lab.etcd.length === 0) return [];
  const peerCa = await Pki.open(labEtcdPeerCaDir(lab.name));
  const renewed: string[] = [];
  for (const m of lab.etcd) {
    const dirs = labEtcdDirs(lab.name, m.name);
    let changed = false;
    if (!creds.pki.holdsCurrent(readCredentials(dirs.tls), 'etcd', m.name, m.address)) {
      const { serial: _s, ...c } = await creds.pki.issueEtcdMember(m.name, m.address);
      writeCredentials(dirs.tls, c);
      changed = true;
    }
    if (!peerCa.holdsCurrent(readCredentials(dirs.peerTls), 'etcd', m.name, m.address)) {
      const { serial: _s, ...c } = await peerCa.issueEtcdMember(m.name, m.address);
      writeCredentials(dirs.peerTls, c);
      changed = true;
    }
    if (changed) renewed.push(m.name);
  }
  return renewed;
}

/**
 * Sets up etcd's users and roles (`ensureEtcdAuth`) for the lab's compute hosts, as this controller (CN
 * vmlink-controller, root) through the management relay's socket of the first member that answers.
 */
async function bootstrapEtcdAuth(lab: LabSpec, creds: HostCredentials): Promise<void> {
  const failures: string[] = [];
  for (const m of lab.etcd) {
    const client = etcdClient(
      { endpoints: [`unix://${labEtcdSocket(lab.name, m.name)}`], tls: creds.own },
      { serverName: m.name },
    );
    try {
      await ensureEtcdAuth(
        client,
        lab.hosts.map((h) => h.name),
      );
      return;
    } catch (e) {
      failures.push(`${m.name}: ${(e as Error).message}`);
      log.warn({ member: m.name, err: (e as Error).message }, 'etcd auth setup failed through member');
    } finally {
      client.close();
    }
  }
  throw new UnavailableError(
    `could not set up etcd's users and roles in lab ${lab.name}: ${failures.join('; ')}`,
    'etcd',
  );
}
