// What QMP `query-status` says of a VM, as vmlink's power states and problems.
import type { VmPowerState } from '../../../shared/model.js';

/** Statuses of QMP `query-status` and the power state each maps to. */
const STATUS_MAP: Record<string, VmPowerState> = {
  running: 'running',
  paused: 'paused',
  suspended: 'paused',
  prelaunch: 'paused',
  inmigrate: 'paused',
  postmigrate: 'paused',
  'finish-migrate': 'paused',
  'save-vm': 'paused',
  'restore-vm': 'paused',
  debug: 'paused',
  watchdog: 'paused',
  'io-error': 'paused',
  colo: 'running',
  'guest-panicked': 'crashed',
  'internal-error': 'crashed',
  shutdown: 'stopped',
};

/** The power state of a running QEMU reporting `status`, with the problems that status means. */
export function powerState(status: string): { state: VmPowerState; problems: string[] } {
  const state = STATUS_MAP[status] ?? 'running';
  const problems: string[] = [];
  if (status !== 'running' && state !== 'paused') problems.push(`QEMU status ${status}`);
  if (status === 'io-error') problems.push('paused on a disk I/O error');
  return { state, problems };
}
