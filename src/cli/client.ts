import type { z } from 'zod';
import { TaskAcceptedSchema, TaskViewSchema } from '../controller/wire.js';
import { BadResponseError, fromErrorBody, UnavailableError } from '../shared/errors.js';
import { HttpClient } from '../shared/http/client.js';
import { sleep } from '../shared/time.js';

/** The longest pause between two looks at a running task. */
const TASK_POLL_MAX_MS = 250;

/** The CLI's client of the controller API. */
export function controllerClient(socket: string, timeoutMs?: number): HttpClient {
  const address = /^https?:\/\//.test(socket) ? socket : `unix://${socket}`;
  return new HttpClient(address, {
    name: 'the controller',
    protocol: 'api',
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
    ...(process.env.VMLINK_TOKEN ? { token: process.env.VMLINK_TOKEN } : {}),
  });
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
