import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseJoinToken } from '../../shared/join-wire.js';
import {
  CONTROLLER_NAME,
  fingerprint,
  generateKeyPair,
  identityOf,
  issuedBy,
  peerMismatch,
  writeCredentials,
} from '../../shared/tls.js';
import { createCsr } from '../../shared/x509.js';
import { JoinTokens } from './join.js';
import { Pki } from './pki.js';

const root = mkdtempSync(join(tmpdir(), 'vmlink-pki-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const freshDir = () => join(root, `ca${n++}`);

describe('Pki', () => {
  it('creates a P-256 CA at first start with its key 0600, and opens the same CA again', async () => {
    const dir = freshDir();
    const pki = await Pki.open(dir);
    expect(statSync(join(dir, 'ca.key')).mode & 0o777).toBe(0o600);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    const ca = new X509Certificate(pki.caPem);
    expect(ca.ca).toBe(true);
    expect(ca.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    const again = await Pki.open(dir);
    expect(again.caFingerprint).toBe(pki.caFingerprint);
    expect(pki.caFingerprint).toMatch(/^[0-9a-f]{64}$/);
  });

  it("issues a host certificate bound to the host's name from a CSR, whatever subject the CSR asks for", async () => {
    const pki = await Pki.open(freshDir());
    const pair = await generateKeyPair();
    const issued = await pki.issueForCsr('host1', await createCsr('someone-else', pair));
    const cert = new X509Certificate(issued.cert);
    expect(issuedBy(issued.cert, pki.caPem)).toBe(true);
    expect(identityOf(cert.subject)).toEqual({ role: 'host', name: 'host1' });
    expect(cert.subjectAltName).toBe('DNS:host1');
    expect(cert.checkHost('host1')).toBe('host1');
    expect(pki.refusal('host1', cert.serialNumber)).toBeUndefined();
  });

  it('refuses a CSR whose signature does not match, and names that are no host names', async () => {
    const pki = await Pki.open(freshDir());
    const csr = await createCsr('host1', await generateKeyPair());
    const body = csr.split('\n').slice(1, -2).join('');
    const der = Buffer.from(body, 'base64');
    der[der.length - 5] = der[der.length - 5]! ^ 0xff; // flip bits of the signature
    const bad = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    await expect(pki.issueForCsr('host1', bad)).rejects.toThrow(/bad signature|not a PKCS#10/);
    await expect(pki.issueForCsr(CONTROLLER_NAME, csr)).rejects.toThrow(/not a host name/);
    await expect(pki.issueForCsr('Host;1', csr)).rejects.toThrow(/not a host name/);
  });

  it('revokes a host that leaves, and the previous certificate when a new one is issued', async () => {
    const pki = await Pki.open(freshDir());
    const first = await pki.issueLabHost('host1');
    const second = await pki.issueLabHost('host1');
    expect(pki.refusal('host1', first.serial)).toMatch(/revoked .*superseded/);
    expect(pki.refusal('host1', second.serial)).toBeUndefined();
    expect(pki.isCurrent('host1', second)).toBe(true);
    expect(pki.isCurrent('host1', first)).toBe(false);
    expect(pki.revokeHost('host1', 'host left the spec')).toBe(true);
    expect(pki.refusal('host1', second.serial)).toMatch(/revoked .*host left the spec/);
    expect(pki.revokeHost('host1', 'again')).toBe(false);
    // A certificate of one host is never another's.
    const h2 = await pki.issueLabHost('host2');
    expect(pki.refusal('host1', h2.serial)).toMatch(/not current/);
  });

  it("issues the controller's own credentials once and keeps them", async () => {
    const pki = await Pki.open(freshDir());
    const a = await pki.controllerCredentials();
    const b = await pki.controllerCredentials();
    expect(b.cert).toBe(a.cert);
    expect(identityOf(new X509Certificate(a.cert).subject)).toEqual({
      role: 'controller',
      name: CONTROLLER_NAME,
    });
  });

  it("writes a host's credentials 0700/0600 and leaves the parents it makes traversable (0755)", async () => {
    const pki = await Pki.open(freshDir());
    const dir = join(root, 'state', 'lab', 'x', 'host1', 'tls');
    const { serial: _s, ...creds } = await pki.issueLabHost('host1');
    writeCredentials(dir, creds);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, 'key.pem')).mode & 0o777).toBe(0o600);
    const parents = ['state', 'state/lab', 'state/lab/x', 'state/lab/x/host1'].map((p) => join(root, p));
    for (const parent of parents) expect(statSync(parent).mode & 0o011, parent).toBe(0o011);
  });

  it("a certificate of another CA is not this CA's", async () => {
    const a = await Pki.open(freshDir());
    const b = await Pki.open(freshDir());
    const foreign = await b.issueLabHost('host1');
    expect(issuedBy(foreign.cert, a.caPem)).toBe(false);
    expect(a.isCurrent('host1', { ...foreign, ca: a.caPem })).toBe(false);
  });
});

describe('peerMismatch', () => {
  const cert = (OU: string, CN: string, serialNumber = '0A') => ({
    subject: { OU, CN, O: 'vmlink' } as never,
    serialNumber,
  });
  it('accepts the expected role and name, and refuses others or a revoked serial, saying why', () => {
    expect(peerMismatch(cert('host', 'host1'), { role: 'host', name: 'host1' })).toBeUndefined();
    expect(peerMismatch(cert('host', 'host2'), { role: 'host', name: 'host1' })).toMatch(
      /names host "host2"/,
    );
    expect(
      peerMismatch(cert('host', CONTROLLER_NAME), { role: 'controller', name: CONTROLLER_NAME }),
    ).toMatch(/not controller/);
    expect(peerMismatch(undefined, { role: 'host', name: 'host1' })).toMatch(/no certificate/);
    expect(
      peerMismatch(cert('host', 'host1', '000A'), { role: 'host', name: 'host1' }, (s) =>
        s === '0a' ? 'was revoked' : undefined,
      ),
    ).toMatch(/serial 0a\) was revoked/);
  });
});

