// Results a host hands back up (guest exec, guest NICs, probes): produced by drivers and exec, carried by the agent's
// wire contract to the controller. They live here so that drivers and exec need not import the agent.

/** Output of a command run inside a guest through its guest agent. */
export interface GuestExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** A guest NIC as the guest agent reports it. */
export interface GuestInterface {
  name: string;
  mac: string;
  /** Addresses with prefix, e.g. 10.0.0.5/24. */
  addresses: string[];
}

/** A probe's outcome: reachable or not, round-trip time, and what was seen. */
export interface ProbeResult {
  reachable: boolean;
  rttMs?: number;
  detail: string;
  /**
   * false when the probe could not run or its outcome proves nothing (agent or guest agent down, tool missing,
   * address unknown): such a cell is a mismatch whatever was expected, so isolation is never "proven" by a failure.
   */
  unmeasured?: boolean;
}
