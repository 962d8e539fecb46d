// The in-memory API server's own rules, each as the real one answers (the
// table tests of the controllers are only as good as these).
import test from 'ava';
import { isAlreadyExists, isConflict, isNotFound, paths } from '../../kube/client.js';
import type { KubeObject, SixBed4Prefix } from '../../kube/api.js';
import { MemKube } from './memkube.js';

const prefix = (name: string, spec: Record<string, unknown> = { prefix: '2001:db8:9:10::/64' }) => ({
  apiVersion: 'sixbed4.io/v1alpha1',
  kind: 'SixBed4Prefix',
  metadata: { name },
  spec,
});

test('a write with a stale resourceVersion is a 409; a second create of a name is AlreadyExists', async (t) => {
  const k = new MemKube();
  const made = await k.create<SixBed4Prefix>(paths.prefixes, prefix('p'));
  await k.mergePatch(paths.prefix('p'), { metadata: { labels: { a: 'b' } } });
  const stale = await k
    .mergePatch(paths.prefix('p'), { metadata: { resourceVersion: made.metadata.resourceVersion, labels: { c: 'd' } } })
    .catch((e: unknown) => e);
  t.true(isConflict(stale));
  t.true(isAlreadyExists(await k.create(paths.prefixes, prefix('p')).catch((e: unknown) => e)));
  t.true(isNotFound(await k.mergePatch(paths.prefix('q'), {}).catch((e: unknown) => e)));
});

test("status is its subresource's: writes to the object leave it, writes to /status leave the rest; generation follows the spec", async (t) => {
  const k = new MemKube();
  await k.create(paths.prefixes, { ...prefix('p'), status: { nodesReady: 'ignored' } });
  t.is(k.peek<SixBed4Prefix>(paths.prefix('p'))!.status, undefined);
  await k.mergePatch(paths.prefixStatus('p'), { status: { nodesReady: '1/1' }, spec: { prefix: '2001:db8::/48' } });
  await k.mergePatch(paths.prefix('p'), { status: { nodesReady: '0/1' }, metadata: { labels: { a: 'b' } } });
  const p = k.peek<SixBed4Prefix>(paths.prefix('p'))!;
  t.is(p.status!.nodesReady, '1/1');
  t.is(p.spec.prefix, '2001:db8:9:10::/64');
  t.is(p.metadata.generation, 1, 'labels and status do not count');
  await k.mergePatch(paths.prefix('p'), { spec: { prefix: '2001:db8:9:11::/64' } });
  t.is(k.peek<SixBed4Prefix>(paths.prefix('p'))!.metadata.generation, 2);
});

test('a no-op write keeps the resourceVersion', async (t) => {
  const k = new MemKube();
  const made = await k.create(paths.prefixes, prefix('p'));
  const again = await k.mergePatch(paths.prefix('p'), { spec: { prefix: '2001:db8:9:10::/64' } });
  t.is(again.metadata.resourceVersion, made.metadata.resourceVersion);
});

test('a finalizer holds a deleted object (deletionTimestamp) until it is removed; then the garbage collector takes its dependents', async (t) => {
  const k = new MemKube();
  const p = await k.create(paths.prefixes, { ...prefix('p'), metadata: { name: 'p', finalizers: ['x/y'] } });
  await k.create(paths.configMaps('ns'), {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: {
      name: 'c',
      ownerReferences: [{ apiVersion: 'sixbed4.io/v1alpha1', kind: 'SixBed4Prefix', name: 'p', uid: p.metadata.uid! }],
    },
  });
  await k.delete(paths.prefix('p'));
  t.truthy(k.peek(paths.prefix('p'))!.metadata.deletionTimestamp);
  t.truthy(k.peek(paths.configMap('ns', 'c')));
  const added = await k
    .mergePatch(paths.prefix('p'), { metadata: { finalizers: ['x/y', 'x/z'] } })
    .catch((e: unknown) => e);
  t.is((added as { status: number }).status, 422, 'no new finalizers on an object being deleted');
  await k.jsonPatch(paths.prefix('p'), [
    { op: 'test', path: '/metadata/finalizers/0', value: 'x/y' },
    { op: 'remove', path: '/metadata/finalizers/0' },
  ]);
  t.is(k.peek(paths.prefix('p')), undefined);
  t.is(k.peek(paths.configMap('ns', 'c')), undefined);
});

