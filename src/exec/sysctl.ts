// Typed wrapper over sysctl(8): kernel parameters of one network namespace, read and set through the runner.
import { InvalidRequestError } from '../shared/errors.js';
import type { Runner } from './runner.js';

// Dotted keys of [a-z0-9_-] parts; an interface name may sit in the middle (net.ipv4.conf.<dev>.arp_ignore). A
// part is at most 63 characters (net.ipv4.tcp_available_congestion_control has 32).
const KEY = /^[a-z0-9_]+(\.[A-Za-z0-9_@:-]{1,63})+$/;
const VALUE = /^[A-Za-z0-9_.:-]{1,64}$/;

/** Refuses a key sysctl could read as an option or a path outside /proc/sys/. */
export function assertSysctlKey(key: string): void {
  if (!KEY.test(key)) throw new InvalidRequestError(`invalid sysctl key ${JSON.stringify(key)}`);
}

/** `sysctl -q -w KEY=VALUE` as argv. */
export function sysctlSetArgv(key: string, value: string | number): string[] {
  assertSysctlKey(key);
  const v = String(value);
  if (!VALUE.test(v)) throw new InvalidRequestError(`invalid sysctl value ${JSON.stringify(v)} for ${key}`);
  return ['sysctl', '-q', '-w', `${key}=${v}`];
}

/** sysctl bound to one runner and (optionally) one network namespace. */
export class Sysctl {
  constructor(
    private readonly runner: Runner,
    /** Namespace every command runs in; undefined = the caller's own. */
    readonly netns?: string,
  ) {}

  /** Sets a kernel parameter. */
  async set(key: string, value: string | number): Promise<void> {
    await this.runner.run(sysctlSetArgv(key, value), { netns: this.netns });
  }

  /**
   * Reads several parameters in one command (`sysctl -e KEY...`): a key the namespace lacks is absent from the
   * answer, as is a line that is not `KEY = VALUE` for a key asked.
   */
  async getMany(keys: readonly string[]): Promise<Map<string, string>> {
    for (const k of keys) assertSysctlKey(k);
    const r = await this.runner.run(['sysctl', '-e', ...keys], { netns: this.netns, allowFailure: true });
    const asked = new Set(keys);
    const out = new Map<string, string>();
    for (const line of r.stdout.split('\n')) {
      const at = line.indexOf(' = ');
      const key = line.slice(0, at);
      if (at > 0 && asked.has(key)) out.set(key, line.slice(at + 3).trim());
    }
    return out;
  }

  /** Reads a kernel parameter's value (`sysctl -n`). */
  async get(key: string): Promise<string> {
    assertSysctlKey(key);
    return (await this.runner.run(['sysctl', '-n', key], { netns: this.netns })).stdout.trim();
  }
}
