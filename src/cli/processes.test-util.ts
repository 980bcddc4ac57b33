// The process bodies for tests that only build or read the command tree: each refuses to run.
import type { Processes } from './program.js';

const refuse = () => Promise.reject(new Error('command tree only: no process body runs'));

/** `Processes` for a tree that is built and read, never run. */
export const treeOnlyProcesses: Processes = {
  daemon: refuse,
  spawnDaemon: refuse,
  stopDaemon: refuse,
  agent: refuse,
  relay: refuse,
  localChecks: refuse,
};
