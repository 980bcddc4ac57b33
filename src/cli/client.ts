import { readFileSync } from 'node:fs';
import type { z } from 'zod';
import { TaskAcceptedSchema, TaskViewSchema } from '../controller/wire.js';
import { BadResponseError, fromErrorBody, UnavailableError, VmlinkError } from '../shared/errors.js';
import { HttpClient } from '../shared/http/client.js';
import { sleep } from '../shared/time.js';
import { CONTROLLER_NAME, peerMismatch } from '../shared/tls.js';

/** The longest pause between two looks at a running task. */
const TASK_POLL_MAX_MS = 250;

/**
 * The CLI's client of the controller API: its unix socket, or its TCP listener over TLS (`https://`), whose
 * certificate must chain to the CA in `VMLINK_CA` and name the controller; `VMLINK_TOKEN` travels inside TLS only.
 */
export function controllerClient(socket: string, timeoutMs?: number): HttpClient {
  if (socket.startsWith('http://'))
    throw new VmlinkError(
      'invalid',
      `the controller's TCP API speaks only TLS: use https://${socket.slice('http://'.length)} with VMLINK_CA`,
    );
  const tcp = socket.startsWith('https://');
  const address = tcp ? socket : `unix://${socket}`;
  const caFile = process.env.VMLINK_CA;
  if (tcp && !caFile)
    throw new VmlinkError(
      'invalid',
      "set VMLINK_CA to the controller's CA certificate (pki/ca.pem beside its database) to reach it over TLS",
    );
  return new HttpClient(address, {
    name: 'the controller',
    protocol: 'api',
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
    ...(process.env.VMLINK_TOKEN ? { token: process.env.VMLINK_TOKEN } : {}),
    ...(tcp
      ? {
          tls: {
            ca: readCa(caFile!),
            checkPeer: (c) => peerMismatch(c, { role: 'controller', name: CONTROLLER_NAME }),
          },
        }
      : {}),
  });
}

function readCa(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new VmlinkError('invalid', `cannot read VMLINK_CA ${file}: ${(e as Error).message}`);
  }
}

/** Explains how to start a controller that cannot be reached. */
export function explainUnavailable(e: unknown, socket: string): unknown {
  if (e instanceof UnavailableError && /ENOENT|ECONNREFUSED/.test(e.message)) {
    return new UnavailableError(
      `the controller is not running at ${socket}: start it with \`vmlink daemon --detach\` (npm run quickstart does)`,
    );
  }
  return e;
}

/**
 * Starts a task with POST `path`, prints its progress as it comes, and returns its result parsed with `schema`;
 * Ctrl-C cancels it.
 */
export async function runTask<S extends z.ZodType>(
  client: HttpClient,
  path: string,
  body: unknown,
  schema: S,
  print: (line: string) => void,
): Promise<z.output<S>> {
  const { taskId } = await client.post(path, body, TaskAcceptedSchema);
  let since = 0;
  // Quick tasks (a no-op apply, a plan) end within tens of milliseconds: ask again soon, then back off to 250 ms.
  let pause = 10;
  const onInt = () => {
    print('cancelling (the task stops at its next step)...');
    void client.delete(`/v1/tasks/${taskId}`, TaskViewSchema).catch(() => {});
  };
  process.on('SIGINT', onInt);
  try {
    for (;;) {
      const t = await client.get(`/v1/tasks/${taskId}?since=${since}`, TaskViewSchema);
      for (const line of t.progress) print(line);
      since = t.progressFrom + t.progress.length;
      if (t.state === 'succeeded') {
        const r = schema.safeParse(t.result);
        if (r.success) return r.data;
        const issue = r.error.issues[0]!;
        throw new BadResponseError(
          `the controller's ${path} task returned a result that breaks the contract: ${issue.path.join('.') || '(result)'}: ${issue.message}`,
          path,
        );
      }
      if (t.state !== 'running') {
        throw fromErrorBody({ error: t.error ?? { kind: 'internal', message: `task ${t.state}` } });
      }
      await sleep(pause);
      pause = Math.min(TASK_POLL_MAX_MS, pause * 2);
    }
  } finally {
    process.off('SIGINT', onInt);
  }
}
