// The prefix reconcile (operator/prefix/reconcile.ts), one row per situation,
// on the in-memory API server (test/helpers/memkube.ts): each row builds its
// own small cluster, runs reconcilePrefix as the controller's queue would
// (until a pass writes nothing), and checks what the server holds, which
// Events were recorded and what was written. No root, no control plane:
// milliseconds a row. What only a real server shows (CRD schema and CEL,
// RBAC and the admission policies, the garbage collector's discovery, leader
// election between processes) stays in cluster.test.ts.
import test from 'ava';
import {
  ALLOCATIONS_ANNOTATION,
  CLEANUP_TIMEOUT_ANNOTATION,
  FINALIZER,
  SLICES_CONDITION,
  SLICES_FIELD_MANAGER,
  agentFieldManager,
} from '../../kube/api.js';
import { isConflict, paths } from '../../kube/client.js';
import { reconcilePrefix } from '../../operator/prefix/reconcile.js';
import { logOnFailure } from '../helpers/logring.js';
import { NS, World } from './memworld.js';

interface Row {
  title: string;
  /** the cluster before */
  given: (w: World) => Promise<void>;
  /** what changes (after the prefix has settled once) */
  when?: (w: World) => Promise<void>;
  then: (t: import('ava').ExecutionContext, w: World, writes: string[]) => void | Promise<void>;
  /** the prefix the row is about (default p) */
  prefix?: string;
}

const P64 = (extra: Record<string, unknown> = {}) => ({
  prefix: '2001:db8:9:10::/64',
  nodeSelector: { role: 'edge' },
  ...extra,
});

