import { join } from 'node:path';

/** Runtime directory (sockets, pidfiles): VMLINK_RUN_DIR or /run/vmlink. */
export const runDir = (): string => process.env.VMLINK_RUN_DIR ?? '/run/vmlink';
/** Persistent state directory: VMLINK_STATE_DIR or /var/lib/vmlink. */
export const stateDir = (): string => process.env.VMLINK_STATE_DIR ?? '/var/lib/vmlink';
/** The controller's default API socket. */
export const controllerSocket = (): string => process.env.VMLINK_SOCKET ?? join(runDir(), 'controller.sock');
/** The controller's SQLite database. */
export const controllerDb = (): string => join(stateDir(), 'controller.db');
/** Runtime directory of one lab. */
export const labRunDir = (lab: string): string => join(runDir(), 'lab', lab);
/** State directory of one lab host's agent. */
export const labHostStateDir = (lab: string, host: string): string => join(stateDir(), 'lab', lab, host);
/**
 * Where the controller reaches one lab host's agent: the lab relay's socket, which crosses the lab LAN to the
 * agent's TCP listener (so a host whose network breaks is unreachable, as on real hardware).
 */
export const labAgentSocket = (lab: string, host: string): string => join(labRunDir(lab), `${host}.sock`);
/** The lab host agent's own unix socket (local admin; `lab up` checks the agent's health on it). */
export const labAgentOwnSocket = (lab: string, host: string): string =>
  join(labRunDir(lab), `${host}.agent.sock`);
/** A lab host's TLS credentials (key 0600, certificate, CA), issued by the controller at `lab up`. */
export const labHostTlsDir = (lab: string, host: string): string => join(labHostStateDir(lab, host), 'tls');
/** TCP port agents listen on for the controller. */
export const AGENT_TCP_PORT = 7443;
