// The router's periodic tasks (periodic.ts): a task that throws, or whose promise rejects, is counted and logged
// once, runs again at its next tick, and never reaches the process as an uncaught exception or rejection (which
// would end the router, as an ENOSPC from the fast path's drain once did).
import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { every, guarded, TaskFailures } from '../../agent/router/periodic.js';

const logger = () => {
  const lines: string[] = [];
  return {
    lines,
    log: {
      error: (m: string) => {
        lines.push(m);
      },
    },
  };
};

test('a throwing task is counted each time, logged once, and keeps its schedule', async (t) => {
  const { lines, log } = logger();
  const failures = new TaskFailures(log);
  let runs = 0;
  const stop = every(
    'fast-path-seen',
    5,
    () => {
      runs++;
      throw new Error('bpf(BPF_MAP_LOOKUP_AND_DELETE_BATCH) ENOSPC');
    },
    failures,
  );
  // Three turns, however long a loaded machine takes to give them (the deadline only catches a schedule that died).
  for (const until = Date.now() + 30_000; runs < 3 && Date.now() < until;) await sleep(10);
  stop();
  t.true(runs >= 3, `${runs} runs: the task kept its schedule after throwing`);
  t.is(failures.snapshot()['fast-path-seen'], runs);
  t.is(lines.length, 1);
  t.regex(lines[0]!, /periodic task fast-path-seen failed \(bpf\(BPF_MAP_LOOKUP_AND_DELETE_BATCH\) ENOSPC\)/);
});

test('a rejected promise is a failure of its task, not an unhandled rejection', async (t) => {
  const failures = new TaskFailures();
  let unhandled = 0;
  const onUnhandled = () => {
    unhandled++;
  };
  process.on('unhandledRejection', onUnhandled);
  try {
    guarded('local-table', () => Promise.reject(new Error('no ip')), failures);
    guarded(
      'local-table',
      async () => {
        throw new Error('again');
      },
      failures,
    );
    guarded('stats', () => 'fine', failures);
    await sleep(20);
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
  t.is(unhandled, 0);
  t.deepEqual(failures.snapshot(), { 'local-table': 2 });
});

test('tasks that fail are logged once each, by name', (t) => {
  const { lines, log } = logger();
  const failures = new TaskFailures(log);
  for (let i = 0; i < 3; i++) {
    failures.record('a', new Error('x'));
    failures.record('b', 'y');
  }
  t.deepEqual(failures.snapshot(), { a: 3, b: 3 });
  t.is(lines.length, 2);
});
