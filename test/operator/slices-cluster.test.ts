// /112 slices against a real kube-apiserver (etcd, RBAC, and
// kube-controller-manager's garbage collector and namespace controller),
// with the chart installed by helm and `sixbed4 operator` processes running
// as the chart's ServiceAccount. Pods are Pod objects with spec.nodeName set
// to fake Nodes (no kubelet: they stay Pending, which is all the allocator
// needs).
//
// The race test runs two operator replicas (one leads) AND two more slice
// allocators inside this process (no leader election: they act at once,
// each with its own caches) while hundreds of namespaces and pods are
// created and deleted concurrently, then checks with the API what must hold:
// no slice held twice, one slice per pod and one word per namespace, nothing
// left behind by deleted pods, no reserved slice handed out.
//
// Needs `bash test/k8s/build-control-plane.sh` (CI runs it); skips otherwise.
import test from 'ava';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { KubeConfig } from '@kubernetes/client-node';
import { controlPlaneSkipReason, startControlPlane, type ControlPlane } from '../k8s/controlplane.js';
import { createLogger } from '../../agent/log.js';
import { inPrefix, parseIPv6, parsePrefix } from '../../agent/protocol/ip.js';
import { subnetIndex } from '../../operator/prefix/subnets.js';
import {
  ADDRESS_ANNOTATION, ASSIGNED_SLICE_ANNOTATION, RANGE_ANNOTATION, type KubeObject, type SixBed4Prefix, type SixBed4Range, type SixBed4Slice,
} from '../../kube/api.js';
import { SliceAllocator } from '../../operator/slices/allocator.js';
import { EventRecorder } from '../../kube/events.js';
import { Informer } from '../../kube/informer.js';
import { Kube, paths } from '../../kube/client.js';
import { SliceController } from '../../operator/slices/controller.js';
import { preferredWord, rangeName, rangePattern, sliceName, sliceWords } from '../../operator/slices/model.js';
import { AGENT_SA, apiErrorMessage, eventually, installChart, kubectlApply, NS, OPERATOR_SA, OPERATOR_FLAGS, OperatorProcess, readYamlDocs, REPO } from './helpers.js';

const skip = controlPlaneSkipReason();
const ktest = skip ? test.serial.skip : test.serial;
if (skip) test.serial.skip(`slices against a real API server: ${skip}`, () => {});


interface State {
  cp?: ControlPlane;
  admin?: Kube;
  adminKc?: KubeConfig;
  operatorKubeconfig?: string;
  operatorKc?: KubeConfig;
  agent?: Kube;
  ops: OperatorProcess[];
  gcKnowsCrdAt?: number;
}
const s: State = { ops: [] };
const admin = () => s.admin!;

// ------------------------------------------------------------- fixtures

/** Seeded PRNG (mulberry32): the same seed gives the same scenario; the seed is logged. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Runs fn over items with at most n at a time. */
async function pool<T>(items: readonly T[], n: number, fn: (x: T) => Promise<unknown>): Promise<void> {
  let i = 0;
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, async () => {
    while (i < items.length) await fn(items[i++]!);
  }));
}

async function createNode(name: string, labels: Record<string, string>, address: string): Promise<void> {
  await admin().create(paths.nodes, { apiVersion: 'v1', kind: 'Node', metadata: { name, labels }, status: { addresses: [{ type: 'InternalIP', address }] } });
}

async function createNamespace(name: string, labels: Record<string, string>): Promise<void> {
  await admin().create(paths.namespaces, { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } });
  // the ServiceAccount admission wants one before pods (no serviceaccount controller here)
  await admin().create(`/api/v1/namespaces/${name}/serviceaccounts`, { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'default' } });
}

function podBody(name: string, node: string | undefined, annotations: Record<string, string> = { 'sixbed4.io/slice': 'true' }, spec: Record<string, unknown> = {}) {
  return {
    apiVersion: 'v1', kind: 'Pod', metadata: { name, annotations, labels: { test: 'slices' } },
    spec: { ...(node ? { nodeName: node } : {}), automountServiceAccountToken: false, containers: [{ name: 'c', image: 'sixbed4:test' }], ...spec },
  };
}

async function createPod(ns: string, name: string, node: string | undefined, annotations?: Record<string, string>, spec?: Record<string, unknown>): Promise<KubeObject> {
  return admin().create<KubeObject>(paths.pods(ns), podBody(name, node, annotations, spec));
}

/** Deletes a pod at once (no kubelet would ever confirm a graceful deletion). */
const deletePod = (ns: string, name: string) => admin().delete(paths.pod(ns, name), { gracePeriodSeconds: 0 });

async function applyPrefix(name: string, spec: Record<string, unknown>): Promise<void> {
  await kubectlApply(s.adminKc!, [{ apiVersion: 'sixbed4.io/v1alpha1', kind: 'SixBed4Prefix', metadata: { name }, spec } as never]);
}

const getPrefix = (name: string) => admin().get<SixBed4Prefix>(paths.prefix(name));
const slicesOf = async (prefix: string) => (await admin().list<SixBed4Slice>(paths.slices, { labelSelector: `sixbed4.io/prefix=${prefix}` })).items;
const rangesOf = async (prefix: string) => (await admin().list<SixBed4Range>(paths.ranges, { labelSelector: `sixbed4.io/prefix=${prefix}` })).items;
const cond = (p: SixBed4Prefix | undefined, type: string) => p?.status?.conditions?.find((c) => c.type === type);

async function events(ns: string, name: string): Promise<{ reason: string; type: string; message: string }[]> {
  return (await admin().list<{ reason: string; type: string; message: string }>(paths.events(ns), { fieldSelector: `involvedObject.name=${name}` })).items;
}