const rows: Row[] = [
  {
    title: 'a new prefix gets the finalizer, its allocation record, its agent ConfigMap and status',
    given: async (w) => {
      await w.node('n1', { role: 'edge' }, '198.51.100.1');
      await w.prefix('p', P64());
    },
    then: (t, w) => {
      const p = w.get('p')!;
      t.deepEqual(p.metadata.finalizers, [FINALIZER]);
      t.is(p.metadata.annotations![ALLOCATIONS_ANNOTATION], '{"n1":"2001:db8:9:10::/64"}');
      const cm = w.configMap('p')!;
      t.deepEqual(Object.keys(cm.data!).sort(), ['node.n1.json', 'prefix.json']);
      t.like(JSON.parse(cm.data!['node.n1.json']!), {
        prefix: '2001:db8:9:10::/64',
        listen: { address: '198.51.100.1', port: 25790 },
      });
      t.like(cm.metadata.ownerReferences![0], {
        kind: 'SixBed4Prefix',
        name: 'p',
        uid: p.metadata.uid,
        controller: true,
      });
      t.deepEqual(p.status!.nodes, [{ name: 'n1', prefix: '2001:db8:9:10::/64', listen: '198.51.100.1:25790' }]);
      t.is(p.status!.nodesReady, '0/1');
      t.like(w.cond('p', 'Ready'), { status: 'False', reason: 'AgentsNotReady' });
      t.like(w.cond('p', 'Degraded'), { status: 'False', reason: 'AsExpected' });
      t.like(w.cond('p', 'Progressing'), { status: 'True', reason: 'RollingOut' });
      t.deepEqual(w.reasons('p'), ['Normal Allocated', 'Normal Created']);
    },
  },
  {
    title: 'a settled prefix reconciled again writes nothing',
    given: async (w) => {
      await w.node('n1', { role: 'edge' }, '198.51.100.1');
      await w.prefix('p', P64());
    },
    when: async (w) => {
      await reconcilePrefix(w.deps, 'p');
    },
    then: (t, _w, writes) => t.deepEqual(writes, []),
  },
  {
    title: 'drift: a field of the ConfigMap changed by someone else is restored, with a Warning',
    given: async (w) => {
      await w.node('n1', { role: 'edge' }, '198.51.100.1');
      await w.prefix('p', P64());
    },
    when: async (w) => {
      await w.kube.mergePatch(
        paths.configMap(NS, 'sixbed4-agent-p'),
        { data: { 'node.n1.json': '{"prefix":"2001:db8:66::/64"}', extra: 'kept' } },
        'kubectl-edit',
      );
    },
    then: (t, w, writes) => {
      const cm = w.configMap('p')!;
      t.is(JSON.parse(cm.data!['node.n1.json']!).prefix, '2001:db8:9:10::/64');
      t.is(cm.data!.extra, 'kept', 'a field nobody renders is not drift');
      t.true(
        w.events.some(
          (e) =>
            e.type === 'Warning' &&
            e.reason === 'DriftRepaired' &&
            /data\.node\.n1\.json had been changed by someone else/.test(e.message),
        ),
      );
      t.deepEqual(
        writes,
        [`PATCH ${paths.configMap(NS, 'sixbed4-agent-p')}`, `PATCH ${paths.configMap(NS, 'sixbed4-agent-p')}`],
        'the edit, then one apply: nothing else',
      );
    },
  },
  {
    title: 'drift: the ConfigMap deleted is re-created, with a Warning',
    given: async (w) => {
      await w.node('n1', { role: 'edge' }, '198.51.100.1');
      await w.prefix('p', P64());
    },
    when: async (w) => {
      await w.kube.delete(paths.configMap(NS, 'sixbed4-agent-p'));
    },
    then: (t, w) => {
      t.truthy(w.configMap('p'));
      t.true(w.events.some((e) => e.type === 'Warning' && e.reason === 'Created' && /re-created/.test(e.message)));
    },
  },
  {
    title: 'a new node selected: the ConfigMap gains its share, the record its /64 (an update, not drift)',
    given: async (w) => {
      await w.node('n1', { r: 'y' }, '198.51.100.1');
      await w.prefix('p', { prefix: '2001:db8:48::/48', nodeSelector: { r: 'y' } });
    },
    when: async (w) => {
      await w.node('n2', { r: 'y' }, '198.51.100.2');
    },
    then: (t, w) => {
      t.deepEqual(Object.keys(w.configMap('p')!.data!).sort(), ['node.n1.json', 'node.n2.json', 'prefix.json']);
      t.deepEqual(Object.keys(JSON.parse(w.get('p')!.metadata.annotations![ALLOCATIONS_ANNOTATION]!)).sort(), [
        'n1',
        'n2',
      ]);
      t.true(w.reasons('p').includes('Normal Updated'));
      t.false(w.reasons('p').includes('Warning DriftRepaired'));
    },
  },
  {
    title:
      "the node selector changed: the share moves to the newly selected node; the old one's key goes (apply drops what it no longer sets)",
    given: async (w) => {
      await w.node('a', { role: 'edge' }, '198.51.100.1');
      await w.node('b', { role: 'other' }, '198.51.100.2');
      await w.prefix('p', P64());
    },
    when: async (w) => {
      await w.prefix('p', P64({ nodeSelector: { role: 'other' } }));
    },
    then: (t, w) => {
      t.deepEqual(Object.keys(w.configMap('p')!.data!).sort(), ['node.b.json', 'prefix.json']);
      t.deepEqual(
        w.get('p')!.status!.nodes!.map((n) => n.name),
        ['b'],
      );
      t.is(w.get('p')!.status!.observedGeneration, 2);
    },
  },
  {
    title:
      'a /48 split among nodes: a node deleted leaves status and ConfigMap but keeps its /64 in the record; re-created, it gets it back',
    given: async (w) => {
      for (const n of ['r1', 'r2', 'r3']) await w.node(n, { router: 'true' }, `198.51.100.2${n[1]}`);
      await w.prefix('p', { prefix: '2001:db8:48::/48', nodeSelector: { router: 'true' } });
    },
    when: async (w) => {
      const before = w.get('p')!.status!.nodes!.find((n) => n.name === 'r2')!.prefix;
      await w.kube.delete(paths.node('r2'));
      await w.settle('p');
      t2.set(w, before!);
      t2Mid.set(w, {
        cm: Object.keys(w.configMap('p')!.data!).sort(),
        nodes: w.get('p')!.status!.nodes!.map((n) => n.name),
      });
      await w.node('r2', { router: 'true' }, '198.51.100.22');
    },
    then: (t, w) => {
      t.deepEqual(t2Mid.get(w), { cm: ['node.r1.json', 'node.r3.json', 'prefix.json'], nodes: ['r1', 'r3'] });
      t.is(w.get('p')!.status!.nodes!.find((n) => n.name === 'r2')!.prefix, t2.get(w));
      t.is(new Set(w.get('p')!.status!.nodes!.map((n) => n.prefix)).size, 3);
    },
  },
  {
    title:
      'a /64 whose selector matches two nodes is Degraded (MultipleNodesSelected); one unlabelled, it recovers with an Event',
    given: async (w) => {
      await w.node('d1', { role: 'edge' }, '192.0.2.1');
      await w.node('d2', { role: 'edge' }, '192.0.2.2');
      await w.prefix('p', P64());
    },
    when: async (w) => {
      t2Mid.set(w, {
        degraded: w.cond('p', 'Degraded'),
        ready: w.cond('p', 'Ready'),
        nodes: w.get('p')!.status!.nodes ?? [],
      });
      await w.kube.mergePatch(paths.node('d2'), { metadata: { labels: { role: null } } });
    },
    then: (t, w) => {
      const mid = t2Mid.get(w) as {
        degraded: { status: string; reason: string; message: string };
        ready: { reason: string };
        nodes: unknown[];
      };
      t.like(mid.degraded, { status: 'True', reason: 'MultipleNodesSelected' });
      t.regex(mid.degraded.message, /matches 2 nodes \(d1, d2\)/);
      t.is(mid.ready.reason, 'NoNodes');
      t.deepEqual(mid.nodes, []);
      t.like(w.cond('p', 'Degraded'), { status: 'False' });
      t.deepEqual(w.get('p')!.status!.nodes, [{ name: 'd1', prefix: '2001:db8:9:10::/64', listen: '192.0.2.1:25790' }]);
      t.deepEqual(
        w.reasons('p').filter((r) => r.includes('MultipleNodes') || r.includes('Recovered')),
        ['Warning MultipleNodesSelected', 'Normal Recovered'],
      );
    },
  },
  {
    title: 'a prefix overlapping an older one is not served (PrefixOverlap)',
    given: async (w) => {
      await w.node('n1', { role: 'edge' }, '192.0.2.1');
      await w.prefix('old', P64());
      await w.settle('old');
      w.tick(1000);
      await w.prefix('p', { prefix: '2001:db8:9::/48', nodeSelector: { role: 'edge' } });
    },
    then: (t, w) => {
      t.like(w.cond('p', 'Degraded'), { status: 'True', reason: 'PrefixOverlap' });
      t.regex(w.cond('p', 'Degraded')!.message, /overlaps the older SixBed4Prefix old \(2001:db8:9:10::\/64\)/);
      t.deepEqual(w.get('p')!.status!.nodes ?? [], []);
      t.like(w.cond('old', 'Degraded'), { status: 'False' });
    },
  },
  {
    title:
      'a spec the API server would have refused (CEL bypassed) is Degraded with an Invalid reason, and no ConfigMap is written',
    given: async (w) => {
      await w.node('n1', { role: 'edge' }, '192.0.2.1');
      await w.prefix('p', P64({ prefix: 'not-a-prefix' }));
    },
    then: (t, w) => {
      const d = w.cond('p', 'Degraded')!;
      t.is(d.status, 'True');
      t.regex(d.reason, /^Invalid/);
      t.regex(d.message, /spec.prefix 'not-a-prefix' has no length/);
      t.is(w.configMap('p'), undefined);
      t.deepEqual(w.get('p')!.metadata.finalizers, [FINALIZER]);
      t.true(w.events.some((e) => e.type === 'Warning' && e.reason === d.reason));
    },
  },
  {
    title: 'a selected node without an address is Degraded (NoNodeAddress)',
    given: async (w) => {
      await w.node('n1', { role: 'edge' });
      await w.prefix('p', P64());
    },
    then: (t, w) => t.like(w.cond('p', 'Degraded'), { status: 'True', reason: 'NoNodeAddress' }),
  },
  {
    title:
      'an agent reporting ready makes the prefix Ready with its live peers; a report gone stale makes it NotReady with a Warning',
    given: async (w) => {
      await w.node('n1', { role: 'edge' }, '192.0.2.1');
      await w.prefix('p', P64());
    },
    when: async (w) => {
      await w.report('p', 'n1', { ready: true, livePeers: 3 });
      const r = await w.settle('p');
      t2Mid.set(w, { ready: w.cond('p', 'Ready'), status: w.get('p')!.status, requeue: r[0]!.requeueAfterMs });
      w.tick(300_001);
    },
    then: (t, w) => {
      const mid = t2Mid.get(w) as {
        ready: unknown;
        status: { nodesReady: string; livePeers: number; nodes: unknown[] };
        requeue: number;
      };
      t.like(mid.ready, { status: 'True', reason: 'AgentsReady' });
      t.is(mid.status.nodesReady, '1/1');
      t.is(mid.status.livePeers, 3);
      t.like(mid.status.nodes[0], { name: 'n1', ready: true, livePeers: 3 });
      t.true(mid.requeue <= 300_100, 'looks again when the report would go stale');
      t.like(w.cond('p', 'Ready'), { status: 'False', reason: 'AgentsNotReady' });
      t.regex(w.cond('p', 'Ready')!.message, /no report for over 300s/);
      t.deepEqual(
        w.reasons('p').filter((r) => /Ready/.test(r)),
        ['Normal Ready', 'Warning NotReady'],
      );
    },
  },
  {
    title: 'an agent that cannot bind its listen address makes the prefix Degraded with its reason',
    given: async (w) => {
      await w.node('n1', { role: 'edge' }, '192.0.2.1');
      await w.prefix('p', P64());
    },
    when: async (w) => {
      await w.report('p', 'n1', {
        ready: false,
        reason: 'ListenAddressUnavailable',
        message: 'bind: address not available',
      });
    },
    then: (t, w) => {
      t.like(w.cond('p', 'Degraded'), { status: 'True', reason: 'ListenAddressUnavailable' });
      t.regex(
        w.cond('p', 'Degraded')!.message,
        /node n1 cannot serve on 192\.0\.2\.1:25790: bind: address not available/,
      );
    },
  },
  {
    // Disabled as the API server stored prefixes created before Auto became the CRD's default (memkube applies no
    // CRD defaults).
    title:
      "spec.fastPath Disabled changed to Auto: the node's share says auto (an update); Disabled again, the share is as it was before",
    given: async (w) => {
      await w.node('n1', { role: 'edge' }, '192.0.2.1');
      await w.prefix('p', P64({ fastPath: 'Disabled' }));
    },
    when: async (w) => {
      const share = () => w.configMap('p')!.data!['node.n1.json']!;
      t2Mid.set(w, { before: share() });
      await w.prefix('p', P64({ fastPath: 'Auto' }));
      await w.settle('p');
      t2Mid.set(w, { ...(t2Mid.get(w) as object), auto: JSON.parse(share()).fastPath });
      await w.prefix('p', P64({ fastPath: 'Disabled' }));
    },
    then: (t, w) => {
      const mid = t2Mid.get(w) as { before: string; auto: string };
      t.is(mid.auto, 'auto');
      t.is(
        w.configMap('p')!.data!['node.n1.json'],
        mid.before,
        'byte for byte: the agent sees no change and keeps its router',
      );
      t.true(w.reasons('p').includes('Normal Updated'));
      t.like(w.cond('p', 'Degraded'), { status: 'False', reason: 'AsExpected' });
    },
  },
  {
    title:
      'an agent whose router cannot load the fast path of Required makes the prefix Degraded with its reason, and a Warning Event',
    given: async (w) => {
      await w.node('n1', { role: 'edge' }, '192.0.2.1');
      await w.prefix('p', P64({ fastPath: 'Required' }));
    },
    when: async (w) => {
      await w.report('p', 'n1', {
        ready: false,
        reason: 'FastPathUnavailable',
        message:
          'spec.fastPath Required: the kernel refused the BPF program (needs CAP_BPF and CAP_NET_ADMIN): bpf(BPF_MAP_CREATE) EPERM',
      });
    },
    then: (t, w) => {
      t.is(JSON.parse(w.configMap('p')!.data!['node.n1.json']!).fastPath, 'on');
      t.like(w.cond('p', 'Degraded'), { status: 'True', reason: 'FastPathUnavailable' });
      t.regex(
        w.cond('p', 'Degraded')!.message,
        /node n1 cannot serve on 192\.0\.2\.1:25790: spec\.fastPath Required: the kernel refused the BPF program \(needs CAP_BPF/,
      );
      t.like(w.get('p')!.status!.nodes![0], { name: 'n1', ready: false, reason: 'FastPathUnavailable' });
      t.true(w.reasons('p').includes('Warning FastPathUnavailable'));
    },
  },
  {
    title:
      'deleting a prefix no agent reported on removes the finalizer at once; the garbage collector takes the ConfigMap',
    given: async (w) => {
      await w.node('n1', { role: 'edge' }, '192.0.2.1');
      await w.prefix('p', P64());
    },
    when: async (w) => {
      await w.kube.delete(paths.prefix('p'));
    },
    then: (t, w) => {
      t.is(w.get('p'), undefined);
      t.is(w.configMap('p'), undefined);
      t.true(w.events.some((e) => e.reason === 'HostsReverted' && /no agent had configured a host/.test(e.message)));
    },
  },
  {
    title:
      'deleting waits for every reporting agent to revert (a node that is gone is not waited for), then the finalizer goes',
    given: async (w) => {
      for (const n of ['r1', 'r2', 'r3']) await w.node(n, { router: 'true' }, `198.51.100.2${n[1]}`);
      await w.prefix('p', { prefix: '2001:db8:48::/48', nodeSelector: { router: 'true' } });
      await w.settle('p');
      await w.report('p', 'r1', { ready: true });
      await w.report('p', 'r3', { ready: true });
    },
    when: async (w) => {
      await w.kube.delete(paths.prefix('p'));
      const r = await w.settle('p');
      const mid: Record<string, unknown> = {
        progressing: w.cond('p', 'Progressing'),
        ready: w.cond('p', 'Ready'),
        requeue: r.at(-1)!.requeueAfterMs,
        state: r.at(-1)!.state,
      };
      await w.report('p', 'r1', { ready: false, reverted: true });
      await w.settle('p');
      mid.after = w.cond('p', 'Progressing')!.message;
      mid.held = w.get('p') !== undefined;
      t2Mid.set(w, mid);
      await w.kube.delete(paths.node('r3'));
    },
    then: (t, w) => {
      const mid = t2Mid.get(w) as Record<string, unknown>;
      t.like(mid.progressing, {
        status: 'True',
        reason: 'RevertingHosts',
        message: 'waiting for r1, r3 to revert the host configuration',
      });
      t.like(mid.ready, { status: 'False', reason: 'Deleting' });
      t.is(mid.state, 'deleting');
      t.true((mid.requeue as number) <= 5000);
      t.is(mid.after, 'waiting for r3 to revert the host configuration');
      t.true(mid.held, 'still held by the finalizer');
      t.is(w.get('p'), undefined);
      t.true(w.events.some((e) => e.reason === 'HostsReverted' && /every node reverted/.test(e.message)));
    },
  },
  {
    title:
      'an agent that never reverts: the finalizer goes after the cleanup timeout (per prefix annotation), with a Warning',
    given: async (w) => {
      await w.node('n1', { role: 'edge' }, '192.0.2.1');
      await w.prefix('p', P64(), { [CLEANUP_TIMEOUT_ANNOTATION]: '30' });
      await w.settle('p');
      await w.report('p', 'n1', { ready: true });
    },
    when: async (w) => {
      await w.kube.delete(paths.prefix('p'));
      w.tick(29_000);
      await w.settle('p');
      t2Mid.set(w, { held: w.get('p') !== undefined, timedOut: w.reasons('p').includes('Warning CleanupTimedOut') });
      w.tick(1_000);
    },
    then: (t, w) => {
      t.deepEqual(t2Mid.get(w), { held: true, timedOut: false });
      t.is(w.get('p'), undefined);
      const e = w.events.find((x) => x.reason === 'CleanupTimedOut')!;
      t.is(e.type, 'Warning');
      t.regex(e.message, /gave up after 30s waiting for n1 to revert/);
    },
  },
  {
    title: 'a stale status entry (its node gone, its fields owned by an old agent) is removed by JSON patch',
    given: async (w) => {
      await w.node('n1', { role: 'edge' }, '192.0.2.1');
      await w.node('gone', { role: 'other' }, '192.0.2.9');
      await w.prefix('p', P64());
      await w.settle('p');
      // an agent of an older version wrote its own entry into the status
      await w.kube.apply(
        paths.prefixStatus('p'),
        {
          apiVersion: 'sixbed4.io/v1alpha1',
          kind: 'SixBed4Prefix',
          metadata: { name: 'p' },
          status: { nodes: [{ name: 'gone', ready: true, lastReport: '2026-03-01T09:59:00Z' }] },
        },
        agentFieldManager('gone'),
      );
    },
    when: async (w) => {
      await w.kube.delete(paths.node('gone'));
    },
    then: (t, w, writes) => {
      t.deepEqual(
        w.get('p')!.status!.nodes!.map((n) => n.name),
        ['n1'],
      );
      t.true(writes.includes(`PATCH ${paths.prefixStatus('p')}`));
      t.true(
        w.kube.writes.some((x) => x.patch === 'json' && x.path === paths.prefixStatus('p') && x.status === 200),
        'removed by JSON patch, not by the apply',
      );
    },
  },
  {
    title: 'the status apply keeps what the slice allocator applied under its own field manager',
    given: async (w) => {
      await w.node('n1', { role: 'edge' }, '192.0.2.1');
      await w.prefix('p', P64());
      await w.settle('p');
      await w.kube.apply(
        paths.prefixStatus('p'),
        {
          apiVersion: 'sixbed4.io/v1alpha1',
          kind: 'SixBed4Prefix',
          metadata: { name: 'p' },
          status: {
            slices: { allocated: 2, pending: 0, namespaces: [] },
            conditions: [
              {
                type: SLICES_CONDITION,
                status: 'True',
                reason: 'AllAllocated',
                message: 'm',
                lastTransitionTime: '2026-03-01T10:00:00Z',
              },
            ],
          },
        },
        SLICES_FIELD_MANAGER,
      );
    },
    when: async (w) => {
      await w.node('n2', { role: 'other' }, '192.0.2.2');
      await w.prefix('p', P64({ nodeSelector: { role: 'other' } }));
    },
    then: (t, w) => {
      const st = w.get('p')!.status!;
      t.deepEqual(
        st.nodes!.map((n) => n.name),
        ['n2'],
      );
      t.is(st.slices?.allocated, 2);
      t.deepEqual(st.conditions!.map((c) => c.type).sort(), ['Degraded', 'Progressing', 'Ready', SLICES_CONDITION]);
    },
  },
  {
    title: 'a lost race on the allocation record is a 409 (retried by the queue), never a double allocation',
    given: async (w) => {
      await w.node('n1', { r: 'y' }, '192.0.2.1');
      await w.prefix('p', { prefix: '2001:db8:48::/48', nodeSelector: { r: 'y' } });
    },
    when: async (w) => {
      await w.node('n2', { r: 'y' }, '192.0.2.2');
      // another writer changes the prefix between the cache read and the operator's patch
      let raced = false;
      w.kube.before = async (method, path) => {
        if (raced || method !== 'PATCH' || path !== paths.prefix('p')) return;
        raced = true;
        w.kube.before = undefined;
        await w.kube.mergePatch(paths.prefix('p'), { metadata: { labels: { touched: 'yes' } } }, 'someone');
      };
      const stale = w.get('p')!;
      const deps = { ...w.deps, prefixes: { get: () => stale, list: () => [stale] } };
      const err = await reconcilePrefix(deps, 'p').then(
        () => undefined,
        (e: unknown) => e,
      );
      t2Mid.set(w, { conflict: isConflict(err) });
    },
    then: (t, w) => {
      t.deepEqual(t2Mid.get(w), { conflict: true });
      const rec = JSON.parse(w.get('p')!.metadata.annotations![ALLOCATIONS_ANNOTATION]!) as Record<string, string>;
      t.deepEqual(Object.keys(rec).sort(), ['n1', 'n2']);
      t.is(new Set(Object.values(rec)).size, 2);
    },
  },
  {
    title: 'a prefix that is gone from the cache is left alone',
    given: async () => {},
    then: async (t, w, writes) => {
      t.deepEqual(await reconcilePrefix(w.deps, 'p'), {});
      t.deepEqual(writes, []);
    },
  },
];

/** per-row values a `when` saw midway (the row's `then` checks them) */
const t2 = new WeakMap<World, string>();
const t2Mid = new WeakMap<World, unknown>();

for (const row of rows) {
  test(row.title, async (t) => {
    const w = new World();
    logOnFailure(t, () => ({
      operator: w.log.tail(),
      writes: w.kube.writes.map((x) => `${x.verb} ${x.path} ${x.status} ${x.fieldManager ?? ''}`),
    }));
    const name = row.prefix ?? 'p';
    await row.given(w);
    if (w.get(name)) await w.settle(name);
    // what the row's change and the reconciles after it wrote
    const writes = w.mark();
    if (row.when) await row.when(w);
    if (w.get(name)) await w.settle(name);
    await row.then(t, w, writes());
  });
}
