// The operator process's controller (operator/controller.ts: informers, the
// work queue, requeues, the Event recorder, the slice allocator beside it),
// one row per situation, on the in-memory API server and its watches: what
// reconcile-table.test.ts checks of one reconcile, here reached the way the
// operator reaches it, through watch events and timers. Real time, but
// milliseconds a row.
import test, { type ExecutionContext } from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLEANUP_TIMEOUT_ANNOTATION, FINALIZER, type KubeObject } from '../../kube/api.js';
import { paths } from '../../kube/client.js';
import { startOperator, type Operator } from '../../operator/controller.js';
import { until } from '../helpers/wait.js';
import { logOnFailure, ringLogger } from '../helpers/logring.js';
import { AGENT_DAEMONSET, NS, World } from './memworld.js';

function operator(w: World, identity: string): Operator {
  return startOperator({
    kubeConfig: w.kube.kc,
    kube: w.kube,
    informers: (_k, path, opts) => w.kube.informer(path, opts),
    namespace: NS,
    agentDaemonSet: AGENT_DAEMONSET,
    identity,
    cleanupTimeoutMs: 120_000,
    staleAfterMs: 300_000,
    resyncMs: 60_000,
    log: ringLogger(w.log, identity),
  });
}

/** A world on the wall clock (the controller reads it) with an operator running on it. */
function world(t: ExecutionContext): { w: World; start: (identity?: string) => Operator } {
  const w = new World();
  w.kube.now = () => new Date();
  w.now = new Date();
  const ops: Operator[] = [];
  t.teardown(async () => {
    for (const o of ops) await o.stop();
  });
  logOnFailure(t, () => ({
    operator: w.log.tail(),
    writes: w.kube.writes.map((x) => `${x.verb} ${x.path} ${x.status}`),
  }));
  return {
    w,
    start: (identity = 'op-a') => {
      const o = operator(w, identity);
      ops.push(o);
      return o;
    },
  };
}

const events = (w: World, name: string) =>
  w.kube
    .select('events', 'default')
    .filter((e) => (e as unknown as { involvedObject: { name: string } }).involvedObject.name === name) as unknown as {
    type: string;
    reason: string;
    message: string;
  }[];
const P64 = { prefix: '2001:db8:9:10::/64', nodeSelector: { role: 'edge' } };

interface Row {
  title: string;
  run: (t: ExecutionContext, x: ReturnType<typeof world>) => Promise<void>;
}

/** A settled prefix, restarted: what the new operator wrote. */
async function restart(w: World, start: (identity?: string) => Operator): Promise<string[]> {
  const first = start('op-a');
  await until('status', () => w.get('p')?.status?.nodes?.length === 1);
  await sleep(400); // the slice status waits for a short delay
  await first.stop();
  const at = w.kube.writes.length;
  start('op-b');
  await sleep(500);
  return w.kube.writes.slice(at).map((x) => `${x.verb} ${x.path}`);
}