/** Waits for the /64s of a prefix's nodes to be recorded (slices are cut only from recorded /64s). */
async function nodes64(prefix: string, count: number): Promise<Map<string, string>> {
  const p = await eventually(`${count} node entries of ${prefix}`, async () => {
    const p = await getPrefix(prefix);
    return (p?.status?.nodes ?? []).filter((n) => n.prefix).length === count ? p : undefined;
  }, 20_000);
  return new Map(p.status!.nodes!.map((n) => [n.name, n.prefix!]));
}

/** An allocator inside this process, as the operator's ServiceAccount, without leader election. */
async function racer(name: string): Promise<SliceController> {
  const kube = new Kube(s.operatorKc!, `sixbed4-test-${name}`);
  const log = createLogger({ component: name, format: 'text', level: process.env.SIXBED4_TEST_VERBOSE ? 'info' : 'error' });
  const c = new SliceController({ kube, log, recorder: new EventRecorder(kube, 'default', `sixbed4-test-${name}`, name, log) });
  await c.start();
  return c;
}

/**
 * A SliceAllocator whose slice cache is always empty: it cannot know which
 * slices are held, so every create it makes is a guess the API server judges.
 */
async function blindAllocator(): Promise<{ allocator: SliceAllocator; stop: () => Promise<void> }> {
  const kube = new Kube(s.operatorKc!, 'sixbed4-test-blind');
  const log = createLogger({ component: 'blind', format: 'text', level: process.env.SIXBED4_TEST_VERBOSE ? 'info' : 'error' });
  const inf = <T extends KubeObject>(path: string, name: string) => new Informer<T>(kube, path, { name, log, onChange: () => {} });
  const caches = {
    prefixes: inf<SixBed4Prefix>(paths.prefixes, 'prefixes'), nodes: inf<KubeObject>(paths.nodes, 'nodes'),
    namespaces: inf<KubeObject>(paths.namespaces, 'namespaces'), pods: inf<KubeObject>(paths.allPods, 'pods'),
    ranges: inf<SixBed4Range>(paths.ranges, 'ranges'),
  };
  const all = Object.values(caches) as Informer<KubeObject>[];
  await Promise.all(all.map((i) => i.start()));
  await Promise.all(all.map((i) => i.synced));
  const empty = { get: () => undefined, list: () => [] };
  const allocator = new SliceAllocator({ kube, log, recorder: new EventRecorder(kube, 'default', 'sixbed4-test-blind', 'blind', log), caches: { ...caches, slices: empty } });
  return { allocator, stop: async () => { await Promise.all(all.map((i) => i.stop())); } };
}

// ----------------------------------------------------------------- setup

test.before(async (t) => {
  if (skip) return;
  const t0 = Date.now();
  s.cp = await startControlPlane({ controllerManager: true, controllers: ['garbagecollector', 'namespace'] });
  // the garbage collector re-reads discovery every 30 s: CRDs created after
  // it started are unknown to it until then
  s.gcKnowsCrdAt = Date.now() + 32_000;
  s.adminKc = s.cp.kubeConfig();
  s.admin = new Kube(s.adminKc, 'sixbed4-test');
  await installChart(s.cp, ['--set', 'image.tag=test']);
  for (const plural of ['sixbed4prefixes', 'sixbed4slices', 'sixbed4ranges']) {
    await eventually(`the CRD ${plural} to be established`, async () => {
      const crd = await admin().get<KubeObject>(`/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${plural}.sixbed4.io`);
      return ((crd?.status as { conditions?: { type: string; status: string }[] })?.conditions ?? []).some((c) => c.type === 'Established' && c.status === 'True');
    });
  }
  const token = await s.cp.serviceAccountToken(NS, OPERATOR_SA);
  s.operatorKubeconfig = await s.cp.writeKubeconfig(token, 'operator');
  s.operatorKc = s.cp.kubeConfigForToken(token, 'operator');
  s.agent = new Kube(s.cp.kubeConfigForToken(await s.cp.serviceAccountToken(NS, AGENT_SA), 'agent'), 'sixbed4-agent');
  // two replicas: one leads, one stands by
  s.ops.push(await OperatorProcess.start(s.operatorKubeconfig, 'op-a', OPERATOR_FLAGS));
  s.ops.push(await OperatorProcess.start(s.operatorKubeconfig, 'op-b', OPERATOR_FLAGS));
  for (const [n, a] of [['w1', '198.51.100.41'], ['w2', '198.51.100.42'], ['w3', '198.51.100.43']] as const) await createNode(n, { 'sixbed4.io/router': 'true' }, a);
  await createNode('plain', {}, '198.51.100.44');
  await createNode('solo', { role: 'solo' }, '198.51.100.45');
  t.log(`control plane ${s.cp.startMs} ms; chart, two operators and nodes up after ${Date.now() - t0} ms`);
});

test.after.always(async (t) => {
  for (const op of s.ops) {
    if (process.env.SIXBED4_TEST_VERBOSE) t.log(`operator ${op.identity} log:\n${op.tail(100)}`);
    await op.stop();
  }
  await s.cp?.stop();
});

const leader = async (): Promise<OperatorProcess> => eventually('a leader', async () => {
  for (const op of s.ops) if (op.child.exitCode === null && (await op.metric('sixbed4_operator_leader').catch(() => 0)) === 1) return op;
  return undefined;
});

