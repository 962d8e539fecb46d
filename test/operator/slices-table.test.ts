// The slice controller (operator/slices/controller.ts and its allocator), one
// row per situation, running with its queue and workers on the in-memory API
// server (test/helpers/memkube.ts) and its watches. Pods' slices are claimed
// as their node's agent claims them (agent/cluster/claim.ts). What only a
// real server shows (the CEL rules of slices, the agents' admission policy,
// RBAC, the garbage collector with the real namespace controller, races of
// processes) stays in slices-cluster.test.ts.
import test, { type ExecutionContext } from 'ava';
import {
  ADDRESS_ANNOTATION,
  ASSIGNED_SLICE_ANNOTATION,
  RANGE_ANNOTATION,
  SLICES_CONDITION,
  type KubeObject,
  type SixBed4Range,
  type SixBed4Slice,
} from '../../kube/api.js';
import { paths } from '../../kube/client.js';
import { parsePrefix } from '../../lib/ip.js';
import { claimSlice, namespaceWord } from '../../agent/cluster/claim.js';
import { SliceController } from '../../operator/slices/controller.js';
import { checkSlices } from '../../kube/slice-model.js';
import { subnetIndex } from '../../kube/subnets.js';
import { until } from '../helpers/wait.js';
import { logOnFailure, ringLogger } from '../helpers/logring.js';
import { World } from './memworld.js';

const PREFIX = '2001:db8:9::/48';

interface Slices {
  w: World;
  ctl: SliceController;
  ns(name: string, labels?: Record<string, string>): Promise<string>;
  pod(ns: string, name: string, node: string, annotations?: Record<string, string>): Promise<KubeObject>;
  claim(pod: KubeObject): Promise<SixBed4Slice>;
}

/** A prefix with slices on nodes n1, n2 and the slice controller running on it. */
async function world(t: ExecutionContext, slices: Record<string, unknown> = { enabled: true }): Promise<Slices> {
  const w = new World();
  for (const n of ['n1', 'n2']) await w.node(n, { router: 'true' }, `198.51.100.${n[1]}`);
  await w.prefix('p', { prefix: PREFIX, nodeSelector: { router: 'true' }, slices });
  await w.settle('p');
  const ctl = new SliceController({
    kube: w.kube,
    log: ringLogger(w.log, 'slices'),
    recorder: w.recorder,
    prefixes: w.deps.prefixes,
    nodes: w.deps.nodes,
    statusDelayMs: 5,
    workers: 2,
    informers: (_k, path, opts) => w.kube.informer(path, opts),
  });
  await ctl.start();
  t.teardown(() => ctl.stop());
  logOnFailure(t, () => ({
    'operator and slices': w.log.tail(),
    writes: w.kube.writes.map((x) => `${x.verb} ${x.path} ${x.status}`),
  }));
  return {
    w,
    ctl,
    async ns(name, labels = { 'sixbed4.io/prefix': 'p' }) {
      return (
        await w.kube.create<KubeObject>(paths.namespaces, {
          apiVersion: 'v1',
          kind: 'Namespace',
          metadata: { name, labels },
        })
      ).metadata.uid!;
    },
    async pod(ns, name, node, annotations = { 'sixbed4.io/slice': 'true' }) {
      return w.kube.create<KubeObject>(paths.pods(ns), {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name, annotations },
        spec: { nodeName: node, containers: [{ name: 'c', image: 'x' }] },
      });
    },
    /** the pod's CNI ADD: its node's agent claims its slice */
    async claim(pod) {
      const ns = pod.metadata.namespace!;
      const node = (pod.spec as { nodeName: string }).nodeName;
      const nsUid = w.kube.peek(paths.namespace(ns))!.metadata.uid!;
      const word = await until(
        `a word for ${ns}`,
        () => w.kube.select('sixbed4ranges').some((r) => (r as SixBed4Range).spec.namespace.name === ns),
        3000,
      ).then(() => namespaceWord(w.kube, 'p', { name: ns, uid: nsUid }));
      const n64 = w.get('p')!.status!.nodes!.find((x) => x.name === node)!.prefix!;
      const subnet = parsePrefix(n64);
      const target = {
        prefixName: 'p',
        node,
        subnet,
        index: subnetIndex(parsePrefix(PREFIX), n64),
        podWords: checkSlices(w.get('p')!.spec.slices).slices.podWords,
        reserved: new Set<number>(),
      };
      return (
        await claimSlice(
          w.kube,
          target,
          word,
          { namespace: ns, name: pod.metadata.name!, uid: pod.metadata.uid!, namespaceUid: nsUid },
          () => false,
          ringLogger(w.log, 'agent'),
        )
      ).slice;
    },
  };
}