test('a delete with a UID precondition of another object is a 409; a failed JSON patch test is a 422', async (t) => {
  const k = new MemKube();
  await k.create(paths.prefixes, prefix('p'));
  const e = await k
    .request('DELETE', paths.prefix('p'), { body: { preconditions: { uid: 'other' } } })
    .catch((x: unknown) => x);
  t.true(isConflict(e));
  const j = await k
    .jsonPatch(paths.prefix('p'), [{ op: 'test', path: '/spec/prefix', value: 'no' }])
    .catch((x: unknown) => x);
  t.is((j as { status: number }).status, 422);
});

test("server-side apply: a manager's fields it stops applying go, unless another manager owns them; map-lists merge by key", async (t) => {
  const k = new MemKube();
  const cm = (data: Record<string, string>) => ({
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: 'c', namespace: 'ns' },
    data,
  });
  await k.apply(paths.configMap('ns', 'c'), cm({ a: '1', b: '2' }), 'op');
  await k.mergePatch(paths.configMap('ns', 'c'), { data: { c: '3' } }, 'someone');
  await k.apply(paths.configMap('ns', 'c'), cm({ a: '1' }), 'op');
  t.deepEqual(k.peek<KubeObject & { data: Record<string, string> }>(paths.configMap('ns', 'c'))!.data, {
    a: '1',
    c: '3',
  });
  // an edit by someone else takes the field: the next apply (force) takes it back
  await k.mergePatch(paths.configMap('ns', 'c'), { data: { a: 'edited' } }, 'kubectl-edit');
  await k.apply(paths.configMap('ns', 'c'), cm({ a: '1' }), 'op');
  t.is(k.peek<KubeObject & { data: Record<string, string> }>(paths.configMap('ns', 'c'))!.data.a, '1');

  await k.create(paths.prefixes, prefix('p'));
  const status = (s: Record<string, unknown>) => ({
    apiVersion: 'sixbed4.io/v1alpha1',
    kind: 'SixBed4Prefix',
    metadata: { name: 'p' },
    status: s,
  });
  await k.apply(
    paths.prefixStatus('p'),
    status({
      conditions: [{ type: 'Ready', status: 'True' }],
      nodes: [
        { name: 'n1', prefix: 'x' },
        { name: 'n2', prefix: 'y' },
      ],
    }),
    'op',
  );
  await k.apply(
    paths.prefixStatus('p'),
    status({ conditions: [{ type: 'SlicesAllocated', status: 'True' }], nodes: [{ name: 'n2', ready: true }] }),
    'slices',
  );
  await k.apply(
    paths.prefixStatus('p'),
    status({ conditions: [{ type: 'Ready', status: 'False' }], nodes: [{ name: 'n1', prefix: 'x' }] }),
    'op',
  );
  const st = k.peek<SixBed4Prefix>(paths.prefix('p'))!.status!;
  t.deepEqual(
    st.conditions!.map((c) => `${c.type}=${c.status}`),
    ['Ready=False', 'SlicesAllocated=True'],
  );
  t.deepEqual(
    st.nodes,
    [
      { name: 'n1', prefix: 'x' },
      { name: 'n2', ready: true },
    ],
    "n2 stays (slices owns a field of it); only op's field of it goes",
  );
});

test('lists select by label and field; an informer sees adds, updates and deletes', async (t) => {
  const k = new MemKube();
  const seen: string[] = [];
  const inf = k.informer<KubeObject>(paths.nodes, {
    name: 'nodes',
    labelSelector: 'role=edge',
    log: undefined as never,
    onChange: (type, o) => seen.push(`${type} ${o.metadata.name}`),
  });
  await k.create(paths.nodes, { apiVersion: 'v1', kind: 'Node', metadata: { name: 'a', labels: { role: 'edge' } } });
  await inf.start();
  await k.create(paths.nodes, { apiVersion: 'v1', kind: 'Node', metadata: { name: 'b', labels: { role: 'edge' } } });
  await k.create(paths.nodes, { apiVersion: 'v1', kind: 'Node', metadata: { name: 'c', labels: { role: 'core' } } });
  await k.delete(paths.node('a'));
  await new Promise((r) => setImmediate(r));
  t.deepEqual(seen, ['add a', 'add b', 'delete a']);
  t.deepEqual(
    inf.list().map((n) => n.metadata.name),
    ['b'],
  );
  t.deepEqual(
    (await k.list(paths.nodes, { fieldSelector: 'metadata.name=c' })).items.map((n) => n.metadata.name),
    ['c'],
  );
  await inf.stop();
});