/** The leader's slice queue is empty and its reconcile count stopped moving. */
async function settled(): Promise<void> {
  const op = await leader();
  let last = -1;
  await eventually('the slice allocator to settle', async () => {
    const n = await op.metricSum('sixbed4_operator_slice_reconcile_total');
    const q = await op.metric('sixbed4_operator_slice_queue_depth');
    const ok = n === last && q === 0 && n > 0;
    last = n;
    return ok;
  }, 30_000, 700);
}

// ----------------------------------------------------------------- tests

ktest('the API server refuses slices that could collide with a peer or the host, and any change of a slice', async (t) => {
  // (of a namespace that does not exist: the operator leaves those to the
  // garbage collector, and would release one of a live namespace at once)
  const base = (name: string, slice: string, address: string) => ({
    apiVersion: 'sixbed4.io/v1alpha1', kind: 'SixBed4Slice', metadata: { name },
    spec: { prefix: 'x', node: 'w1', slice, address, pod: { namespace: 'no-such-namespace', name: 'p', uid: '00000000-0000-4000-8000-000000000000' } },
  });
  const refused = async (o: unknown) => (await apiErrorMessage(admin().create(paths.slices, o))).message;
  t.regex(await refused(base('c1', '2001:db8:9:10:5:1:7:0/112', '2001:db8:9:10:5:1:7:1')), /non-zero port word \(bits 96..111\), where 6bed4 peers carry their UDP port/);
  t.regex(await refused(base('c2', '2001:db8:9:10::/112', '2001:db8:9:10::1')), /holds the local addresses of the host itself/);
  t.regex(await refused(base('c3', '2001:db8:9:10:5::/96', '2001:db8:9:10:5::1')), /is not an IPv6 \/112/);
  t.regex(await refused(base('c4', '2001:db8:9:10:5:1::/112', '2001:db8:9:10:5:2:0:1')), /the address must lie inside the slice/);
  await admin().create(paths.slices, base('c5', '2001:db8:9:10:5:1::/112', '2001:db8:9:10:5:1:0:1'));
  t.regex((await apiErrorMessage(admin().mergePatch(paths.slice('c5'), { spec: { node: 'w2' } }))).message, /immutable/);
  // the name is the claim: a second create of the same name is refused
  const dup = await apiErrorMessage(admin().create(paths.slices, base('c5', '2001:db8:9:10:5:1::/112', '2001:db8:9:10:5:1:0:1')));
  t.is(dup.code, 409);
  await admin().delete(paths.slice('c5'));
  // the sample with slices is accepted as it is (server-side dry run)
  await kubectlApply(s.adminKc!, readYamlDocs(join(REPO, 'crds', 'samples', 'slices-48.yaml')), { dryRun: true });
  const crd = await admin().get<{ spec: { versions: { additionalPrinterColumns: { name: string }[] }[] } }>('/apis/apiextensions.k8s.io/v1/customresourcedefinitions/sixbed4slices.sixbed4.io');
  t.deepEqual(crd!.spec.versions[0]!.additionalPrinterColumns.map((c) => c.name), ['Slice', 'Namespace', 'Pod', 'Node', 'Delivered', 'Address', 'Prefix', 'Age']);
});

const BIG = 'big';
const BIG_LOCAL: string[] = ['::11'];
// per-node local addresses in many words A, at a B inside the small podWords
// range, so that allocations have to step over them
for (let a = 1; a <= 100; a += 3) BIG_LOCAL.push(`::${a.toString(16)}:${(a % 8).toString(16)}:0:11`);

interface Check { pods: number; slices: number; namespaces: number; ms: number }