const slicesOf = (w: World) => w.kube.select('sixbed4slices') as SixBed4Slice[];
const rangesOf = (w: World) => w.kube.select('sixbed4ranges') as SixBed4Range[];
const annotations = (w: World, path: string) => w.kube.peek(path)?.metadata.annotations ?? {};

interface Row {
  title: string;
  slices?: Record<string, unknown>;
  run: (t: ExecutionContext, x: Slices) => Promise<void>;
}

const rows: Row[] = [
  {
    title: 'a labelled namespace gets a word (a SixBed4Range owned by it), shown on the namespace, with an Event',
    run: async (t, { w, ns }) => {
      const uid = await ns('shop');
      const r = await until('a range', () => rangesOf(w)[0]);
      t.like(r.spec, { prefix: 'p', namespace: { name: 'shop', uid } });
      t.like(r.metadata.ownerReferences![0], { kind: 'Namespace', name: 'shop', uid });
      await until('the namespace annotation', () => annotations(w, paths.namespace('shop'))[RANGE_ANNOTATION]);
      t.is(annotations(w, paths.namespace('shop'))[RANGE_ANNOTATION], r.spec.range as string);
      t.true(w.events.some((e) => e.reason === 'RangeAssigned' && e.object === 'shop'));
    },
  },
  {
    title: "a pod's slice (claimed by its node's agent) is shown on the pod and counted in the prefix status",
    run: async (t, { w, ns, pod, claim }) => {
      await ns('shop');
      const s = await claim(await pod('shop', 'web', 'n1'));
      await until('the pod annotations', () => annotations(w, paths.pod('shop', 'web'))[ADDRESS_ANNOTATION]);
      t.like(annotations(w, paths.pod('shop', 'web')), {
        [ASSIGNED_SLICE_ANNOTATION]: s.spec.slice,
        [ADDRESS_ANNOTATION]: s.spec.address,
      });
      const st = await until('status.slices', () =>
        w.get('p')!.status?.slices?.allocated === 1 ? w.get('p')!.status : undefined,
      );
      t.like(st.slices!.namespaces![0], { name: 'shop', pods: 1 });
      t.like(
        st.conditions!.find((c) => c.type === SLICES_CONDITION),
        { status: 'True', reason: 'AllAllocated' },
      );
      t.true(
        st.conditions!.some((c) => c.type === 'Ready'),
        "next to the prefix reconciler's conditions",
      );
    },
  },
  {
    title: 'a pod deleted: its slice is released',
    run: async (t, { w, ns, pod, claim }) => {
      await ns('shop');
      await claim(await pod('shop', 'web', 'n1'));
      await w.kube.delete(paths.pod('shop', 'web'));
      await until('the slice released', () => slicesOf(w).length === 0);
      t.pass();
    },
  },
  {
    title: 'a pod that stops asking loses its slice and its annotations',
    run: async (t, { w, ns, pod, claim }) => {
      await ns('shop');
      await claim(await pod('shop', 'web', 'n1'));
      await until('the pod annotations', () => annotations(w, paths.pod('shop', 'web'))[ADDRESS_ANNOTATION]);
      await w.kube.mergePatch(paths.pod('shop', 'web'), { metadata: { annotations: { 'sixbed4.io/slice': 'false' } } });
      await until(
        'slice and annotations gone',
        () => slicesOf(w).length === 0 && !(ADDRESS_ANNOTATION in annotations(w, paths.pod('shop', 'web'))),
      );
      t.false(ASSIGNED_SLICE_ANNOTATION in annotations(w, paths.pod('shop', 'web')));
    },
  },
  {
    title: 'a namespace that opts out gives back its slices, then its word, and loses its annotation',
    run: async (t, { w, ns, pod, claim }) => {
      await ns('shop');
      await claim(await pod('shop', 'web', 'n2'));
      await w.kube.mergePatch(paths.namespace('shop'), { metadata: { labels: { 'sixbed4.io/prefix': null } } });
      await until('slices and word released', () => slicesOf(w).length === 0 && rangesOf(w).length === 0);
      await until('the annotation removed', () => !(RANGE_ANNOTATION in annotations(w, paths.namespace('shop'))));
      t.pass();
    },
  },
  {
    title: 'one pod with two slices (two claimers disagreed) keeps the first in text order',
    run: async (t, { w, ns, pod, claim }) => {
      await ns('shop');
      const p = await pod('shop', 'web', 'n1');
      const first = await claim(p);
      // a second claimer, blind to the first, took the next word B for the same pod (its name says so; the
      // operator compares names, as the agent does)
      const second = structuredClone(first);
      second.metadata = {
        ...first.metadata,
        name: first.metadata.name!.replace(/[0-9a-f]{4}$/, (x) => (parseInt(x, 16) + 1).toString(16).padStart(4, '0')),
      };
      delete second.metadata.uid;
      delete second.metadata.resourceVersion;
      delete second.metadata.creationTimestamp;
      await w.kube.create(paths.slices, second);
      await until('one slice left', () => slicesOf(w).length === 1);
      t.is(slicesOf(w)[0]!.metadata.name, [first.metadata.name!, second.metadata.name!].sort()[0]);
    },
  },
  {
    title: 'a bad request annotation is a Warning on the pod and makes SlicesAllocated False',
    run: async (t, { w, ns, pod }) => {
      await ns('shop');
      await pod('shop', 'bad', 'n1', { 'sixbed4.io/slice': 'please' });
      await until('the Event', () => w.events.find((e) => e.object === 'bad' && e.reason === 'InvalidSliceAnnotation'));
      const c = await until('SlicesAllocated False', () =>
        w.get('p')!.status?.conditions?.find((x) => x.type === SLICES_CONDITION && x.status === 'False'),
      );
      t.is(c.reason, 'InvalidSliceAnnotation');
    },
  },
  {
    title: 'a namespace naming no prefix, and the word space exhausted, are Warnings on the namespaces',
    slices: { enabled: true, namespaceWords: { first: 7, last: 7 } },
    run: async (t, { w, ns }) => {
      await ns('typo', { 'sixbed4.io/prefix': 'nope' });
      await ns('first');
      await until('first holds word 7', () =>
        rangesOf(w).some((r) => r.spec.namespace.name === 'first' && r.spec.word === 7),
      );
      await ns('second');
      const e = await until('NamespaceRangesExhausted', () =>
        w.events.find((x) => x.object === 'second' && x.reason === 'NamespaceRangesExhausted'),
      );
      t.regex(e.message, /every word A of SixBed4Prefix p \(7 to 7, 1 namespaces\) is held by another namespace/);
      const u = await until('UnknownPrefix', () =>
        w.events.find((x) => x.object === 'typo' && x.reason === 'UnknownPrefix'),
      );
      t.is(u.message, 'label sixbed4.io/prefix=nope names no SixBed4Prefix; the namespace gets no slices');
    },
  },
];

for (const row of rows) {
  test(row.title, async (t) => {
    await row.run(t, await world(t, row.slices));
  });
}
