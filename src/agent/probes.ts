// Reachability probes from a host or from one of its guests: one at a time, or a batch from one source at once.
import type { HypervisorDriver } from '../drivers/hypervisor/types.js';
import { parseProbe, probeArgv, runProbeBatch } from '../exec/probe.js';
import type { Runner } from '../exec/runner.js';
import { InvalidRequestError, InvalidStateError, NotFoundError } from '../shared/errors.js';
import { PROBE_GUEST_MARGIN_MS, PROBE_HOST_MARGIN_MS } from '../shared/limits.js';
import type { ProbeBatchRequest, ProbeRequest, ProbeResult } from './wire-probe.js';

/** What probing needs: the host's runner and its hypervisor (for guests). */
export interface ProberDeps {
  runner: Runner;
  hypervisor: HypervisorDriver;
}

/** Runs probes for an agent: on its host through the runner, in its guests through their guest agents. */
export class Prober {
  constructor(private readonly deps: ProberDeps) {}

  /** Runs one probe from the host or from one of its guests. */
  async probe(req: ProbeRequest): Promise<ProbeResult> {
    const started = Date.now();
    if (req.from.kind === 'host') {
      const r = await this.deps.runner.run(probeArgv(req, 'host'), {
        allowFailure: true,
        timeoutMs: req.timeoutMs + PROBE_HOST_MARGIN_MS,
      });
      return parseProbe(req.kind, r.code, r.stdout, r.stderr, Date.now() - started);
    }
    const nic = await this.guestSource(req.from, [req]);
    const r = await this.deps.hypervisor.guestExec(req.from.name, probeArgv(req, 'guest', nic), {
      timeoutMs: req.timeoutMs + PROBE_GUEST_MARGIN_MS,
    });
    return parseProbe(req.kind, r.exitCode, r.stdout, r.stderr, Date.now() - started);
  }

  /**
   * Runs a batch of probes from one source at once, in one command: one `sh -c` on the host, or one guest-agent
   * exec in the guest. Results come in request order; a probe the batch printed no outcome for is unmeasured.
   */
  async probeBatch(req: ProbeBatchRequest): Promise<ProbeResult[]> {
    const longest = Math.max(...req.probes.map((p) => p.timeoutMs));
    if (req.from.kind === 'host') {
      const cmds = req.probes.map((p) => ({ kind: p.kind, argv: probeArgv(p, 'host') }));
      return runProbeBatch(cmds, (argv) =>
        this.deps.runner.run(argv, { allowFailure: true, timeoutMs: longest + PROBE_HOST_MARGIN_MS }),
      );
    }
    const vm = req.from.name;
    const nic = await this.guestSource(req.from, req.probes);
    const cmds = req.probes.map((p) => ({ kind: p.kind, argv: probeArgv(p, 'guest', nic) }));
    return runProbeBatch(cmds, async (argv) => {
      const r = await this.deps.hypervisor.guestExec(vm, argv, {
        timeoutMs: longest + PROBE_GUEST_MARGIN_MS,
      });
      return { code: r.exitCode, stdout: r.stdout, stderr: r.stderr };
    });
  }

  /** Checks a guest source can probe (running; a NIC binding only for pings); returns the NIC to bind to. */
  private async guestSource(
    from: Extract<ProbeRequest['from'], { kind: 'vm' }>,
    probes: ReadonlyArray<{ kind: ProbeRequest['kind'] }>,
  ): Promise<string | undefined> {
    const vm = (await this.deps.hypervisor.list()).find((v) => v.name === from.name);
    if (!vm) throw new NotFoundError('vm', from.name);
    if (vm.state !== 'running')
      throw new InvalidStateError(
        `probe from ${vm.name} requires running (it is ${vm.state})`,
        `vm/${vm.name}`,
      );
    // busybox wget and nc cannot bind to an interface: a NIC-bound TCP probe would silently leave by the guest's
    // routes.
    const tcp = probes.find((p) => p.kind !== 'ping');
    if (from.nic !== undefined && tcp)
      throw new InvalidRequestError(
        `an ${tcp.kind} probe from ${vm.name} cannot be bound to NIC ${from.nic}; probe by ping`,
        'from.nic',
      );
    return from.nic;
  }
}