/** Everything that must hold for the big prefix, read from the API server. */
async function checkBig(t: { log: (...a: unknown[]) => void }, namespaces: readonly string[], extraLocal: string[]): Promise<string[] | Check> {
  const problems: string[] = [];
  const t0 = Date.now();
  const n64 = await nodes64(BIG, 3);
  const P = parsePrefix('2001:db8:48::/48');
  const slices = await slicesOf(BIG);
  const ranges = await rangesOf(BIG);
  const pods = (await admin().list<KubeObject>(paths.allPods, { labelSelector: 'test=slices' })).items.filter((p) => namespaces.includes(p.metadata.namespace!));
  const nsObjs = new Map((await admin().list<KubeObject>(paths.namespaces)).items.map((n) => [n.metadata.name!, n]));
  const local = [...BIG_LOCAL, ...extraLocal];

  // one slice per address: the names make it so, the texts must agree
  const texts = new Set(slices.map((x) => x.spec.slice));
  if (texts.size !== slices.length) problems.push(`${slices.length} slices but ${texts.size} distinct /112s`);
  const addrs = new Set(slices.map((x) => x.spec.address));
  if (addrs.size !== slices.length) problems.push('an address is held twice');
  // one word per namespace, one namespace per word
  const wordOf = new Map<string, number>();
  for (const r of ranges) {
    if (wordOf.has(r.spec.namespace.name)) problems.push(`namespace ${r.spec.namespace.name} holds two words`);
    wordOf.set(r.spec.namespace.name, r.spec.word);
    if (r.metadata.name !== rangeName(BIG, r.spec.word)) problems.push(`range ${r.metadata.name} misnamed`);
    if (r.spec.word < 1 || r.spec.word > 100) problems.push(`word ${r.spec.word} outside namespaceWords`);
  }
  for (const ns of namespaces) {
    const w = wordOf.get(ns);
    if (w === undefined) { problems.push(`namespace ${ns} has no word`); continue; }
    const ann = nsObjs.get(ns)?.metadata.annotations?.[RANGE_ANNOTATION];
    if (ann !== rangePattern(P, w)) problems.push(`namespace ${ns} shows range ${ann}, not ${rangePattern(P, w)}`);
  }
  // every pod holds exactly one slice, in its namespace's word and its node's /64, and shows it
  const byPod = new Map<string, SixBed4Slice[]>();
  for (const x of slices) byPod.set(x.spec.pod.uid, [...(byPod.get(x.spec.pod.uid) ?? []), x]);
  const podUids = new Set(pods.map((p) => p.metadata.uid!));
  for (const x of slices) if (!podUids.has(x.spec.pod.uid)) problems.push(`slice ${x.metadata.name} left behind by pod ${x.spec.pod.namespace}/${x.spec.pod.name}`);
  for (const p of pods) {
    const ns = p.metadata.namespace!;
    const mine = byPod.get(p.metadata.uid!) ?? [];
    if (mine.length !== 1) { problems.push(`pod ${ns}/${p.metadata.name} holds ${mine.length} slices`); continue; }
    const x = mine[0]!;
    const node = (p.spec as { nodeName: string }).nodeName;
    const w = sliceWords(x.spec.slice)!;
    if (x.spec.node !== node) problems.push(`slice ${x.metadata.name} on ${x.spec.node}, pod on ${node}`);
    if (w.node64.text !== n64.get(node)) problems.push(`slice ${x.spec.slice} not in ${node}'s ${n64.get(node)}`);
    if (w.a !== wordOf.get(ns)) problems.push(`slice ${x.spec.slice} of ${ns} not in its word ${wordOf.get(ns)}`);
    if (w.b > 7) problems.push(`slice ${x.spec.slice}: word B outside podWords`);
    if (x.metadata.name !== sliceName(BIG, subnetIndex(P, w.node64.text), w.a, w.b)) problems.push(`slice ${x.metadata.name} misnamed`);
    // never reserved: not in A = 0, holding no local address
    if (w.a === 0) problems.push(`slice ${x.spec.slice} in A = 0`);
    const sp = parsePrefix(x.spec.slice);
    for (const l of local) {
      // ::x is in every node's /64
      const full = parseIPv6(l);
      if (l.startsWith('::')) full.set(w.node64.bytes.subarray(0, 8), 0);
      if (inPrefix(sp, full)) problems.push(`slice ${x.spec.slice} holds local address ${l}`);
    }
    const ann = p.metadata.annotations ?? {};
    if (ann[ASSIGNED_SLICE_ANNOTATION] !== x.spec.slice || ann[ADDRESS_ANNOTATION] !== x.spec.address) {
      problems.push(`pod ${ns}/${p.metadata.name} shows ${ann[ASSIGNED_SLICE_ANNOTATION]}, holds ${x.spec.slice}`);
    }
  }
  if (problems.length) return problems;
  void t;
  return { pods: pods.length, slices: slices.length, namespaces: ranges.length, ms: Date.now() - t0 };
}

async function waitBig(t: { log: (...a: unknown[]) => void }, what: string, namespaces: readonly string[], extraLocal: string[], expectPods: number): Promise<Check> {
  let last: string[] = [];
  return eventually(what, async () => {
    const r = await checkBig(t, namespaces, extraLocal);
    if (Array.isArray(r)) { last = r; throw new Error(`${r.length} problems: ${r.slice(0, 6).join('; ')}`); }
    if (r.pods !== expectPods) throw new Error(`${r.pods} pods, expected ${expectPods}`);
    void last;
    return r;
  }, 60_000, 500);
}

