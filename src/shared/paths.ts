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
/** API socket of one lab host's agent. */
export const labAgentSocket = (lab: string, host: string): string => join(labRunDir(lab), `${host}.sock`);