const rows: Row[] = [
  {
    title: 'a prefix created while the operator runs gets its finalizer, ConfigMap, status and Events',
    run: async (t, { w, start }) => {
      await w.node('n1', { role: 'edge' }, '198.51.100.1');
      start();
      await w.prefix('p', P64);
      await until('status', () => w.get('p')?.status?.nodes?.length === 1);
      t.deepEqual(w.get('p')!.metadata.finalizers, [FINALIZER]);
      t.truthy(w.configMap('p'));
      await until('Events written to the API', () => events(w, 'p').some((e) => e.reason === 'Created'));
      t.true(events(w, 'p').some((e) => e.reason === 'Allocated'));
    },
  },
  {
    title: 'a node relabelled: the watch moves the share',
    run: async (t, { w, start }) => {
      await w.node('a', { role: 'edge' }, '198.51.100.1');
      await w.node('b', {}, '198.51.100.2');
      await w.prefix('p', P64);
      start();
      await until('a serves', () => w.configMap('p')?.data?.['node.a.json']);
      await w.kube.mergePatch(paths.node('a'), { metadata: { labels: { role: null } } });
      await w.kube.mergePatch(paths.node('b'), { metadata: { labels: { role: 'edge' } } });
      await until('b serves', () => w.configMap('p')?.data?.['node.b.json'] && !w.configMap('p')!.data!['node.a.json']);
      t.deepEqual(
        w.get('p')!.status!.nodes!.map((n) => n.name),
        ['b'],
      );
    },
  },
  {
    title: "an agent's report in its Lease makes the prefix Ready",
    run: async (t, { w, start }) => {
      await w.node('n1', { role: 'edge' }, '198.51.100.1');
      await w.prefix('p', P64);
      start();
      await until('status', () => w.get('p')?.status?.nodes?.length === 1);
      await w.report('p', 'n1', { ready: true, livePeers: 2 });
      await until('Ready', () => w.cond('p', 'Ready')?.status === 'True');
      t.is(w.get('p')!.status!.livePeers, 2);
    },
  },
  {
    title: 'an edit of the agent ConfigMap seen by the watch is undone',
    run: async (t, { w, start }) => {
      await w.node('n1', { role: 'edge' }, '198.51.100.1');
      await w.prefix('p', P64);
      start();
      const good = await until('the ConfigMap', () => w.configMap('p')?.data?.['node.n1.json']);
      await w.kube.mergePatch(
        paths.configMap(NS, 'sixbed4-agent-p'),
        { data: { 'node.n1.json': '{}' } },
        'kubectl-edit',
      );
      await until('restored', () => w.configMap('p')?.data?.['node.n1.json'] === good);
      await until('a DriftRepaired Event', () => events(w, 'p').some((e) => e.reason === 'DriftRepaired'));
      t.pass();
    },
  },
  {
    title:
      'a deleted prefix whose agent never reverts goes after its cleanup timeout (a requeue timer), with a Warning',
    run: async (t, { w, start }) => {
      await w.node('n1', { role: 'edge' }, '198.51.100.1');
      await w.prefix('p', P64, { [CLEANUP_TIMEOUT_ANNOTATION]: '0.3' });
      start();
      await until('status', () => w.get('p')?.status?.nodes?.length === 1);
      await w.report('p', 'n1', { ready: true });
      await w.kube.delete(paths.prefix('p'));
      const t0 = Date.now();
      await until('the prefix gone', () => !w.get('p'));
      // deletionTimestamp has whole seconds, as on a real server: up to a second early
      t.true(Date.now() - t0 < 2000);
      await until('CleanupTimedOut', () =>
        events(w, 'p').some((e) => e.type === 'Warning' && e.reason === 'CleanupTimedOut'),
      );
      await until('the ConfigMap collected', () => !w.configMap('p'));
    },
  },
  {
    title: 'an operator restarted on a settled cluster writes nothing at all',
    run: async (t, { w, start }) => {
      await w.node('n1', { role: 'edge' }, '198.51.100.1');
      await w.prefix('p', P64);
      const before = JSON.stringify(
        w.kube.select('sixbed4prefixes').map((o: KubeObject) => o.metadata.resourceVersion),
      );
      t.deepEqual(await restart(w, start), []);
      t.not(
        JSON.stringify(w.kube.select('sixbed4prefixes').map((o: KubeObject) => o.metadata.resourceVersion)),
        before,
        'the first operator did write',
      );
    },
  },
  {
    // A namespace's standing problem (here SlicesDisabled) is told once per process: a new leader repeats its Warning
    // once, as a reminder that it still stands (the allocator's memory of what it reported is per process), and
    // writes nothing else.
    title:
      'an operator restarted on a settled cluster with a namespace whose problem stands repeats its Warning once and writes nothing else',
    run: async (t, { w, start }) => {
      await w.node('n1', { role: 'edge' }, '198.51.100.1');
      await w.prefix('p', P64);
      await w.kube.create(paths.namespaces, {
        apiVersion: 'v1',
        kind: 'Namespace',
        metadata: { name: 'shop', labels: { 'sixbed4.io/prefix': 'p' } },
      });
      const writes = await restart(w, start);
      // Events about a Namespace (cluster-scoped) live in `default`.
      t.deepEqual(writes, ['POST /api/v1/namespaces/default/events']);
      const warned = events(w, 'shop');
      t.is(warned.length, 2, "the first leader's Warning and the new leader's reminder");
      t.true(
        warned.every((e) => e.type === 'Warning' && e.reason === 'SlicesDisabled'),
        JSON.stringify(warned),
      );
    },
  },
];

for (const row of rows) test(row.title, async (t) => row.run(t, world(t)));
