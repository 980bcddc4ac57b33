import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ExecError, type Runner, type RunOptions, type RunResult } from '../exec/runner.js';
import { ConfirmManager, type Undo } from './confirm.js';
import { configureTuning, HostTuner } from './tuning.js';

// `sysctl -e ...` as a lab host's namespace printed it on this machine (kernel 6.18, root default bbr).
const CAPTURED = `net.ipv4.tcp_congestion_control = bbr
net.ipv4.tcp_mtu_probing = 0
net.ipv4.tcp_ecn = 2
net.ipv4.tcp_fastopen = 1
net.ipv4.tcp_available_congestion_control = reno bbr cubic
net.ipv4.tcp_allowed_congestion_control = reno bbr
`;

/** A namespace's sysctls and the machine's modules, behind the Runner interface (sysctl -e/-w, modprobe). */
class KernelRunner implements Runner {
  readonly calls: string[] = [];
  readonly values = new Map<string, string>();
  /** Modules modprobe can load (tcp_NAME), and what loading one adds to the available list. */
  modules = new Set<string>();
  /** A key whose write fails (EPERM), to test partial failures. */
  refuse?: string;
  constructor(text = CAPTURED) {
    for (const line of text.trim().split('\n')) {
      const [k, v] = line.split(' = ');
      this.values.set(k!, v!);
    }
  }
  async run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    this.calls.push(argv.join(' '));
    const ok = (stdout = ''): RunResult => ({ argv: [...argv], code: 0, stdout, stderr: '' });
    const fail = (stderr: string): RunResult => {
      const r = { argv: [...argv], code: 1, stdout: '', stderr };
      if (!opts.allowFailure) throw new ExecError(r);
      return r;
    };
    if (argv[0] === 'sysctl' && argv[1] === '-e')
      return ok(
        argv
          .slice(2)
          .filter((k) => this.values.has(k))
          .map((k) => `${k} = ${this.values.get(k)}\n`)
          .join(''),
      );
    if (argv[0] === 'sysctl' && argv[2] === '-w') {
      const [k, v] = argv[3]!.split('=') as [string, string];
      if (k === this.refuse) return fail(`sysctl: setting key "${k}": Operation not permitted`);
      this.values.set(k, v);
      return ok();
    }
    if (argv[0] === 'modprobe') {
      const mod = argv.at(-1)!;
      if (!this.modules.has(mod)) return fail(`modprobe: FATAL: Module ${mod} not found`);
      if (!argv.includes('-n')) {
        const av = 'net.ipv4.tcp_available_congestion_control';
        this.values.set(av, `${this.values.get(av)} ${mod.slice(4)}`);
      }
      return ok();
    }
    return fail(`unexpected ${argv.join(' ')}`);
  }
  async spawnDetached(): Promise<number> {
    throw new Error('not used');
  }
}

const lab = (k: KernelRunner) =>
  new HostTuner({ host: 'host1', runner: k, rootNamespace: async () => false });
const root = (k: KernelRunner) =>
  new HostTuner({ host: 'host1', runner: k, rootNamespace: async () => true });

