// The API answers the app reads, as plain types (the browser bundle carries no zod). They mirror
// src/controller/wire*.ts; the app checks what it touches (lib/guard.ts) and ignores fields it does not know.

export type Role = 'read-only' | 'operator' | 'admin';

export interface SessionInfo {
  who: string;
  role: Role;
  expiresAt?: string;
}

export interface HostView {
  name: string;
  address: string;
  reachable: boolean;
  state: 'unknown' | 'up' | 'unreachable';
  lastSeen?: string;
  error?: string;
}

export interface StatusView {
  spec?: { source: string; appliedAt: string };
  hosts: HostView[];
}

export interface NetworkItem {
  name: string;
  mode: string;
  backend: string;
  hosts: string[];
}

export interface VmNic {
  network: string;
  tap: string;
  mac: string;
  addresses: string[];
}

export type VmState = 'running' | 'stopped' | 'paused' | 'crashed' | 'absent' | 'unknown';

export interface VmItem {
  name: string;
  host: string;
  desired: 'running' | 'stopped' | 'absent';
  state: VmState;
  cpus?: number;
  memoryMiB?: number;
  networks: string[];
  nics: VmNic[];
  problems: string[];
}

export interface Endpoint {
  id: string;
  kind: 'host' | 'peer' | 'upstream' | 'vm';
  address?: string;
  host?: string;
  network?: string;
  nic?: string;
}

export interface MatrixCell {
  from: string;
  to: string;
  kind: 'ping' | 'forward' | 'port';
  port?: number;
  expected: boolean | 'any';
  observed: boolean;
  rttMs?: number;
  detail: string;
  unmeasured?: boolean;
  ok: boolean;
}

/** One load-balancer check of a verify (the controller's LbCell). */
export interface LbCell {
  lb: string;
  check: 'vip' | 'host' | 'reach' | 'healthy' | 'backend';
  from?: string;
  to: string;
  port?: number;
  detail: string;
  takenOut?: boolean;
  unmeasured?: boolean;
  ok: boolean;
}

export interface VerifyResult {
  endpoints: Endpoint[];
  cells: MatrixCell[];
  loadBalancers?: LbCell[];
  ok: boolean;
  mismatches: number;
  measuredAt: string;
  durationMs: number;
}

export interface EventItem {
  id: number;
  time: string;
  kind: string;
  message: string;
}

export interface AlertInstance {
  rule: string;
  labels: Record<string, string>;
  state: 'pending' | 'firing' | 'resolved';
  severity: 'info' | 'warning' | 'critical';
  value: number;
  summary: string;
  activeSince: string;
  firedAt?: string;
  resolvedAt?: string;
  silencedBy?: string;
  acknowledgedBy?: string;
}

export interface AlertsView {
  rules: Array<{ name: string; expr: string; op: string; threshold: number; for: string; severity: string }>;
  instances: AlertInstance[];
  silences: Array<{ id: string; rule: string; until: string; createdBy: string; comment?: string }>;
  evaluatedAt?: string;
}

export interface PlanResult {
  plan: { steps: Array<{ kind: string; host: string; reason: string }>; unchanged: string[] };
  text: string;
  summary: { create: number; update: number; delete: number; start: number; stop: number };
  losses: Array<{ kind: 'vm' | 'network'; host: string; name: string }>;
  protectedDeletions: Array<{ host: string; name: string }>;
  kept: string[];
}