ktest('race: hundreds of namespaces and pods, two operator replicas and two more allocators at once: no slice twice, none leaked, none reserved', async (t) => {
  const seed = Number(process.env.SIXBED4_TEST_SEED ?? Date.now() % 1_000_000);
  const rnd = prng(seed);
  t.log(`seed ${seed} (SIXBED4_TEST_SEED=${seed} repeats this scenario)`);
  const t0 = Date.now();
  await applyPrefix(BIG, {
    prefix: '2001:db8:48::/48', nodeSelector: { 'sixbed4.io/router': 'true' }, localAddresses: BIG_LOCAL,
    slices: { enabled: true, namespaceWords: { first: 1, last: 100 }, podWords: { first: 0, last: 7 } },
  });
  const n64 = await nodes64(BIG, 3);
  // a full local address inside w1's /64, in a word some namespace will hold
  const extra = [`${n64.get('w1')!.replace('::/64', '')}:2:2:0:30`];
  await applyPrefix(BIG, {
    prefix: '2001:db8:48::/48', nodeSelector: { 'sixbed4.io/router': 'true' }, localAddresses: [...BIG_LOCAL, ...extra],
    slices: { enabled: true, namespaceWords: { first: 1, last: 100 }, podWords: { first: 0, last: 7 } },
  });

  const racers = [await racer('racer-1'), await racer('racer-2')];
  t.teardown(() => Promise.all(racers.map((r) => r.stop())));

  // 60 namespaces x 6 pods, spread over three nodes at random (at most 6 per
  // namespace and node: podWords has room for 8, minus the reserved ones)
  const namespaces = Array.from({ length: 60 }, (_, i) => `race-${i}`);
  const nodes = ['w1', 'w2', 'w3'];
  const pods: { ns: string; name: string; node: string }[] = [];
  for (const ns of namespaces) for (let i = 0; i < 6; i++) pods.push({ ns, name: `p${i}`, node: nodes[Math.floor(rnd() * 3)]! });
  const tCreate = Date.now();
  await pool(namespaces, 12, (ns) => createNamespace(ns, { 'sixbed4.io/prefix': BIG }));
  // pods in random order, while namespaces are still being claimed by three allocators
  const shuffled = [...pods].sort(() => rnd() - 0.5);
  await pool(shuffled, 24, (p) => createPod(p.ns, p.name, p.node));
  const created = Date.now() - tCreate;
  const r1 = await waitBig(t, 'every pod to hold one slice', namespaces, extra, pods.length);
  const allocatedIn = Date.now() - tCreate;
  t.log(`${namespaces.length} namespaces and ${pods.length} pods created in ${created} ms; all ${r1.slices} slices allocated and consistent after ${allocatedIn} ms`);

  // churn: delete a third of the pods and add new ones at the same time
  const gone = pods.filter(() => rnd() < 1 / 3);
  const fresh = namespaces.flatMap((ns) => (rnd() < 0.5 ? [{ ns, name: 'q0', node: nodes[Math.floor(rnd() * 3)]! }] : []));
  const survivors = pods.filter((p) => !gone.includes(p));
  // keep at most 6 per namespace and node (room for 8 minus reserved)
  const perNode = new Map<string, number>();
  for (const p of survivors) perNode.set(`${p.ns}/${p.node}`, (perNode.get(`${p.ns}/${p.node}`) ?? 0) + 1);
  const freshOk = fresh.filter((p) => (perNode.get(`${p.ns}/${p.node}`) ?? 0) < 6);
  const tChurn = Date.now();
  await Promise.all([
    pool(gone, 16, (p) => deletePod(p.ns, p.name)),
    pool(freshOk, 8, (p) => createPod(p.ns, p.name, p.node)),
  ]);
  const r2 = await waitBig(t, 'slices of deleted pods released, new pods served', namespaces, extra, survivors.length + freshOk.length);
  t.log(`deleted ${gone.length} pods and created ${freshOk.length}: consistent again after ${Date.now() - tChurn} ms (${r2.slices} slices)`);

  const stats = racers.map((r) => r.allocator.stats);
  const op = await leader();
  const opConflicts = await op.metricSum('sixbed4_operator_slice_conflicts_total');
  const opCreated = await op.metricSum('sixbed4_operator_slices_allocated_total');
  t.log(`creates that won: operator ${opCreated}, racers ${stats.map((x) => x.created + x.rangesCreated).join(' + ')}; ` +
    `AlreadyExists answered: operator ${opConflicts}, racers ${stats.map((x) => x.conflicts).join(' + ')} ` +
    `(adopted: made for the same pod or namespace ${stats.map((x) => x.adopted).join(' + ')}; taken by another ${stats.map((x) => x.taken).join(' + ')})`);
  t.true(opConflicts + stats.reduce((a, x) => a + x.conflicts, 0) > 0, 'the allocators really raced for the same names');

  // deleting every pod leaves no slice behind; the namespaces keep their words
  await Promise.all(racers.map((r) => r.stop()));
  await pool([...survivors, ...freshOk], 24, (p) => deletePod(p.ns, p.name));
  await eventually('no slice left', async () => (await slicesOf(BIG)).length === 0, 30_000);
  const after = await rangesOf(BIG);
  t.is(after.length, namespaces.length);
  await settled();
  const p = await eventually('status: 0 allocated', async () => {
    const p = await getPrefix(BIG);
    return p?.status?.slices?.allocated === 0 && p.status.slices.namespaces?.length === namespaces.length ? p : undefined;
  });
  t.like(cond(p, 'SlicesAllocated'), { status: 'True', reason: 'AllAllocated' });
  t.is(p.status!.slices!.pending, 0);
  t.true(p.status!.slices!.namespaces!.every((n) => n.pods === 0 && n.range === rangePattern(parsePrefix('2001:db8:48::/48'), n.word)));
  const total = Date.now() - t0;
  t.log(`race test ${total} ms`);
  t.true(total < 90_000, `took ${total} ms`);
});

ktest('a range filled to the last slice by racing allocators, then hammered by one blind to every slice: each slice once, each pod one, then exhaustion', async (t) => {
  // 16 words B on one node and 16 pods, some of whose first choices collide
  // (a birthday problem), created one by one in descending name order while
  // the leader and a second allocator race. Then a third allocator whose
  // slice cache is always empty (the worst stale cache there is: it learns
  // only from AlreadyExists) goes through the full range in ascending order:
  // where two pods share a first choice it asks for a name the other pod
  // holds, and the API server must refuse it.
  await applyPrefix('tight', {
    prefix: '2001:db8:64:2::/64', nodeSelector: { role: 'solo' },
    slices: { enabled: true, namespaceWords: { first: 0x10, last: 0x10 }, podWords: { first: 0x100, last: 0x10f } },
  });
  await nodes64('tight', 1);
  const racers = [await racer('racer-3')];
  t.teardown(() => Promise.all(racers.map((r) => r.stop())));
  await createNamespace('tight', { 'sixbed4.io/prefix': 'tight' });
  const names = Array.from({ length: 16 }, (_, i) => `t${i}`);
  const firsts = new Set(names.map((n) => preferredWord(`tight/${n}`, { first: 0x100, last: 0x10f })));
  t.true(firsts.size < 16, 'the scenario needs pods with the same first choice');
  for (const n of [...names].reverse()) {
    await createPod('tight', n, 'solo');
    await eventually(`${n} served`, async () => (await admin().get<KubeObject>(paths.pod('tight', n)))?.metadata.annotations?.[ASSIGNED_SLICE_ANNOTATION], 10_000, 20);
  }
  const full = await slicesOf('tight');
  t.is(full.length, 16);
  const blind = await blindAllocator();
  t.teardown(() => blind.stop());
  for (let i = 0; i < 10; i++) await blind.allocator.reconcileNamespace('tight');
  await blind.stop();
  await Promise.all(racers.map((r) => r.stop()));
  const st = blind.allocator.stats;
  const r = racers[0]!.allocator.stats;
  t.log(`${firsts.size} distinct first choices for 16 pods; second allocator: created ${r.created}, adopted ${r.adopted}; ` +
    `blind allocator (10 rounds): created ${st.created}, adopted ${st.adopted}, refused as held by another pod ${st.taken}`);
  t.true(st.taken > 0, 'the blind allocator asked for names held by other pods');
  t.is(st.created, 0, 'and got none of them: the range is full');
  const after = await slicesOf('tight');
  t.deepEqual(after.map((x) => x.metadata.uid).sort(), full.map((x) => x.metadata.uid).sort(), 'the very same 16 objects');
  t.deepEqual(after.map((x) => sliceWords(x.spec.slice)!.b).sort((a, b) => a - b), Array.from({ length: 16 }, (_, i) => 0x100 + i), 'each slice once');
  t.is(new Set(after.map((x) => x.spec.pod.uid)).size, 16, 'each pod one');
  // the leader puts back the annotations the blind one took off
  await eventually('every pod shows its slice', async () => {
    const pods = (await admin().list<KubeObject>(paths.pods('tight'))).items;
    return JSON.stringify(pods.map((p) => p.metadata.annotations?.[ASSIGNED_SLICE_ANNOTATION]).sort()) === JSON.stringify(after.map((x) => x.spec.slice).sort());
  });
  await createPod('tight', 'one-too-many', 'solo');
  const e = await eventually('SlicesExhausted', async () => (await events('tight', 'one-too-many')).find((x) => x.reason === 'SlicesExhausted'));
  t.regex(e.message, /is full on node solo/);
  // released, the slice goes to the waiting pod
  await deletePod('tight', 't3');
  await eventually('the waiting pod served', async () => (await admin().get<KubeObject>(paths.pod('tight', 'one-too-many')))?.metadata.annotations?.[ASSIGNED_SLICE_ANNOTATION]);
  t.is((await slicesOf('tight')).length, 16);
});

