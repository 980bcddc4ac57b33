// `vmlink vm console NAME` attached interactively (the controller's console stream: raw TTY when stdin is one, a
// plain pipe otherwise so scripts and tests can drive it; Ctrl-] detaches, as virsh), and `vmlink ui` (the web
// console's URL and a one-time login link).
import type { Command } from 'commander';
import type WebSocket from 'ws';
import { LoginLinkSchema, UiListenerSchema } from '../controller/wire-ui.js';
import {
  CONSOLE_CONNECT_TIMEOUT_MS,
  CONSOLE_DETACH_BYTE,
  CONSOLE_KEYS_FRAME_MAX_BYTES,
  parseServerControl,
} from '../shared/console-wire.js';
import { type ErrorKind, errorStatus, UnavailableError, VmlinkError } from '../shared/errors.js';
import type { HttpClient } from '../shared/http/client.js';
import { ControllerClient, controllerConnection } from './client.js';
import { type Api, emit } from './io.js';

/** Largest output message accepted from the controller. */
const OUTPUT_MESSAGE_MAX_BYTES = 1024 * 1024;

/** The controller addresses of `api`'s client, in the order to try them. */
function addressesOf(client: HttpClient): string[] {
  return client instanceof ControllerClient ? client.addresses : [client.address];
}

/** Opens the console stream of `vm` on the first controller that answers. */
async function connect(client: HttpClient, vm: string, mode?: 'read'): Promise<WebSocket> {
  // Loaded here, not with the command tree: `ws` is ~20 modules every other CLI call would load for nothing.
  const { opened, openWebSocket } = await import('../shared/http/ws-client.js');
  let last: unknown;
  for (const socket of addressesOf(client)) {
    const c = controllerConnection(socket);
    const ws = openWebSocket({
      ...c,
      path: `/v1/vms/${encodeURIComponent(vm)}/console/stream${mode ? `?mode=${mode}` : ''}`,
      name: 'the controller',
      protocol: 'api',
      maxPayload: OUTPUT_MESSAGE_MAX_BYTES,
      handshakeTimeoutMs: CONSOLE_CONNECT_TIMEOUT_MS,
    });
    try {
      await opened(ws, 'the controller');
      return ws;
    } catch (e) {
      last = e;
      // Only "nothing there" moves on to the next controller; a refusal is the answer.
      if (!(e instanceof UnavailableError)) throw e;
    }
  }
  throw last;
}

/** The error a close code names (4000 + the HTTP status of an error kind), or undefined for a normal end. */
export function closeError(code: number, reason: string, vm: string): VmlinkError | undefined {
  if (code === 1000 || code === 1001) return undefined;
  const kind = (Object.keys(errorStatus) as ErrorKind[]).find((k) => 4000 + errorStatus[k].http === code);
  return new VmlinkError(kind ?? 'unavailable', reason || `the console of ${vm} closed (code ${code})`);
}

/**
 * Attaches this terminal to VM `vm`'s serial console until Ctrl-], the end of stdin (a pipe), or the console
 * closing; the terminal's mode is restored whatever happens.
 */
export async function attachConsole(
  client: HttpClient,
  vm: string,
  o: { readOnly?: boolean } = {},
): Promise<void> {
  const ws = await connect(client, vm, o.readOnly ? 'read' : undefined);
  const { asBuffer } = await import('../shared/http/ws-client.js');
  const stdin = process.stdin;
  const tty = stdin.isTTY === true;
  const say = (s: string) => process.stderr.write(`${tty ? '\r\n' : ''}[vmlink] ${s}${tty ? '\r\n' : '\n'}`);
  if (tty) stdin.setRawMode(true);
  let detached = false;
  const detach = () => {
    if (detached) return;
    detached = true;
    ws.close(1000, 'detached');
  };
  const onKeys = (d: Buffer) => {
    const at = d.indexOf(CONSOLE_DETACH_BYTE);
    const keys = at >= 0 ? d.subarray(0, at) : d;
    for (let i = 0; i < keys.length; i += CONSOLE_KEYS_FRAME_MAX_BYTES)
      ws.send(keys.subarray(i, i + CONSOLE_KEYS_FRAME_MAX_BYTES), { binary: true });
    if (at >= 0) detach();
  };
  try {
    return await new Promise<void>((resolve, reject) => {
      ws.on('message', (data, isBinary) => {
        const buf = asBuffer(data);
        if (isBinary) {
          process.stdout.write(buf);
          return;
        }
        const m = parseServerControl(buf.toString('utf8'));
        if (m?.type === 'hello')
          say(
            `attached to ${m.vm}'s serial console on ${m.host} (${m.mode === 'write' ? 'read-write' : 'read-only'}); detach with Ctrl-]`,
          );
        else if (m?.type === 'mode')
          say(`this console is ${m.mode === 'write' ? 'read-write' : 'read-only'} now`);
        else if (m?.type === 'notice') say(m.message);
      });
      ws.on('close', (code, reason) => {
        if (detached) say('detached');
        const err = detached ? undefined : closeError(code, reason.toString('utf8'), vm);
        if (err) reject(err);
        else resolve();
      });
      ws.on('error', (e) => reject(new UnavailableError(`the console stream broke: ${e.message}`)));
      stdin.on('data', onKeys);
      // A pipe that ends detaches (its writer has said all it had to).
      stdin.once('end', detach);
      stdin.resume();
    });
  } finally {
    stdin.off('data', onKeys);
    stdin.pause();
    if (tty) stdin.setRawMode(false);
  }
}

/** `vmlink ui`. */
export function addUiCommand(program: Command, api: Api): void {
  program
    .command('ui')
    .description(
      "the web console: its URL and a one-time login link (60 s); starts a TLS listener on 127.0.0.1 when the controller has none (trust the controller's CA in the browser: pki/ca.pem)",
    )
    .option('--port <port>', 'port of the listener it starts (default: any free one)')
    .option('--json', 'machine-readable output')
    .action(async (o: { port?: string; json?: boolean }) => {
      const client = api();
      const port = o.port === undefined ? undefined : Number(o.port);
      if (port !== undefined && (!Number.isInteger(port) || port < 1024 || port > 65_535))
        throw new VmlinkError('invalid', `--port must be 1024-65535, not ${o.port}`);
      const tcp = addressesOf(client).find((a) => a.startsWith('https://'));
      // Over TCP the console is where the CLI already talks; on the root socket, the controller names (or starts) it.
      const listener = tcp
        ? { url: new URL(tcp).origin, ca: process.env.VMLINK_CA ?? '', caFingerprint: undefined }
        : await client.post('/v1/ui/listener', port === undefined ? {} : { port }, UiListenerSchema);
      const link = await client.post('/v1/ui/links', {}, LoginLinkSchema);
      const r = {
        url: `${listener.url}/ui/`,
        loginUrl: `${listener.url}${link.path}`,
        expiresAt: link.expiresAt,
        ca: listener.ca,
        ...(listener.caFingerprint ? { caFingerprint: listener.caFingerprint } : {}),
      };
      emit(!!o.json, r, () =>
        [
          `web console: ${r.url}`,
          `login link (works once, until ${r.expiresAt}): ${r.loginUrl}`,
          `the browser must trust the controller's CA: ${r.ca}${r.caFingerprint ? ` (SHA-256 ${r.caFingerprint})` : ''}`,
        ].join('\n'),
      );
    });
}
