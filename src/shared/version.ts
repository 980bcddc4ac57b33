// Versions of the software and of the two protocols between its processes, and the handshake that checks them.
import { VmlinkError } from './errors.js';
import { VERSION } from './package-version.js';

export { VERSION };

/** A protocol between two vmlink processes: the agent wire (controller -> agent) or the API (CLI -> controller). */
export type Protocol = 'wire' | 'api';

/**
 * The range of a protocol one process speaks: `version` is the newest, `min` the oldest it still understands.
 * Bump `version` on every change of the protocol; raise `min` only when support for an older one is dropped.
 */
export interface ProtocolRange {
  version: number;
  min: number;
}

/** What this build speaks of each protocol. */
export const PROTOCOLS: Readonly<Record<Protocol, ProtocolRange>> = {
  // wire 2: batches of actions (`POST /v1/actions/batch`) and of probes (`POST /v1/probes`), which this controller
  // sends on every apply and verify. wire 3: security groups (`securityGroup.ensure|delete` actions, NICs' groups,
  // `HostReport.securityGroups`); sent only for specs that have groups, so an agent on wire 2 still serves others.
  wire: { version: 3, min: 2 },
  api: { version: 1, min: 1 },
};

/** One side of a handshake: its software version and its range of one protocol. */
export interface VersionInfo extends ProtocolRange {
  software: string;
}

/** This build's side of `protocol`'s handshake. */
export function localVersion(protocol: Protocol): VersionInfo {
  return { software: VERSION, ...PROTOCOLS[protocol] };
}

/** The HTTP header that carries a side's `VersionInfo`, on requests and on answers. */
export const VERSION_HEADER: Readonly<Record<Protocol, string>> = {
  wire: 'x-vmlink-wire',
  api: 'x-vmlink-api',
};

const NAMES: Record<Protocol, { label: string; client: string; server: string }> = {
  wire: { label: 'agent wire', client: 'controller', server: 'agent' },
  api: { label: 'API', client: 'CLI', server: 'controller' },
};

/** `VersionInfo` as a header value: `1;min=1;software=0.1.0`. */
export function formatVersionHeader(v: VersionInfo): string {
  return `${v.version};min=${v.min};software=${v.software}`;
}

/**
 * Reads a version header. A process from before versions existed sends none: it speaks version 1 only
 * (`software` unknown). Undefined when the header is malformed.
 */
export function parseVersionHeader(value: string | string[] | undefined): VersionInfo | undefined {
  if (value === undefined) return { version: 1, min: 1, software: 'unknown (before versioned protocols)' };
  const m = /^(\d{1,6});min=(\d{1,6});software=([\w.+~-]{1,64})$/.exec(
    Array.isArray(value) ? value[0]! : value,
  );
  if (!m) return undefined;
  const version = Number(m[1]);
  const min = Number(m[2]);
  return min > version ? undefined : { version, min, software: m[3]! };
}

/** Two processes whose versions of a protocol do not overlap; the message names both and what to upgrade. */
export class VersionMismatchError extends VmlinkError {
  constructor(message: string, subject?: string) {
    super('unsupported', message, subject === undefined ? {} : { subject });
  }
}

const range = (v: ProtocolRange): string => (v.min === v.version ? `${v.version}` : `${v.min}-${v.version}`);

/**
 * Checks that a client and a server of `protocol` share a version (their ranges overlap; they then speak the
 * newer one both know). Undefined when they do; otherwise the error names both sides' software and protocol
 * versions and which side to upgrade. `server` names the server for the operator (e.g. `agent of host1`).
 */
export function versionMismatch(
  protocol: Protocol,
  client: VersionInfo,
  server: VersionInfo,
  serverName: string = NAMES[protocol].server,
): VersionMismatchError | undefined {
  const n = NAMES[protocol];
  if (client.version >= server.min && server.version >= client.min) return undefined;
  const sides = `the ${n.client} runs vmlink ${client.software} (${n.label} ${range(client)}), the ${serverName} runs vmlink ${server.software} (${n.label} ${range(server)})`;
  const fix =
    server.version < client.min
      ? `upgrade the ${serverName} to a vmlink that speaks ${n.label} ${client.min} or later (the ${n.client}'s ${client.software} or newer)`
      : `upgrade the ${n.client} to a vmlink that speaks ${n.label} ${server.min} or later (the ${serverName}'s ${server.software} or newer)`;
  return new VersionMismatchError(`${n.label} versions differ: ${sides}; ${fix}`, serverName);
}

/**
 * The server side of the handshake: given a request's version header, the error to answer with, or undefined
 * when the client may go on. A malformed header is refused too (it is a vmlink client that cannot be understood).
 */
export function checkClientVersion(
  protocol: Protocol,
  header: string | string[] | undefined,
  serverName?: string,
): VersionMismatchError | undefined {
  const client = parseVersionHeader(header);
  if (!client)
    return new VersionMismatchError(
      `malformed ${VERSION_HEADER[protocol]} header ${JSON.stringify(header)}: expected VERSION;min=N;software=X`,
    );
  return versionMismatch(protocol, client, localVersion(protocol), serverName);
}

/**
 * The client side: given a server's answer header (none from a server older than versions), the error to raise,
 * or undefined when both speak a common version.
 */
export function checkServerVersion(
  protocol: Protocol,
  header: string | string[] | undefined,
  serverName?: string,
): VersionMismatchError | undefined {
  const server = parseVersionHeader(header);
  if (!server)
    return new VersionMismatchError(
      `${serverName ?? NAMES[protocol].server} sent a malformed ${VERSION_HEADER[protocol]} header ${JSON.stringify(header)}`,
    );
  return versionMismatch(protocol, localVersion(protocol), server, serverName);
}