ktest('an operator restart changes nothing: the new leader writes nothing', async (t) => {
  await settled();
  const before = JSON.stringify([(await slicesOf(BIG)).map((x) => x.metadata.resourceVersion), (await rangesOf(BIG)).map((x) => x.metadata.resourceVersion), (await getPrefix(BIG))!.metadata.resourceVersion]);
  const old = await leader();
  t.is(await old.stop('SIGTERM'), 0);
  s.ops = s.ops.filter((o) => o !== old);
  s.ops.push(await OperatorProcess.start(s.operatorKubeconfig!, 'op-c', OPERATOR_FLAGS));
  const next = await leader();
  t.not(next, old);
  await settled();
  t.is(await next.metricSum('sixbed4_operator_api_writes_total'), 0, 'no writes at all');
  t.true(await next.metricSum('sixbed4_operator_slice_reconcile_total') > 60);
  t.is(JSON.stringify([(await slicesOf(BIG)).map((x) => x.metadata.resourceVersion), (await rangesOf(BIG)).map((x) => x.metadata.resourceVersion), (await getPrefix(BIG))!.metadata.resourceVersion]), before);
});

ktest('reserved slices are skipped; a full range and a full word space give Events and status reasons, and recover', async (t) => {
  // one word A (7), four words B (0..3), two of them holding local addresses
  // node solo serves another prefix too: this one listens on a port of its own (one agent serves both)
  await applyPrefix('resv', {
    prefix: '2001:db8:64:1::/64', nodeSelector: { role: 'solo' }, listen: { port: 25791 }, localAddresses: ['::7:1:0:11', '2001:db8:64:1:7:2:0:30'],
    slices: { enabled: true, namespaceWords: { first: 7, last: 7 }, podWords: { first: 0, last: 3 } },
  });
  await nodes64('resv', 1);
  await createNamespace('resv-a', { 'sixbed4.io/prefix': 'resv' });
  // the first pod's preferred word B is a reserved one if we can find such a name
  let first = 'p0';
  for (let i = 0; i < 200; i++) if (preferredWord(`resv-a/r${i}`, { first: 0, last: 3 }) === 1) { first = `r${i}`; break; }
  await createPod('resv-a', first, 'solo');
  await createPod('resv-a', 'x1', 'solo');
  const got = await eventually('two slices', async () => {
    const l = await slicesOf('resv');
    return l.length === 2 ? l : undefined;
  });
  t.deepEqual(got.map((x) => x.spec.slice).sort(), ['2001:db8:64:1:7:3::/112', '2001:db8:64:1:7::/112'], 'B = 1 and B = 2 hold local addresses');
  t.is((await admin().get<KubeObject>(paths.namespace('resv-a')))!.metadata.annotations![RANGE_ANNOTATION], '2001:db8:64:1:7:*:0:0/112');

  // a third pod: the range is full on this node
  await createPod('resv-a', 'x2', 'solo');
  const ev = await eventually('a SlicesExhausted event', async () => (await events('resv-a', 'x2')).find((e) => e.reason === 'SlicesExhausted'));
  t.is(ev.type, 'Warning');
  t.regex(ev.message, /namespace resv-a's range 2001:db8:64:1:7:\*:0:0\/112 is full on node solo \(2001:db8:64:1::\/64\)/);
  const p = await eventually('SlicesAllocated False', async () => {
    const p = await getPrefix('resv');
    return cond(p, 'SlicesAllocated')?.status === 'False' ? p : undefined;
  });
  t.like(cond(p, 'SlicesAllocated'), { reason: 'SlicesExhausted' });
  t.like(p.status!.slices, { allocated: 2, pending: 1, namespaces: [{ name: 'resv-a', word: 7, pods: 2, range: '2001:db8:64:1:7:*:0:0/112' }] });

  // a second namespace: no word left
  await createNamespace('resv-b', { 'sixbed4.io/prefix': 'resv' });
  await createPod('resv-b', 'y', 'solo');
  const nev = await eventually('a NamespaceRangesExhausted event', async () => (await events('default', 'resv-b')).find((e) => e.reason === 'NamespaceRangesExhausted'));
  t.regex(nev.message, /every word A of SixBed4Prefix resv \(7 to 7, 1 namespaces\) is held by another namespace/);
  await eventually('the pod hears why', async () => (await events('resv-b', 'y')).some((e) => e.reason === 'NoNamespaceRange'));

  // a slice is released: the waiting pod gets it; the namespace opting out frees the word for the other one
  await deletePod('resv-a', 'x1');
  await eventually('x2 holds a slice', async () => (await admin().get<KubeObject>(paths.pod('resv-a', 'x2')))?.metadata.annotations?.[ASSIGNED_SLICE_ANNOTATION]);
  await admin().mergePatch(paths.namespace('resv-a'), { metadata: { labels: { 'sixbed4.io/prefix': null } } });
  const y = await eventually('resv-b holds word 7 and y a slice', async () => {
    const pod = await admin().get<KubeObject>(paths.pod('resv-b', 'y'));
    return pod?.metadata.annotations?.[ASSIGNED_SLICE_ANNOTATION] ? pod : undefined;
  });
  t.true(['2001:db8:64:1:7:0:0:1', '2001:db8:64:1:7:3:0:1'].includes(y.metadata.annotations![ADDRESS_ANNOTATION]!), y.metadata.annotations![ADDRESS_ANNOTATION]);
  t.deepEqual((await rangesOf('resv')).map((r) => [r.metadata.name, r.spec.namespace.name]), [['resv-0007', 'resv-b']]);
  const a = await admin().get<KubeObject>(paths.pod('resv-a', first));
  t.false(ASSIGNED_SLICE_ANNOTATION in (a!.metadata.annotations ?? {}), 'opted out: the annotations go with the slice');
  t.is((await admin().get<KubeObject>(paths.namespace('resv-a')))!.metadata.annotations?.[RANGE_ANNOTATION], undefined);
  await eventually('SlicesAllocated True again', async () => cond(await getPrefix('resv'), 'SlicesAllocated')?.status === 'True');
});

ktest('bad annotations, pods on nodes that serve no prefix, host-network pods and unlabelled namespaces get Events saying why', async (t) => {
  await createNamespace('probs', { 'sixbed4.io/prefix': BIG });
  await createPod('probs', 'bad', 'w1', { 'sixbed4.io/slice': 'please' });
  await createPod('probs', 'far', 'plain');
  await createPod('probs', 'host', 'w2', undefined, { hostNetwork: true });
  await createPod('probs', 'fine', 'w3');
  await createPod('probs', 'later', undefined); // not scheduled: waits quietly
  const want: [string, string, RegExp][] = [
    ['bad', 'InvalidSliceAnnotation', /annotation sixbed4.io\/slice: "please" is neither "true" \(give the pod a \/112\) nor "false"/],
    ['far', 'NodeNotServing', /node plain serves no \/64 of SixBed4Prefix big \(the node is not selected by spec.nodeSelector \{"sixbed4.io\/router":"true"\}\)/],
    ['host', 'HostNetworkPod', /uses the host network/],
  ];
  for (const [pod, reason, re] of want) {
    const e = await eventually(`${reason} on ${pod}`, async () => (await events('probs', pod)).find((x) => x.reason === reason));
    t.is(e.type, 'Warning');
    t.regex(e.message, re);
  }
  await eventually('fine holds a slice', async () => (await admin().get<KubeObject>(paths.pod('probs', 'fine')))?.metadata.annotations?.[ASSIGNED_SLICE_ANNOTATION]);
  const p = await eventually('the prefix status says why', async () => {
    const p = await getPrefix(BIG);
    // far, host and later ask and hold none (bad's annotation is not a request)
    return cond(p, 'SlicesAllocated')?.status === 'False' && p?.status?.slices?.pending === 3 ? p : undefined;
  });
  t.regex(cond(p, 'SlicesAllocated')!.message, /pod probs\/far: node plain serves no \/64/);
  t.regex(cond(p, 'SlicesAllocated')!.message, /pod probs\/bad: annotation/);

  // a namespace naming no prefix, and a pod asking in a namespace that did not opt in
  await createNamespace('typo', { 'sixbed4.io/prefix': 'bgi' });
  await createNamespace('plainns', {});
  await createPod('plainns', 'asks', 'w1');
  const te = await eventually('UnknownPrefix on the namespace', async () => (await events('default', 'typo')).find((e) => e.reason === 'UnknownPrefix'));
  t.is(te.message, 'label sixbed4.io/prefix=bgi names no SixBed4Prefix; the namespace gets no slices');
  const ne = await eventually('NamespaceNotOptedIn on the pod', async () => (await events('plainns', 'asks')).find((e) => e.reason === 'NamespaceNotOptedIn'));
  t.regex(ne.message, /namespace plainns does not take slices from any SixBed4Prefix/);

  // fixed: the annotation corrected, the far pod re-created on a serving node
  await admin().mergePatch(paths.pod('probs', 'bad'), { metadata: { annotations: { 'sixbed4.io/slice': 'true' } } });
  await deletePod('probs', 'far');
  await deletePod('probs', 'host');
  await deletePod('probs', 'later');
  await eventually('SlicesAllocated True again', async () => cond(await getPrefix(BIG), 'SlicesAllocated')?.status === 'True');
  await eventually('a Normal event on recovery', async () => (await events('default', BIG)).some((e) => e.type === 'Normal' && e.reason === 'SlicesAllocated'));
});

ktest('the node agent\'s side: it lists its node\'s slices by field selector and reports in their status; it cannot create or delete them', async (t) => {
  // as the agent would: an informer of its node's slices (list + watch with a field selector)
  const seen: string[] = [];
  const log = createLogger({ component: 'agent-test', format: 'text', level: 'error' });
  const inf = new Informer<SixBed4Slice>(s.agent!, paths.slices, { name: 'slices', fieldSelector: 'spec.node=w3', log, onChange: (type, x) => seen.push(`${type} ${x.spec.node} ${x.spec.pod.name}`) });
  t.teardown(() => inf.stop());
  await inf.start();
  await inf.synced;
  const mine = inf.list();
  t.true(mine.length >= 1);
  t.true(mine.every((x) => x.spec.node === 'w3'));
  await createPod('probs', 'watched', 'w3');
  await createPod('probs', 'elsewhere', 'w1');
  await eventually('the watch to deliver the new slice', async () => seen.includes('add w3 watched'));
  t.false(seen.some((x) => x.includes('elsewhere')), 'only its own node\'s slices');
  const x = mine.find((m) => m.spec.pod.name === 'fine')!;
  await s.agent!.apply(paths.sliceStatus(x.metadata.name!), {
    apiVersion: 'sixbed4.io/v1alpha1', kind: 'SixBed4Slice', metadata: { name: x.metadata.name },
    status: { delivered: true, state: 'delivered', hostInterface: 's40123456789abc', lastUpdate: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z') },
  }, 'sixbed4-agent-w3');
  const back = await admin().get<SixBed4Slice>(paths.slice(x.metadata.name!));
  t.like(back!.status, { delivered: true, state: 'delivered', hostInterface: 's40123456789abc' });
  const deny = async (pr: Promise<unknown>) => (await apiErrorMessage(pr)).code;
  t.is(await deny(s.agent!.request('DELETE', paths.slice(x.metadata.name!))), 403);
  t.is(await deny(s.agent!.create(paths.slices, { ...x, metadata: { name: 'forged' } })), 403);
  t.is(await deny(s.agent!.mergePatch(paths.slice(x.metadata.name!), { metadata: { labels: { a: 'b' } } })), 403);
  // the operator's status writes do not disturb the agent's fields
  await settled();
  t.true((await admin().get<SixBed4Slice>(paths.slice(x.metadata.name!)))!.status!.delivered);
});

ktest('a pod that stops asking loses its slice and annotations; a pod re-created with the same name gets its address back', async (t) => {
  const before = await admin().get<KubeObject>(paths.pod('probs', 'fine'));
  const addr = before!.metadata.annotations![ADDRESS_ANNOTATION]!;
  await admin().mergePatch(paths.pod('probs', 'fine'), { metadata: { annotations: { 'sixbed4.io/slice': 'false' } } });
  await eventually('annotations removed', async () => {
    const p = await admin().get<KubeObject>(paths.pod('probs', 'fine'));
    return p && !(ASSIGNED_SLICE_ANNOTATION in (p.metadata.annotations ?? {})) && !(ADDRESS_ANNOTATION in (p.metadata.annotations ?? {}));
  });
  t.false((await slicesOf(BIG)).some((x) => x.spec.pod.name === 'fine' && x.spec.pod.namespace === 'probs'));
  await deletePod('probs', 'fine');
  await createPod('probs', 'fine', 'w3');
  const again = await eventually('fine holds a slice again', async () => (await admin().get<KubeObject>(paths.pod('probs', 'fine')))?.metadata.annotations?.[ADDRESS_ANNOTATION]);
  t.is(again, addr, 'same namespace, name and node: the same first choice, still free');
});

ktest('a deleted namespace takes its words and slices with it through the garbage collector, even with no operator running', async (t) => {
  await createNamespace('gc-ns', { 'sixbed4.io/prefix': BIG });
  for (const i of [0, 1, 2]) await createPod('gc-ns', `g${i}`, `w${i + 1}`);
  await eventually('three slices and a word', async () =>
    (await slicesOf(BIG)).filter((x) => x.spec.pod.namespace === 'gc-ns').length === 3 && (await rangesOf(BIG)).some((r) => r.spec.namespace.name === 'gc-ns'));
  const owned = (await slicesOf(BIG)).find((x) => x.spec.pod.namespace === 'gc-ns')!;
  t.like(owned.metadata.ownerReferences![0], { apiVersion: 'v1', kind: 'Namespace', name: 'gc-ns' });
  for (const op of s.ops) await op.stop();
  s.ops = [];
  const wait = s.gcKnowsCrdAt! - Date.now();
  if (wait > 0) {
    t.log(`waiting ${wait} ms for the garbage collector to discover the CRDs`);
    await sleep(wait);
  }
  // no kubelet confirms a graceful pod deletion: remove the pods at once, then the namespace
  for (const i of [0, 1, 2]) await deletePod('gc-ns', `g${i}`);
  await admin().delete(paths.namespace('gc-ns'));
  await eventually('the namespace gone', async () => (await admin().get(paths.namespace('gc-ns'))) === undefined, 30_000);
  await eventually('its slices and word collected', async () =>
    !(await slicesOf(BIG)).some((x) => x.spec.pod.namespace === 'gc-ns') && !(await rangesOf(BIG)).some((r) => r.spec.namespace.name === 'gc-ns'), 30_000);
  t.pass();
});
