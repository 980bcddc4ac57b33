// `clock-drift`: a host whose clock is off the controller's by more than 2 s. The agent stamps its doctor answer with
// its clock; the controller knows when it sent the request and got the answer, so the offset lies between
// `at - receivedAt` and `at - sentAt`: only an offset beyond the threshold across that whole interval counts (a slow
// answer never looks like drift). Where the agent sent no stamp, the collector's vmlink_host_clock_offset_seconds.
import type { Diagnosis } from '../wire-observe.js';
import type { Diagnose } from './types.js';

/** Largest offset tolerated (TLS validity, leases, logs that line up). */
export const CLOCK_DRIFT_MAX_MS = 2_000;

const secs = (ms: number) => `${ms >= 0 ? '+' : ''}${(ms / 1000).toFixed(1)} s`;

export const clockDrift: Diagnose = ({ hosts, metrics }) => {
  const out: Diagnosis[] = [];
  for (const h of hosts) {
    const a = h.answer;
    let lo: number;
    let hi: number;
    let evidence: string[];
    if (a?.observations) {
      lo = a.observations.at - a.receivedAt;
      hi = a.observations.at - a.sentAt;
      evidence = [
        `the agent's clock read ${new Date(a.observations.at).toISOString()} while the controller's went from ${new Date(a.sentAt).toISOString()} (request) to ${new Date(a.receivedAt).toISOString()} (answer)`,
        `offset between ${secs(lo)} and ${secs(hi)} (bounded by the ${a.receivedAt - a.sentAt} ms round trip)`,
      ];
    } else {
      const m = metrics
        ?.latest()
        .series.find((s) => s.name === 'vmlink_host_clock_offset_seconds' && s.labels.host === h.host);
      if (!m) continue;
      lo = hi = m.value * 1000;
      evidence = [
        `vmlink_host_clock_offset_seconds{host="${h.host}"} ${m.value} (the collector's, RTT-bounded)`,
      ];
    }
    const ahead = lo > CLOCK_DRIFT_MAX_MS;
    const behind = hi < -CLOCK_DRIFT_MAX_MS;
    if (!ahead && !behind) continue;
    const least = ahead ? lo : -hi;
    out.push({
      id: 'clock-drift',
      severity: least > 60_000 ? 'critical' : 'warning',
      host: h.host,
      object: `host ${h.host}`,
      summary: `the clock of ${h.host} is ${(least / 1000).toFixed(1)} s or more ${ahead ? 'ahead of' : 'behind'} the controller's (tolerated: ${CLOCK_DRIFT_MAX_MS / 1000} s)`,
      evidence,
      fix: `run NTP on ${h.host} (chrony or systemd-timesyncd; \`chronyc tracking\` shows its offset) and on the controller; certificates, leases and event times rely on clocks within seconds`,
    });
  }
  return out;
};