describe('JoinTokens', () => {
  it('lets a host join once with a token that pins the CA; a second use, another host, or a late use is refused', async () => {
    const pki = await Pki.open(freshDir());
    let now = Date.now();
    const tokens = new JoinTokens(pki, () => now);
    const t = tokens.create('host1', 60_000);
    expect(parseJoinToken(t.token).caFingerprint).toBe(pki.caFingerprint);
    expect(t.caFingerprint).toBe(fingerprint(pki.caPem));
    // Only the hash is stored.
    expect(JSON.stringify(pki.records())).not.toContain(parseJoinToken(t.token).secret);
    const csr = await createCsr('host1', await generateKeyPair());
    await expect(tokens.redeem('host2', t.token, csr)).rejects.toThrow(
      /host host2 refused: the token was made for host host1/,
    );
    const issued = await tokens.redeem('host1', t.token, csr);
    expect(issuedBy(issued.cert, pki.caPem)).toBe(true);
    await expect(tokens.redeem('host1', t.token, csr)).rejects.toMatchObject({
      kind: 'unauthorized',
      message: expect.stringMatching(/already used/),
    });
    const late = tokens.create('host1', 1_000);
    now += 2_000;
    await expect(tokens.redeem('host1', late.token, csr)).rejects.toThrow(/expired at/);
    const unknown = `vmlink-join-1.${pki.caFingerprint}.${'A'.repeat(43)}`;
    await expect(tokens.redeem('host1', unknown, csr)).rejects.toThrow(/unknown join token/);
    expect(() => parseJoinToken('Bearer abc')).toThrow(/not a vmlink join token/);
    expect(() => tokens.create('host1', 10 * 86_400_000)).toThrow(/between 1 s and 24 h/);
  });

  it('issues an etcd member certificate with its IP in subjectAltName, server and client use', async () => {
    const pki = await Pki.open(join(root, 'etcd-ca'));
    const m = await pki.issueEtcdMember('etcd1', '192.168.85.21');
    const c = new X509Certificate(m.cert);
    expect(identityOf(c.subject)).toEqual({ role: 'etcd', name: 'etcd1' });
    expect(c.checkIP('192.168.85.21')).toBe('192.168.85.21');
    expect(c.checkHost('etcd1')).toBe('etcd1');
    expect(c.checkIP('192.168.85.22')).toBeUndefined();
    expect(issuedBy(m.cert, pki.caPem)).toBe(true);
    expect(pki.holdsCurrent(m, 'etcd', 'etcd1', '192.168.85.21')).toBe(true);
    expect(pki.holdsCurrent(m, 'etcd', 'etcd1', '192.168.85.99')).toBe(false);
    expect(pki.holdsCurrent(m, 'host', 'etcd1')).toBe(false);
    // Not a host's certificate: no host record is made.
    expect(pki.records().hosts.etcd1).toBeUndefined();
    await expect(pki.issueEtcdMember('root', '192.168.85.21')).rejects.toThrow(/cannot issue/);
    await expect(pki.issueEtcdMember('etcd2', 'not-an-ip')).rejects.toThrow(/cannot issue/);
  });
});