describe('host tuning on the agent', () => {
  it('reports what a lab namespace has and can set: only the loaded algorithms the machine allows', async () => {
    const k = new KernelRunner();
    k.modules.add('tcp_vegas');
    expect(await lab(k).observe()).toEqual({
      congestion: ['bbr', 'reno'],
      congestionAvailable: ['reno', 'bbr', 'cubic'],
      congestionAllowed: ['reno', 'bbr'],
      rootNamespace: false,
      keys: ['congestion', 'mtuProbing', 'ecn', 'fastOpen'],
      current: { congestion: 'bbr', mtuProbing: 0, ecn: 2, fastOpen: 1 },
    });
    // One sysctl read; no module is even asked about outside the root namespace.
    expect(k.calls).toHaveLength(1);
  });

  it('adds, in the root namespace, the algorithms modprobe could load (dry run, asked once per agent)', async () => {
    const k = new KernelRunner();
    k.modules.add('tcp_vegas');
    const t = root(k);
    expect((await t.observe()).congestion).toEqual(['bbr', 'cubic', 'reno', 'vegas']);
    await t.observe();
    const probes = k.calls.filter((c) => c.startsWith('modprobe'));
    expect(probes).toContain('modprobe -q -n tcp_vegas');
    expect(probes.every((c) => c.includes(' -n '))).toBe(true);
    expect(probes).toHaveLength(14); // the 16 known module names less the loaded bbr and cubic, once
    expect(k.values.get('net.ipv4.tcp_available_congestion_control')).toBe('reno bbr cubic');
  });

  it('leaves out keys the namespace lacks and values that are not what the field holds', async () => {
    const k = new KernelRunner(
      'net.ipv4.tcp_congestion_control = BBR;rm\nnet.ipv4.tcp_ecn = 5\nnet.ipv4.tcp_available_congestion_control = reno bbr -x',
    );
    const caps = await lab(k).observe();
    expect(caps.keys).toEqual(['ecn']);
    expect(caps.current).toEqual({ ecn: 5 });
    expect(caps.congestionAvailable).toEqual(['reno', 'bbr']);
  });

  it('refuses an algorithm the kernel lacks before anything changes, loading nothing outside the root namespace', async () => {
    const k = new KernelRunner();
    k.modules.add('tcp_vegas');
    await expect(lab(k).check({ congestion: 'vegas', ecn: 1 })).rejects.toThrow(
      /host host1 cannot apply its tuning: congestion control vegas is not loaded.*it can set bbr, reno/,
    );
    expect(k.calls.some((c) => c.startsWith('modprobe') || c.includes('-w'))).toBe(false);
    // In the root namespace it tries to load it, and refuses when that fails.
    const r = new KernelRunner();
    await expect(root(r).check({ congestion: 'nosuch' })).rejects.toThrow(/no module tcp_nosuch to load/);
    expect(r.calls).toContain('modprobe -q tcp_nosuch');
    expect(r.calls.some((c) => c.includes('-w'))).toBe(false);
  });

  it('refuses outside the root namespace an algorithm loaded but not allowed there, naming the machine list', async () => {
    const k = new KernelRunner();
    await expect(lab(k).check({ congestion: 'cubic' })).rejects.toThrow(
      /cubic is loaded but not allowed outside the machine's root network namespace \(net\.ipv4\.tcp_allowed_congestion_control: reno bbr\)/,
    );
  });

  it('loads a missing algorithm in the root namespace, then accepts it', async () => {
    const k = new KernelRunner();
    k.modules.add('tcp_htcp');
    const caps = await root(k).check({ congestion: 'htcp' });
    expect(k.calls).toContain('modprobe -q tcp_htcp');
    expect(caps.congestionAvailable).toContain('htcp');
  });

  it('sets only the fields that differ, in order, and puts back those set when a later one fails', async () => {
    const k = new KernelRunner();
    const t = lab(k);
    const before = (await t.observe()).current;
    await t.apply({ congestion: 'reno', ecn: 2, fastOpen: 3 }, before);
    expect(k.calls.filter((c) => c.includes('-w'))).toEqual([
      'sysctl -q -w net.ipv4.tcp_congestion_control=reno',
      'sysctl -q -w net.ipv4.tcp_fastopen=3',
    ]);
    k.refuse = 'net.ipv4.tcp_fastopen';
    await expect(
      t.apply({ congestion: 'bbr', mtuProbing: 1, fastOpen: 0 }, (await t.observe()).current),
    ).rejects.toThrow(/Operation not permitted/);
    expect(k.values.get('net.ipv4.tcp_congestion_control')).toBe('reno');
    expect(k.values.get('net.ipv4.tcp_mtu_probing')).toBe('0');
  });
});

describe('tuning.configure commit-confirmed', () => {
  let dir: string;
  beforeEach(() => {
    vi.useFakeTimers();
    dir = mkdtempSync(join(tmpdir(), 'vmlink-tuning-'));
  });
  afterEach(() => {
    vi.useRealTimers();
    rmSync(dir, { recursive: true, force: true });
  });

  const setup = () => {
    const k = new KernelRunner();
    const tuner = lab(k);
    const undone: Undo[] = [];
    const confirms = new ConfirmManager({
      dir,
      revert: async (u) => {
        undone.push(u);
        if (u.kind === 'tuning') await tuner.restore(u.previous);
      },
    });
    return { k, tuner, confirms, undone };
  };

  it('records the values it replaces and restores them when the window ends unconfirmed', async () => {
    const { k, tuner, confirms, undone } = setup();
    const id = randomUUID();
    await configureTuning(
      tuner,
      confirms,
      { tuning: { congestion: 'reno', ecn: 1 }, confirm: { id, timeoutMs: 5_000 } },
      {},
    );
    expect(k.values.get('net.ipv4.tcp_congestion_control')).toBe('reno');
    expect(confirms.get(id)).toMatchObject({
      state: 'pending',
      detail: expect.stringContaining('tuning (congestion reno, ecn 1)'),
    });
    await vi.advanceTimersByTimeAsync(5_000);
    await confirms.settle(id);
    expect(undone).toEqual([{ kind: 'tuning', previous: { congestion: 'bbr', ecn: 2 } }]);
    expect(k.values.get('net.ipv4.tcp_congestion_control')).toBe('bbr');
    expect(k.values.get('net.ipv4.tcp_ecn')).toBe('2');
    expect(confirms.get(id).state).toBe('rolled-back');
  });

  it('keeps a confirmed change, and refuses a second one while the first is pending', async () => {
    const { k, tuner, confirms } = setup();
    const id = randomUUID();
    await configureTuning(
      tuner,
      confirms,
      { tuning: { mtuProbing: 1 }, confirm: { id, timeoutMs: 5_000 } },
      {},
    );
    await expect(
      configureTuning(
        tuner,
        confirms,
        { tuning: { ecn: 0 }, confirm: { id: randomUUID(), timeoutMs: 5_000 } },
        {},
      ),
    ).rejects.toThrow(/still pending/);
    confirms.confirm(id);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(k.values.get('net.ipv4.tcp_mtu_probing')).toBe('1');
    expect(k.values.get('net.ipv4.tcp_ecn')).toBe('2');
  });

  it('arms nothing when the tuning is refused', async () => {
    const { tuner, confirms } = setup();
    await expect(
      configureTuning(
        tuner,
        confirms,
        { tuning: { congestion: 'nosuch' }, confirm: { id: randomUUID(), timeoutMs: 5_000 } },
        {},
      ),
    ).rejects.toThrow(/no module tcp_nosuch|not loaded/);
    expect(confirms.pending()).toBeUndefined();
  });
});
