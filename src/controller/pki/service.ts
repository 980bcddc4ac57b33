// The controller's use of its CA: its own credentials for calling agents, join tokens, lab hosts' certificates,
// rotation through an agent, and revocation when a host leaves.
import { InvalidStateError } from '../../shared/errors.js';
import { readCredentials, type TlsCredentials, writeCredentials } from '../../shared/tls.js';
import { forgetAgentConnections, setAgentTrust } from '../agents.js';
import { type JoinToken, JoinTokens } from './join.js';
import { Pki } from './pki.js';

/** What rotation needs of a host's agent (an `AgentClient`). */
export interface RotatingAgent {
  tlsCsr(): Promise<string>;
  installCert(cert: string, ca: string): Promise<void>;
}

/** The outcome of a rotation. */
export interface Rotated {
  host: string;
  serial: string;
  previousSerial?: string;
  notAfter: string;
}

/** The controller's certificates and the hosts'. */
export class HostCredentials {
  private constructor(
    readonly pki: Pki,
    /** The controller's own key and certificate (client of agents, server of the TCP API). */
    readonly own: TlsCredentials,
    private readonly joins: JoinTokens,
  ) {}

  /** Opens (or creates) the CA in `dir` and makes this process call agents with the controller's certificate. */
  static async open(dir: string): Promise<HostCredentials> {
    const pki = await Pki.open(dir);
    const own = await pki.controllerCredentials();
    setAgentTrust({ credentials: own, refusal: (host, serial) => pki.refusal(host, serial) });
    return new HostCredentials(pki, own, new JoinTokens(pki));
  }

  /** A one-time token that lets `host` join within `ttlMs`. */
  joinToken(host: string, ttlMs?: number): JoinToken & { host: string } {
    return { host, ...this.joins.create(host, ttlMs) };
  }

  /** Spends a join token on `host`'s certificate for the key of `csr`. */
  async join(host: string, token: string, csr: string): Promise<{ cert: string; ca: string }> {
    const issued = await this.joins.redeem(host, token, csr);
    forgetAgentConnections(host);
    return { cert: issued.cert, ca: this.pki.caPem };
  }

  /**
   * Gives a lab host credentials in `dir` unless it holds its current ones; true when new ones were written (its
   * agent must restart to serve them).
   */
  async ensureLabHost(host: string, dir: string): Promise<boolean> {
    if (this.pki.isCurrent(host, readCredentials(dir))) return false;
    const { serial: _serial, ...creds } = await this.pki.issueLabHost(host);
    writeCredentials(dir, creds);
    forgetAgentConnections(host);
    return true;
  }

  /**
   * Rotates `host`'s certificate through its agent: a new key and CSR there, the certificate issued here and
   * installed there (the agent reloads its listener), then the old serial revoked.
   */
  async rotate(host: string, agent: RotatingAgent): Promise<Rotated> {
    const previousSerial = this.pki.records().hosts[host]?.serial;
    if (!previousSerial)
      throw new InvalidStateError(
        `host ${host} holds no certificate of this controller: join it first`,
        `host/${host}`,
      );
    const issued = await this.pki.issueForCsr(host, await agent.tlsCsr(), { record: false });
    await agent.installCert(issued.cert, this.pki.caPem);
    this.pki.recordHost(host, issued, 'rotated');
    forgetAgentConnections(host);
    return { host, serial: issued.serial, previousSerial, notAfter: issued.notAfter };
  }

  /** Revokes `host`'s certificate and closes the connections to it; true if it had one. */
  revoke(host: string, reason: string): boolean {
    const had = this.pki.revokeHost(host, reason);
    forgetAgentConnections(host);
    return had;
  }
}
