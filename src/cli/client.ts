import type { TaskView } from '../controller/tasks.js';
import type { TaskAccepted } from '../controller/wire.js';
import { UnavailableError, VmlinkError } from '../shared/errors.js';
import { HttpClient } from '../shared/http/client.js';

/** The CLI's client of the controller API. */
export function controllerClient(socket: string): HttpClient {
  const address = /^https?:\/\//.test(socket) ? socket : `unix://${socket}`;
  return new HttpClient(address, {
    name: 'the controller',
    protocol: 'api',
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

/** Starts a task with POST `path`, prints its progress as it comes, and returns its result; Ctrl-C cancels it. */
export async function runTask<T>(
  client: HttpClient,
  path: string,
  body: unknown,
  print: (line: string) => void,
): Promise<T> {
  const { taskId } = await client.post<TaskAccepted>(path, body);
  let since = 0;
  const onInt = () => {
    print('cancelling (the task stops at its next step)...');
    void client.delete(`/v1/tasks/${taskId}`).catch(() => {});
  };
  process.on('SIGINT', onInt);
  try {
    for (;;) {
      const t = await client.get<TaskView>(`/v1/tasks/${taskId}?since=${since}`);
      for (const line of t.progress) print(line);
      since = t.progressFrom + t.progress.length;
      if (t.state === 'succeeded') return t.result as T;
      if (t.state !== 'running') {
        const e = t.error ?? { kind: 'internal' as const, message: `task ${t.state}` };
        throw new VmlinkError(e.kind, e.message);
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  } finally {
    process.off('SIGINT', onInt);
  }
}
