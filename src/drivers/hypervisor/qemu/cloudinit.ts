// cloud-init NoCloud seed for qcow2 cloud images: meta-data, user-data, network-config v2, as an ISO labelled cidata.
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { stringify } from 'yaml';
import type { Runner } from '../../../exec/runner.js';
import type { VmConfig } from '../../../shared/model.js';

/** The three NoCloud seed files, by file name. */
export interface SeedFiles {
  'meta-data': string;
  'user-data': string;
  'network-config': string;
}

// cloud-init reads YAML 1.1, where an unquoted MAC such as 52:54:00:12:34:56 is a base-60 integer: quote every string.
const YAML_OPTS = { lineWidth: 0, defaultStringType: 'QUOTE_DOUBLE', defaultKeyType: 'PLAIN' } as const;

/** Builds the seed files of a qcow2 VM (pure). The instance id changes when user data or network config do. */
export function buildSeedFiles(cfg: VmConfig): SeedFiles {
  if (cfg.image.kind !== 'qcow2')
    throw new Error(`VM ${cfg.name} boots the test guest; it has no cloud-init seed`);
  const ci = cfg.image.cloudInit;
  const userData =
    ci.userData ?? `#cloud-config\n${stringify({ ssh_authorized_keys: ci.sshAuthorizedKeys }, YAML_OPTS)}`;
  const ethernets: Record<string, unknown> = {};
  cfg.nics.forEach((nic, i) => {
    const eth: Record<string, unknown> = { match: { macaddress: nic.mac }, 'set-name': `eth${i}` };
    if (nic.staticIp) {
      eth.addresses = [`${nic.staticIp.address}/${nic.staticIp.prefixLength}`];
      if (nic.staticIp.gateway) eth.routes = [{ to: '0.0.0.0/0', via: nic.staticIp.gateway }];
    } else {
      eth.dhcp4 = true;
    }
    if (nic.mtu !== 1500) eth.mtu = nic.mtu;
    ethernets[`eth${i}`] = eth;
  });
  const networkConfig = stringify({ version: 2, ethernets }, YAML_OPTS);
  const id = createHash('sha256')
    .update(userData)
    .update('\0')
    .update(networkConfig)
    .digest('hex')
    .slice(0, 12);
  const metaData = stringify({ 'instance-id': `${cfg.name}-${id}`, 'local-hostname': cfg.name }, YAML_OPTS);
  return { 'meta-data': metaData, 'user-data': userData, 'network-config': networkConfig };
}

/** Writes the seed files into `dir` and packs them into `iso` with genisoimage (volume label `cidata`). */
export async function writeSeedIso(
  runner: Runner,
  files: SeedFiles,
  dir: string,
  iso: string,
): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const names = ['user-data', 'meta-data', 'network-config'] as const;
  for (const n of names) await writeFile(`${dir}/${n}`, files[n], { mode: 0o600 });
  await runner.run([
    'genisoimage',
    '-quiet',
    '-output',
    iso,
    '-volid',
    'cidata',
    '-joliet',
    '-rock',
    ...names.map((n) => `${dir}/${n}`),
  ]);
}
