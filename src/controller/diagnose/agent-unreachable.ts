// `agent-unreachable`: a spec host whose agent did not answer the doctor, with the error and what the heartbeat
// monitor knows (its state, when the agent last answered, how many heartbeats it missed).
import { agentAddress } from '../agents.js';
import type { Diagnosis } from '../wire-observe.js';
import type { Diagnose } from './types.js';

export const agentUnreachable: Diagnose = ({ spec, hosts, now }) =>
  hosts
    .filter((h) => !h.answer)
    .map((h): Diagnosis => {
      const hb = h.health;
      const seen = hb?.lastSeen ? Date.parse(hb.lastSeen) : undefined;
      const age = seen !== undefined && Number.isFinite(seen) ? Math.max(0, (now - seen) / 1000) : undefined;
      let address = '';
      try {
        address = agentAddress(spec, h.host);
      } catch {}
      return {
        id: 'agent-unreachable',
        severity: 'critical',
        host: h.host,
        object: `host ${h.host}`,
        summary: `the agent of ${h.host} does not answer${age !== undefined ? ` (last heard ${age.toFixed(0)} s ago)` : ''}`,
        evidence: [
          `GET /v1/doctor${address ? ` at ${address}` : ''}: ${(h.error ?? 'no answer').split('\n')[0]!.slice(0, 400)}`,
          hb
            ? `heartbeat: ${hb.state}, ${hb.missed} missed in a row, last seen ${hb.lastSeen ?? 'never'}${age !== undefined ? ` (${age.toFixed(0)} s ago)` : ''}${hb.error ? `: ${hb.error.split('\n')[0]!.slice(0, 200)}` : ''}`
            : 'heartbeat: no record (the daemon has not polled it yet)',
        ],
        fix: `start the agent on ${h.host} (\`vmlink agent\`, its service; a lab: \`vmlink lab up -f SPEC\`) and check the management network from the controller to ${address || 'its address'} (TLS port, firewall)`,
      };
    });
