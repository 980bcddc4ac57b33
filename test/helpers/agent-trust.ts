// A test process that calls lab agents directly (as the controller does) needs the controller's certificate and
// its view of which host certificates are current.
import { join } from 'node:path';
import { setAgentTrust } from '../../src/controller/agents.js';
import { Pki } from '../../src/controller/pki/pki.js';
import { readCredentials } from '../../src/shared/tls.js';

/** Makes this process's agent clients speak mutual TLS as the controller of `stateDir`; returns the undo. */
export async function trustAgentsAsController(stateDir: string): Promise<() => void> {
  const pkiDir = join(stateDir, 'pki');
  const credentials = readCredentials(join(pkiDir, 'controller'));
  if (!credentials) throw new Error(`no controller credentials in ${pkiDir}: start the daemon first`);
  const pki = await Pki.open(pkiDir);
  setAgentTrust({ credentials, refusal: (h, s) => pki.refusal(h, s) });
  return () => setAgentTrust(undefined);
}
