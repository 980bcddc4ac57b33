import { randomUUID } from 'node:crypto';
import { type ErrorBody, NotFoundError, toErrorBody, VmlinkError } from '../shared/errors.js';
import { FINISHED_TASKS_KEPT } from '../shared/limits.js';
import { log } from '../shared/log.js';

/** A long operation's state as the API returns it. */
export interface TaskView {
  id: string;
  kind: string;
  state: 'running' | 'succeeded' | 'failed' | 'cancelled';
  startedAt: string;
  finishedAt?: string;
  /** Progress lines, oldest first; `progressFrom` says where this slice starts. */
  progress: string[];
  progressFrom: number;
  result?: unknown;
  error?: ErrorBody['error'];
}

/** Handed to a task's body: report progress, honour cancellation. */
export interface TaskContext {
  progress: (message: string) => void;
  signal: AbortSignal;
}

interface Task {
  view: Omit<TaskView, 'progress' | 'progressFrom'>;
  lines: string[];
  abort: AbortController;
  done: Promise<void>;
}

/** Runs long operations (apply, destroy, verify, lab) in the background: 202 + task id, progress, cancellation. */
export class TaskManager {
  private readonly tasks = new Map<string, Task>();

  /** Starts `body` as a task and returns its id at once. */
  start(kind: string, body: (ctx: TaskContext) => Promise<unknown>): string {
    const id = randomUUID();
    const abort = new AbortController();
    const task: Task = {
      view: { id, kind, state: 'running', startedAt: new Date().toISOString() },
      lines: [],
      abort,
      done: Promise.resolve(),
    };
    const ctx: TaskContext = {
      progress: (m) => {
        task.lines.push(m);
        log.info({ task: id, kind }, m);
      },
      signal: abort.signal,
    };
    task.done = body(ctx)
      .then(
        (result) => {
          task.view.state = 'succeeded';
          task.view.result = result;
        },
        (err: unknown) => {
          task.view.state = abort.signal.aborted ? 'cancelled' : 'failed';
          task.view.error = toErrorBody(err).error;
          // Cancelled by the controller itself (it lost the active role): the reason leads, the body's last words follow.
          const why: unknown = abort.signal.reason;
          if (abort.signal.aborted && why instanceof VmlinkError && why !== err)
            task.view.error = {
              ...toErrorBody(why).error,
              message: `${why.message}; the task stopped: ${(err as Error)?.message ?? String(err)}`,
            };
        },
      )
      .finally(() => {
        task.view.finishedAt = new Date().toISOString();
      });
    this.tasks.set(id, task);
    this.prune();
    return id;
  }

  /** The task's state with progress lines from index `since`. */
  get(id: string, since = 0): TaskView {
    const t = this.tasks.get(id);
    if (!t) throw new NotFoundError('task', id);
    return { ...t.view, progress: t.lines.slice(since), progressFrom: since };
  }

  /** The kind of task `id`, or undefined when there is no such task. */
  kind(id: string): string | undefined {
    return this.tasks.get(id)?.view.kind;
  }

  /** Requests cancellation; the task stops at its next step boundary. */
  cancel(id: string): TaskView {
    const t = this.tasks.get(id);
    if (!t) throw new NotFoundError('task', id);
    t.abort.abort();
    return this.get(id);
  }

  /**
   * Cancels every running task with `reason` (this controller is no longer the active one); resolves, with their
   * ids, once each has stopped.
   */
  async cancelAll(reason: VmlinkError): Promise<string[]> {
    const running = [...this.tasks.values()].filter((t) => t.view.state === 'running');
    for (const t of running) t.abort.abort(reason);
    await Promise.all(running.map((t) => t.done));
    return running.map((t) => t.view.id);
  }

  /** Resolves when the task has finished (for tests and shutdown). */
  async wait(id: string): Promise<TaskView> {
    const t = this.tasks.get(id);
    if (!t) throw new NotFoundError('task', id);
    await t.done;
    return this.get(id);
  }

  /** Resolves when task `id` has ended, with its state, error kind and run time (the audit trail records them). */
  async ended(
    id: string,
  ): Promise<{ state: 'succeeded' | 'failed' | 'cancelled'; errorKind?: string; durationMs: number }> {
    const v = await this.wait(id);
    const state = v.state === 'running' ? 'failed' : v.state;
    const durationMs = Date.parse(v.finishedAt ?? new Date().toISOString()) - Date.parse(v.startedAt);
    return { state, ...(v.error ? { errorKind: v.error.kind } : {}), durationMs };
  }

  /** Whether any task of one of `kinds` is running (mutating tasks are serialised). */
  running(kinds: readonly string[]): TaskView | undefined {
    for (const t of this.tasks.values())
      if (t.view.state === 'running' && kinds.includes(t.view.kind)) return this.get(t.view.id);
    return undefined;
  }

  private prune(): void {
    // Finished tasks stay for clients that poll late; the oldest go first.
    const finished = [...this.tasks.values()].filter((t) => t.view.state !== 'running');
    for (const t of finished.slice(0, Math.max(0, finished.length - FINISHED_TASKS_KEPT)))
      this.tasks.delete(t.view.id);
  }
}
