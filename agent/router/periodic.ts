// The router's periodic tasks (draining the fast path's seen peers, re-reading the local table, reporting live
// peers, the statistics line) run beside the data path, and none of them is worth the data path: a task that throws
// (or whose promise rejects) is caught here, logged the first time (a task failing every second would otherwise
// fill the log), counted for the metrics, and runs again at its next tick while forwarding goes on.

/** Failures of periodic tasks, by task name: read by the metrics (sixbed4_router_task_failures_total). */
export class TaskFailures {
  private readonly counts = new Map<string, number>();
  constructor(private readonly log?: { error(message: string): unknown }) {}

  record(task: string, err: unknown): void {
    const n = (this.counts.get(task) ?? 0) + 1;
    this.counts.set(task, n);
    if (n === 1) {
      const message = err instanceof Error ? err.message : String(err);
      this.log?.error(
        `periodic task ${task} failed (${message}); it runs again at its next tick, forwarding goes on, and further failures are only counted (sixbed4_router_task_failures_total)`,
      );
    }
  }

  snapshot(): Record<string, number> {
    return Object.fromEntries(this.counts);
  }
}

/** Runs task every ms, its failures going to failures; returns the function that stops it. */
export function every(task: string, ms: number, run: () => unknown, failures: TaskFailures): () => void {
  const t = setInterval(() => guarded(task, run, failures), ms);
  t.unref();
  return () => clearInterval(t);
}

/** Runs one turn of a task, a throw or a rejection going to failures. */
export function guarded(task: string, run: () => unknown, failures: TaskFailures): void {
  try {
    const r = run();
    if (r instanceof Promise) r.catch((err: unknown) => failures.record(task, err));
  } catch (err) {
    failures.record(task, err);
  }
}
