// /112 slices against a real kube-apiserver (etcd, RBAC, the chart's admission policy, and
// kube-controller-manager's garbage collector and namespace controller), with the chart installed by helm,
// `sixbed4 operator` processes running as the chart's ServiceAccount, and the node agents' claim code
// (agent/cluster/claim.ts) running in this process as each node's agent: a token bound to an agent Pod on that
// node, as a DaemonSet Pod's is. Pods are Pod objects with spec.nodeName set to fake Nodes (no kubelet: they stay
// Pending). A pod's CNI ADD is played by its node's agent claiming its slice the way SliceAgent.add
// (agent/cluster/slices.ts) does, without delivering anything: the node's slices from a watch by field selector,
// the node's /64 and local addresses from the prefix's agent ConfigMap, the namespace's word from its
// SixBed4Range (namespaceWord), then claimSlice; and, as the kubelet does, again a little later when it fails.
//
// The split under test: the operator claims words A for labelled namespaces, annotates pods and namespaces,
// releases slices whose pod is gone or stopped asking, and says what is wrong in Events and status; the agents
// claim the pods' slices, each only for its own node.
//
// The race test runs two operator replicas (one leads) while hundreds of namespaces and pods are created and
// deleted concurrently, with two claimers per node acting at once for every pod (a CNI ADD and a retry, or an
// old and a new agent Pod during a rollout), each with its own view of the node's slices (one of them late), and
// late CNI ADDs for pods already deleted; then checks with the API what must hold: no slice held twice, one slice
// per pod and one word per namespace, nothing left behind by deleted pods, no reserved slice handed out.
//
// Needs `bash test/k8s/build-control-plane.sh` (CI runs it); skips otherwise.
import test from 'ava';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { KubeConfig } from '@kubernetes/client-node';
import { controlPlaneSkipReason, startControlPlane, type ControlPlane } from '../k8s/controlplane.js';
import { createLogger, type Logger } from '../../lib/log.js';
import { LogRing, ringLogger } from '../helpers/logring.js';
import { formatIPv6, inPrefix, parseIPv6, parsePrefix } from '../../lib/ip.js';
import { subnetIndex } from '../../kube/subnets.js';
import {
  ADDRESS_ANNOTATION,
  AGENT_CONFIG_COMMON_KEY,
  agentConfigMapName,
  ASSIGNED_SLICE_ANNOTATION,
  RANGE_ANNOTATION,
  type AgentNodeConfig,
  type KubeObject,
  type SixBed4Prefix,
  type SixBed4Range,
  type SixBed4Slice,
} from '../../kube/api.js';
import { Informer } from '../../kube/informer.js';
import { Kube, KubeError, paths } from '../../kube/client.js';
import { ClaimError, claimSlice, namespaceWord, type ClaimTarget } from '../../agent/cluster/claim.js';
import { shareFromData } from '../../agent/cluster/config.js';
import {
  checkSlices,
  preferredWord,
  rangeName,
  rangePattern,
  reservedSlices,
  sliceName,
  sliceWords,
} from '../../kube/slice-model.js';
import {
  AGENT_SA,
  agentToken,
  apiErrorMessage,
  installChart,
  kubectlApply,
  NS,
  OPERATOR_FLAGS,
  OPERATOR_SA,
  OperatorProcess,
  readYamlDocs,
  REPO,
  clusterTest,
} from '../helpers/cluster.js';
import { eventually } from '../helpers/wait.js';

const skip = controlPlaneSkipReason();
if (skip) test.serial.skip(`slices against a real API server: ${skip}`, () => {});

interface State {
  cp?: ControlPlane;
  admin?: Kube;
  adminKc?: KubeConfig;
  operatorKubeconfig?: string;
  /** per node: its agent's identity */
  agentKc: Map<string, KubeConfig>;
  /** per node: two claimers of its agent, [0] with a current view (the CNI ADD), [1] with a late one (a retry or a second agent Pod) */
  agents: Map<string, [Claimer, Claimer]>;
  /** an agent token bound to no Pod (so to no node) */
  unbound?: Kube;
  ops: OperatorProcess[];
  gcKnowsCrdAt?: number;
}
const ktest = clusterTest(
  skip,
  () => s.ops,
  () => ({ 'agents (claimers)': agentLog.tail() }),
);
const s: State = { agentKc: new Map(), agents: new Map(), ops: [] };
const admin = () => s.admin!;
const cni = (node: string) => s.agents.get(node)![0];
const repair = (node: string) => s.agents.get(node)![1];
/** the in-process agents' claimers log here; a failing test shows the last lines */
const agentLog = new LogRing(2000);
const logger = (component: string): Logger =>
  process.env.SIXBED4_TEST_VERBOSE
    ? createLogger({ component, format: 'text', level: 'info' })
    : ringLogger(agentLog, component, 'info');

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
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (i < items.length) await fn(items[i++]!);
    }),
  );
}

async function createNode(name: string, labels: Record<string, string>, address: string): Promise<void> {
  await admin().create(paths.nodes, {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels },
    status: { addresses: [{ type: 'InternalIP', address }] },
  });
}

async function createNamespace(name: string, labels: Record<string, string>): Promise<void> {
  await admin().create(paths.namespaces, { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } });
  // the ServiceAccount admission wants one before pods (no serviceaccount controller here)
  await admin().create(`/api/v1/namespaces/${name}/serviceaccounts`, {
    apiVersion: 'v1',
    kind: 'ServiceAccount',
    metadata: { name: 'default' },
  });
}

function podBody(
  name: string,
  node: string | undefined,
  annotations: Record<string, string> = { 'sixbed4.io/slice': 'true' },
  spec: Record<string, unknown> = {},
) {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, annotations, labels: { test: 'slices' } },
    spec: {
      ...(node ? { nodeName: node } : {}),
      automountServiceAccountToken: false,
      containers: [{ name: 'c', image: 'sixbed4:test' }],
      ...spec,
    },
  };
}

/** A pod as its CNI ADD names it (namespace, name and UID come from the runtime). */
interface PodRef {
  namespace: string;
  name: string;
  uid: string;
}

async function createPod(
  ns: string,
  name: string,
  node: string | undefined,
  annotations?: Record<string, string>,
  spec?: Record<string, unknown>,
): Promise<PodRef> {
  const pod = await admin().create<KubeObject>(paths.pods(ns), podBody(name, node, annotations, spec));
  return { namespace: ns, name, uid: pod.metadata.uid! };
}

/** Deletes a pod at once (no kubelet would ever confirm a graceful deletion). */
const deletePod = (ns: string, name: string) => admin().delete(paths.pod(ns, name), { gracePeriodSeconds: 0 });

async function applyPrefix(name: string, spec: Record<string, unknown>): Promise<void> {
  await kubectlApply(s.adminKc!, [
    { apiVersion: 'sixbed4.io/v1alpha1', kind: 'SixBed4Prefix', metadata: { name }, spec } as never,
  ]);
}

const getPrefix = (name: string) => admin().get<SixBed4Prefix>(paths.prefix(name));
const getPod = (ns: string, name: string) => admin().get<KubeObject>(paths.pod(ns, name));
const slicesOf = async (prefix: string) =>
  (await admin().list<SixBed4Slice>(paths.slices, { labelSelector: `sixbed4.io/prefix=${prefix}` })).items;
const rangesOf = async (prefix: string) =>
  (await admin().list<SixBed4Range>(paths.ranges, { labelSelector: `sixbed4.io/prefix=${prefix}` })).items;
const sliceOfPod = async (prefix: string, uid: string) =>
  (await slicesOf(prefix)).filter((x) => x.spec.pod.uid === uid);
const cond = (p: SixBed4Prefix | undefined, type: string) => p?.status?.conditions?.find((c) => c.type === type);

async function events(ns: string, name: string): Promise<{ reason: string; type: string; message: string }[]> {
  return (
    await admin().list<{ reason: string; type: string; message: string }>(paths.events(ns), {
      fieldSelector: `involvedObject.name=${name}`,
    })
  ).items;
}

/** Waits for the /64s of a prefix's nodes to be recorded (slices are cut only from recorded /64s). */
async function nodes64(prefix: string, count: number): Promise<Map<string, string>> {
  const p = await eventually(
    `${count} node entries of ${prefix}`,
    async () => {
      const p = await getPrefix(prefix);
      return (p?.status?.nodes ?? []).filter((n) => n.prefix).length === count ? p : undefined;
    },
    20_000,
  );
  return new Map(p.status!.nodes!.map((n) => [n.name, n.prefix!]));
}

/** A node's share of a prefix as its agent reads it (the agent ConfigMap the operator renders), or null. */
async function shareOf(
  kube: Kube,
  prefix: string,
  node: string,
): Promise<{ common: { prefix: string }; node: AgentNodeConfig } | null> {
  const cm = await kube.get<{ data?: Record<string, string> }>(paths.configMap(NS, agentConfigMapName(prefix)));
  if (!cm?.data?.[AGENT_CONFIG_COMMON_KEY]) return null;
  const share = shareFromData(cm.data, node);
  return share.node ? { common: share.common, node: share.node } : null;
}

/** The node serves no /64 of the prefix (yet): the agent's CNI answers "try again later". */
class NotServing extends Error {
  override name = 'NotServing';
}

/**
 * One claimer of a node's agent, in this process, as the agent: what SliceAgent.add does with a CNI ADD before it
 * delivers. Its view of the node's slices is its own watch (by field selector, as the agent's), applied `lagMs`
 * late for a claimer that lags behind; its own claims go into its view at once, as the agent's do.
 */
class Claimer {
  readonly kube: Kube;
  /** created: won the create; adopted: AlreadyExists, made for this pod (another claimer was faster); held: in its view already */
  readonly stats = { created: 0, adopted: 0, held: 0, conflicts: 0, refused: {} as Record<string, number> };
  private readonly slices = new Map<string, SixBed4Slice>();
  private readonly targets = new Map<string, ClaimTarget>();
  private readonly informer: Informer<SixBed4Slice>;
  private readonly log: Logger;
  private started = false;

  constructor(
    readonly node: string,
    kc: KubeConfig,
    readonly name: string,
    private readonly lagMs = 0,
  ) {
    this.kube = new Kube(kc, `sixbed4-agent-${name}`);
    // every AlreadyExists of a slice create: a name some claimer held already
    this.kube.onWrite = (verb, path, status) => {
      if (verb === 'POST' && path === paths.slices && status === 409) this.stats.conflicts++;
    };
    this.log = logger(name);
    this.informer = new Informer<SixBed4Slice>(this.kube, paths.slices, {
      name: 'sixbed4slices',
      fieldSelector: `spec.node=${node}`,
      log: this.log,
      onChange: (type, x) => {
        const apply = () => {
          if (type === 'delete' || x.metadata.deletionTimestamp) this.slices.delete(x.metadata.name!);
          else this.slices.set(x.metadata.name!, x);
        };
        // equal delays fire in order: a late view, not a shuffled one
        if (this.lagMs) setTimeout(apply, this.lagMs).unref();
        else apply();
      },
    });
  }

  async start(): Promise<void> {
    this.started = true;
    await this.informer.start();
    await this.informer.synced;
  }

  async stop(): Promise<void> {
    if (this.started) await this.informer.stop();
  }

  /** What this claimer believes its node holds. */
  view(): SixBed4Slice[] {
    return [...this.slices.values()];
  }

  /** Where the node serves the prefix: the agent's Serving (from its share) and the prefix's podWords. */
  private async target(prefixName: string): Promise<ClaimTarget> {
    const known = this.targets.get(prefixName);
    if (known) return known;
    const share = await shareOf(this.kube, prefixName, this.node);
    if (!share) throw new NotServing(`node ${this.node} serves no /64 of ${prefixName} yet`);
    const p = await this.kube.get<SixBed4Prefix>(paths.prefix(prefixName));
    const subnet = parsePrefix(share.node.prefix);
    const t: ClaimTarget = {
      prefixName,
      node: this.node,
      subnet,
      index: subnetIndex(parsePrefix(share.common.prefix), share.node.prefix),
      podWords: checkSlices(p?.spec?.slices).slices.podWords,
      reserved: reservedSlices(
        subnet,
        share.node.localAddresses.map((text) => ({ bytes: parseIPv6(text), text, perNode: false })),
      ),
    };
    this.targets.set(prefixName, t);
    return t;
  }

  /**
   * The pod's slice on this node: the one in its view, or claimed now. `blind`: a claimer that knows no slice at
   * all (it does not look in its view, and every word B seems free), so that only the API server's answers count.
   */
  async claim(
    prefixName: string,
    pod: PodRef,
    opts: { blind?: boolean } = {},
  ): Promise<{ slice: SixBed4Slice; how: 'created' | 'adopted' | 'held' }> {
    // in the order of NodeCni.add (the namespace), then SliceAgent.add (held? the word, then what is taken)
    const ns = await this.kube.get<KubeObject>(paths.namespace(pod.namespace));
    if (!ns?.metadata.uid) throw new NotServing(`namespace ${pod.namespace} not found`);
    const t = await this.target(prefixName);
    if (!opts.blind) {
      const held = this.view().find(
        (x) => x.spec.pod.uid === pod.uid && x.spec.node === this.node && x.spec.prefix === prefixName,
      );
      if (held) {
        this.stats.held++;
        return { slice: held, how: 'held' };
      }
    }
    const word = await namespaceWord(this.kube, prefixName, { name: pod.namespace, uid: ns.metadata.uid });
    const taken = new Set<number>();
    for (const x of this.view()) {
      const w = x.spec.prefix === prefixName ? sliceWords(x.spec.slice) : undefined;
      if (w && w.a === word) taken.add(w.b);
    }
    const got = await claimSlice(
      this.kube,
      t,
      word,
      { ...pod, namespaceUid: ns.metadata.uid },
      opts.blind ? () => false : (b) => taken.has(b),
      this.log,
    );
    if (got.created) this.stats.created++;
    else this.stats.adopted++;
    if (!opts.blind) this.slices.set(got.slice.metadata.name!, got.slice);
    return { slice: got.slice, how: got.created ? 'created' : 'adopted' };
  }

  /** As the kubelet does with a CNI ADD that fails: again a little later, until the pod has its slice. */
  async claimUntil(
    prefixName: string,
    pod: PodRef,
    opts: { blind?: boolean } = {},
  ): Promise<{ slice: SixBed4Slice; how: 'created' | 'adopted' | 'held' }> {
    const deadline = Date.now() + 60_000;
    for (let i = 0; ; i++) {
      try {
        return await this.claim(prefixName, pod, opts);
      } catch (e) {
        const retry =
          e instanceof ClaimError ||
          e instanceof NotServing ||
          (e instanceof KubeError && (e.status === 0 || e.status === 429 || e.status >= 500));
        if (!retry) throw e;
        const reason = e instanceof ClaimError ? e.reason : (e as Error).name;
        this.stats.refused[reason] = (this.stats.refused[reason] ?? 0) + 1;
        if (Date.now() > deadline)
          throw new Error(
            `${this.name}: no slice for pod ${pod.namespace}/${pod.name} after a minute of CNI ADD retries: ${(e as Error).message}`,
          );
        await sleep(Math.min(50 * 2 ** i, 500));
      }
    }
  }
}

/** An agent's identity on a node: an agent Pod there (it stays Pending) and a token bound to it. */
async function agentKubeConfig(node: string): Promise<KubeConfig> {
  return s.cp!.kubeConfigForToken(await agentToken(s.cp!, node), `agent-${node}`);
}

/**
 * Nodes of one test, each with its agent (a token bound to an agent Pod there) and the agent's two claimers,
 * stopped when the test ends: no test uses another test's nodes, so each runs alone with --match.
 */
async function nodesWithAgents(
  t: { teardown: (fn: () => Promise<void>) => void },
  nodes: [string, string][],
  labels: Record<string, string>,
): Promise<void> {
  for (const [node, address] of nodes) {
    await createNode(node, labels, address);
    const kc = await agentKubeConfig(node);
    s.agentKc.set(node, kc);
    const pair: [Claimer, Claimer] = [
      new Claimer(node, kc, `${node}-cni`),
      new Claimer(node, kc, `${node}-repair`, 300),
    ];
    s.agents.set(node, pair);
    for (const c of pair) await c.start();
    t.teardown(async () => {
      for (const c of pair) await c.stop();
      s.agents.delete(node);
    });
  }
}

function sumRefused(cs: readonly Claimer[]): string {
  const all: Record<string, number> = {};
  for (const c of cs) for (const [k, v] of Object.entries(c.stats.refused)) all[k] = (all[k] ?? 0) + v;
  return (
    Object.entries(all)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ') || 'none'
  );
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
      const crd = await admin().get<KubeObject>(
        `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${plural}.sixbed4.io`,
      );
      return ((crd?.status as { conditions?: { type: string; status: string }[] })?.conditions ?? []).some(
        (c) => c.type === 'Established' && c.status === 'True',
      );
    });
  }
  const token = await s.cp.serviceAccountToken(NS, OPERATOR_SA);
  s.operatorKubeconfig = await s.cp.writeKubeconfig(token, 'operator');
  // two replicas: one leads, one stands by
  s.ops.push(await OperatorProcess.start(s.operatorKubeconfig, 'op-a', OPERATOR_FLAGS));
  s.ops.push(await OperatorProcess.start(s.operatorKubeconfig, 'op-b', OPERATOR_FLAGS));
  s.unbound = new Kube(
    s.cp.kubeConfigForToken(await s.cp.serviceAccountToken(NS, AGENT_SA), 'agent-unbound'),
    'sixbed4-agent-unbound',
  );
  t.log(`control plane ${s.cp.startMs} ms; chart and two operators up after ${Date.now() - t0} ms`);
});

test.after.always(async (t) => {
  for (const pair of s.agents.values()) for (const c of pair) await c.stop();
  for (const op of s.ops) {
    if (process.env.SIXBED4_TEST_VERBOSE) t.log(`operator ${op.identity} log:\n${op.tail(100)}`);
    await op.stop();
  }
  await s.cp?.stop();
});

const leader = async (): Promise<OperatorProcess> =>
  eventually('a leader', async () => {
    for (const op of s.ops)
      if (op.child.exitCode === null && (await op.metric('sixbed4_operator_leader').catch(() => 0)) === 1) return op;
    return undefined;
  });

/** The leader's slice queue is empty and its reconcile count stopped moving. */
async function settled(): Promise<void> {
  const op = await leader();
  let last = -1;
  await eventually(
    'the slice allocator to settle',
    async () => {
      const n = await op.metricSum('sixbed4_operator_slice_reconcile_total');
      const q = await op.metric('sixbed4_operator_slice_queue_depth');
      const ok = n === last && q === 0 && n > 0;
      last = n;
      return ok;
    },
    30_000,
    700,
  );
}

/** The operator has annotated the pod with this slice. */
async function podShows(ns: string, name: string, x: SixBed4Slice): Promise<void> {
  await eventually(`pod ${ns}/${name} to show ${x.spec.slice}`, async () => {
    const a = (await getPod(ns, name))?.metadata.annotations ?? {};
    return a[ASSIGNED_SLICE_ANNOTATION] === x.spec.slice && a[ADDRESS_ANNOTATION] === x.spec.address;
  });
}

// ----------------------------------------------------------------- tests

ktest(
  'the API server refuses slices that could collide with a peer or the host, and any change of a slice',
  async (t) => {
    // (of a namespace that does not exist: the operator leaves those to the
    // garbage collector, and would release one of a live namespace at once)
    const base = (name: string, slice: string, address: string) => ({
      apiVersion: 'sixbed4.io/v1alpha1',
      kind: 'SixBed4Slice',
      metadata: { name },
      spec: {
        prefix: 'x',
        node: 'w1',
        slice,
        address,
        pod: { namespace: 'no-such-namespace', name: 'p', uid: '00000000-0000-4000-8000-000000000000' },
      },
    });
    const refused = async (o: unknown) => (await apiErrorMessage(admin().create(paths.slices, o))).message;
    t.regex(
      await refused(base('c1', '2001:db8:9:10:5:1:7:0/112', '2001:db8:9:10:5:1:7:1')),
      /non-zero port word \(bits 96..111\), where 6bed4 peers carry their UDP port/,
    );
    t.regex(
      await refused(base('c2', '2001:db8:9:10::/112', '2001:db8:9:10::1')),
      /holds the local addresses of the host itself/,
    );
    t.regex(await refused(base('c3', '2001:db8:9:10:5::/96', '2001:db8:9:10:5::1')), /is not an IPv6 \/112/);
    t.regex(
      await refused(base('c4', '2001:db8:9:10:5:1::/112', '2001:db8:9:10:5:2:0:1')),
      /the address must lie inside the slice/,
    );
    await admin().create(paths.slices, base('c5', '2001:db8:9:10:5:1::/112', '2001:db8:9:10:5:1:0:1'));
    t.regex(
      (await apiErrorMessage(admin().mergePatch(paths.slice('c5'), { spec: { node: 'w2' } }))).message,
      /immutable/,
    );
    // the name is the claim: a second create of the same name is refused
    const dup = await apiErrorMessage(
      admin().create(paths.slices, base('c5', '2001:db8:9:10:5:1::/112', '2001:db8:9:10:5:1:0:1')),
    );
    t.is(dup.code, 409);
    await admin().delete(paths.slice('c5'));
    // the sample with slices is accepted as it is (server-side dry run)
    await kubectlApply(s.adminKc!, readYamlDocs(join(REPO, 'crds', 'samples', 'slices-48.yaml')), { dryRun: true });
    const crd = await admin().get<{ spec: { versions: { additionalPrinterColumns: { name: string }[] }[] } }>(
      '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/sixbed4slices.sixbed4.io',
    );
    t.deepEqual(
      crd!.spec.versions[0]!.additionalPrinterColumns.map((c) => c.name),
      ['Slice', 'Namespace', 'Pod', 'Node', 'Delivered', 'Address', 'Prefix', 'Age'],
    );
  },
);

const BIG = 'big';
const PROBS = 'probs';
const BIG_LOCAL: string[] = ['::11'];
// per-node local addresses in many words A, at a B inside the small podWords
// range, so that claims have to step over them
for (let a = 1; a <= 100; a += 3) BIG_LOCAL.push(`::${a.toString(16)}:${(a % 8).toString(16)}:0:11`);

interface Check {
  pods: number;
  slices: number;
  namespaces: number;
  ms: number;
}

/** Everything that must hold for the big prefix, read from the API server. */
async function checkBig(
  t: { log: (...a: unknown[]) => void },
  namespaces: readonly string[],
  extraLocal: string[],
): Promise<string[] | Check> {
  const problems: string[] = [];
  const t0 = Date.now();
  const n64 = await nodes64(BIG, 3);
  const P = parsePrefix('2001:db8:48::/48');
  const slices = await slicesOf(BIG);
  const ranges = await rangesOf(BIG);
  const pods = (await admin().list<KubeObject>(paths.allPods, { labelSelector: 'test=slices' })).items.filter((p) =>
    namespaces.includes(p.metadata.namespace!),
  );
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
    if (w === undefined) {
      problems.push(`namespace ${ns} has no word`);
      continue;
    }
    const ann = nsObjs.get(ns)?.metadata.annotations?.[RANGE_ANNOTATION];
    if (ann !== rangePattern(P, w)) problems.push(`namespace ${ns} shows range ${ann}, not ${rangePattern(P, w)}`);
  }
  // every pod holds exactly one slice, in its namespace's word and its node's /64, and shows it
  const byPod = new Map<string, SixBed4Slice[]>();
  for (const x of slices) byPod.set(x.spec.pod.uid, [...(byPod.get(x.spec.pod.uid) ?? []), x]);
  const podUids = new Set(pods.map((p) => p.metadata.uid!));
  for (const x of slices)
    if (!podUids.has(x.spec.pod.uid))
      problems.push(`slice ${x.metadata.name} left behind by pod ${x.spec.pod.namespace}/${x.spec.pod.name}`);
  for (const p of pods) {
    const ns = p.metadata.namespace!;
    const mine = byPod.get(p.metadata.uid!) ?? [];
    if (mine.length !== 1) {
      problems.push(`pod ${ns}/${p.metadata.name} holds ${mine.length} slices`);
      continue;
    }
    const x = mine[0]!;
    const node = (p.spec as { nodeName: string }).nodeName;
    const w = sliceWords(x.spec.slice)!;
    if (x.spec.node !== node) problems.push(`slice ${x.metadata.name} on ${x.spec.node}, pod on ${node}`);
    if (w.node64.text !== n64.get(node)) problems.push(`slice ${x.spec.slice} not in ${node}'s ${n64.get(node)}`);
    if (w.a !== wordOf.get(ns)) problems.push(`slice ${x.spec.slice} of ${ns} not in its word ${wordOf.get(ns)}`);
    if (w.b > 7) problems.push(`slice ${x.spec.slice}: word B outside podWords`);
    if (x.metadata.name !== sliceName(BIG, subnetIndex(P, w.node64.text), w.a, w.b))
      problems.push(`slice ${x.metadata.name} misnamed`);
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

async function waitBig(
  t: { log: (...a: unknown[]) => void },
  what: string,
  namespaces: readonly string[],
  extraLocal: string[],
  expectPods: number,
): Promise<Check> {
  let last: string[] = [];
  return eventually(
    what,
    async () => {
      const r = await checkBig(t, namespaces, extraLocal);
      if (Array.isArray(r)) {
        last = r;
        throw new Error(`${r.length} problems: ${r.slice(0, 6).join('; ')}`);
      }
      if (r.pods !== expectPods) throw new Error(`${r.pods} pods, expected ${expectPods}`);
      void last;
      return r;
    },
    60_000,
    500,
  );
}

ktest(
  'race: hundreds of namespaces and pods, two operator replicas, two claimers per node at once: no slice twice, none leaked, none reserved',
  async (t) => {
    await nodesWithAgents(
      t,
      [
        ['w1', '198.51.100.41'],
        ['w2', '198.51.100.42'],
        ['w3', '198.51.100.43'],
      ],
      { 'sixbed4.io/router': 'true' },
    );
    const seed = Number(process.env.SIXBED4_TEST_SEED ?? Date.now() % 1_000_000);
    const rnd = prng(seed);
    t.log(`seed ${seed} (SIXBED4_TEST_SEED=${seed} repeats this scenario)`);
    const t0 = Date.now();
    await applyPrefix(BIG, {
      prefix: '2001:db8:48::/48',
      nodeSelector: { 'sixbed4.io/router': 'true' },
      localAddresses: BIG_LOCAL,
      slices: { enabled: true, namespaceWords: { first: 1, last: 100 }, podWords: { first: 0, last: 7 } },
    });
    const n64 = await nodes64(BIG, 3);
    // a full local address inside w1's /64, in a word some namespace will hold
    const extra = [`${n64.get('w1')!.replace('::/64', '')}:2:2:0:30`];
    await applyPrefix(BIG, {
      prefix: '2001:db8:48::/48',
      nodeSelector: { 'sixbed4.io/router': 'true' },
      localAddresses: [...BIG_LOCAL, ...extra],
      slices: { enabled: true, namespaceWords: { first: 1, last: 100 }, podWords: { first: 0, last: 7 } },
    });
    // the agents learn their local addresses from their share: w1's must carry the new one before its pods come
    const extraText = formatIPv6(parseIPv6(extra[0]!));
    await eventually("w1's share to hold the new local address", async () =>
      (await shareOf(admin(), BIG, 'w1'))?.node.localAddresses.some((a) => formatIPv6(parseIPv6(a)) === extraText),
    );

    // 60 namespaces x 6 pods, spread over three nodes at random (at most 6 per
    // namespace and node: podWords has room for 8, minus the reserved ones)
    const namespaces = Array.from({ length: 60 }, (_, i) => `race-${i}`);
    const nodes = ['w1', 'w2', 'w3'];
    const pods: { ns: string; name: string; node: string }[] = [];
    for (const ns of namespaces)
      for (let i = 0; i < 6; i++) pods.push({ ns, name: `p${i}`, node: nodes[Math.floor(rnd() * 3)]! });
    const uids = new Map<string, string>();
    const claimed = { same: 0, differ: 0 };
    /** The pod is created and scheduled; its node's two claimers claim for it at once. */
    const addPod = async (p: { ns: string; name: string; node: string }) => {
      const ref = await createPod(p.ns, p.name, p.node);
      uids.set(`${p.ns}/${p.name}`, ref.uid);
      const [a, b] = await Promise.all([cni(p.node).claimUntil(BIG, ref), repair(p.node).claimUntil(BIG, ref)]);
      if (a.slice.metadata.name === b.slice.metadata.name) claimed.same++;
      else claimed.differ++;
    };
    const tCreate = Date.now();
    // namespaces and pods at once, pods in random order: a pod's claim may come before the operator has claimed
    // its namespace's word (refused as NoNamespaceRange, and tried again)
    const nsCreated = new Map<string, () => void>();
    const nsReady = new Map(namespaces.map((ns) => [ns, new Promise<void>((r) => nsCreated.set(ns, r))]));
    const shuffled = [...pods].sort(() => rnd() - 0.5);
    await Promise.all([
      pool(namespaces, 12, async (ns) => {
        await createNamespace(ns, { 'sixbed4.io/prefix': BIG });
        nsCreated.get(ns)!();
      }),
      pool(shuffled, 24, async (p) => {
        await nsReady.get(p.ns);
        await addPod(p);
      }),
    ]);
    const created = Date.now() - tCreate;
    const r1 = await waitBig(t, 'every pod to hold one slice', namespaces, extra, pods.length);
    t.log(
      `${namespaces.length} namespaces and ${pods.length} pods created and claimed for in ${created} ms; all ${r1.slices} slices consistent after ${Date.now() - tCreate} ms`,
    );

    // churn: delete a third of the pods and add new ones at the same time; for some of the deleted ones a CNI ADD
    // comes late (the runtime was still setting up the sandbox) and claims a new slice after the operator released the old
    const gone = pods.filter(() => rnd() < 1 / 3);
    const late = gone.filter(() => rnd() < 1 / 4);
    const fresh = namespaces.flatMap((ns) =>
      rnd() < 0.5 ? [{ ns, name: 'q0', node: nodes[Math.floor(rnd() * 3)]! }] : [],
    );
    const survivors = pods.filter((p) => !gone.includes(p));
    // keep at most 6 per namespace and node (room for 8 minus reserved)
    const perNode = new Map<string, number>();
    for (const p of survivors) perNode.set(`${p.ns}/${p.node}`, (perNode.get(`${p.ns}/${p.node}`) ?? 0) + 1);
    const freshOk = fresh.filter((p) => (perNode.get(`${p.ns}/${p.node}`) ?? 0) < 6);
    let lateCreated = 0;
    const lateAdd = async (p: { ns: string; name: string; node: string }) => {
      const uid = uids.get(`${p.ns}/${p.name}`)!;
      await deletePod(p.ns, p.name);
      await eventually(
        `the slice of deleted pod ${p.ns}/${p.name} released`,
        async () => (await sliceOfPod(BIG, uid)).length === 0,
        30_000,
        200,
      );
      // blind: the claimer's view may still hold the released slice, which it would hand back without asking
      if (
        (await cni(p.node).claimUntil(BIG, { namespace: p.ns, name: p.name, uid }, { blind: true })).how === 'created'
      )
        lateCreated++;
    };
    const tChurn = Date.now();
    await Promise.all([
      pool(
        gone.filter((p) => !late.includes(p)),
        16,
        (p) => deletePod(p.ns, p.name),
      ),
      pool(late, 8, lateAdd),
      pool(freshOk, 8, addPod),
    ]);
    t.is(lateCreated, late.length, 'every late CNI ADD claimed a slice for its deleted pod');
    const r2 = await waitBig(
      t,
      'slices of deleted pods released, new pods served',
      namespaces,
      extra,
      survivors.length + freshOk.length,
    );
    t.log(
      `deleted ${gone.length} pods (${late.length} with a late CNI ADD after the release) and created ${freshOk.length}: consistent again after ${Date.now() - tChurn} ms (${r2.slices} slices)`,
    );

    const claimers = nodes.flatMap((n) => s.agents.get(n)!);
    const st = (k: 'created' | 'adopted' | 'held' | 'conflicts') =>
      claimers.map((c) => c.stats[k]).reduce((a, b) => a + b, 0);
    const op = await leader();
    t.log(
      `claims: ${claimed.same} pods got the same slice from both claimers, ${claimed.differ} two different ones (the operator keeps one); ` +
        `creates won ${st('created')}, adopted after AlreadyExists ${st('adopted')}, found in the claimer's view ${st('held')}; ` +
        `AlreadyExists answered ${st('conflicts')}; CNI ADDs refused and retried: ${sumRefused(claimers)}; ` +
        `operator ${op.identity}: words claimed ${await op.metric('sixbed4_operator_slices_allocated_total{kind="SixBed4Range"}')}, ` +
        `slices released ${await op.metric('sixbed4_operator_slices_released_total{kind="SixBed4Slice"}')}`,
    );
    t.true(st('adopted') > 0, "two claimers really raced for the same pod's name, and one adopted what the other made");

    // deleting every pod leaves no slice behind; the namespaces keep their words
    await pool([...survivors, ...freshOk], 24, (p) => deletePod(p.ns, p.name));
    await eventually('no slice left', async () => (await slicesOf(BIG)).length === 0, 30_000);
    const after = await rangesOf(BIG);
    t.is(after.length, namespaces.length);
    await settled();
    const p = await eventually('status: 0 allocated', async () => {
      const p = await getPrefix(BIG);
      return p?.status?.slices?.allocated === 0 && p.status.slices.namespaces?.length === namespaces.length
        ? p
        : undefined;
    });
    t.like(cond(p, 'SlicesAllocated'), { status: 'True', reason: 'AllAllocated' });
    t.is(p.status!.slices!.pending, 0);
    t.true(
      p.status!.slices!.namespaces!.every(
        (n) => n.pods === 0 && n.range === rangePattern(parsePrefix('2001:db8:48::/48'), n.word),
      ),
    );
    t.log(`race test ${Date.now() - t0} ms`);
  },
);

ktest(
  "a namespace's word filled to the last slice on a node by racing claimers, then hammered by a claimer blind to every slice: each slice once, each pod one, then SlicesExhausted",
  async (t) => {
    await nodesWithAgents(t, [['solo', '198.51.100.45']], { role: 'solo' });
    // 16 words B on one node and 16 pods, some of whose first choices collide
    // (a birthday problem), all claimed for at once by the node's two claimers.
    // Then a claimer that knows no slice at all (every word B seems free to it:
    // it learns only from AlreadyExists) claims for every pod, round after
    // round, in ascending order: where two pods share a first choice it asks for
    // a name the other pod holds, and the API server must refuse it.
    await applyPrefix('tight', {
      prefix: '2001:db8:64:2::/64',
      nodeSelector: { role: 'solo' },
      slices: { enabled: true, namespaceWords: { first: 0x10, last: 0x10 }, podWords: { first: 0x100, last: 0x10f } },
    });
    await nodes64('tight', 1);
    await createNamespace('tight', { 'sixbed4.io/prefix': 'tight' });
    const names = Array.from({ length: 16 }, (_, i) => `t${i}`);
    const firsts = new Set(names.map((n) => preferredWord(`tight/${n}`, { first: 0x100, last: 0x10f })));
    t.true(firsts.size < 16, 'the scenario needs pods with the same first choice');
    const refs = new Map<string, PodRef>();
    for (const n of [...names].reverse()) refs.set(n, await createPod('tight', n, 'solo'));
    await Promise.all(
      [...refs.values()].flatMap((ref) => [
        cni('solo').claimUntil('tight', ref),
        repair('solo').claimUntil('tight', ref),
      ]),
    );
    // (two claims for one pod from different views may both win a name; the operator keeps one, and a pod that
    // found the word full meanwhile was tried again)
    const full = await eventually('16 slices, one per pod, each pod showing its own', async () => {
      const l = await slicesOf('tight');
      if (l.length !== 16 || new Set(l.map((x) => x.spec.pod.uid)).size !== 16) return undefined;
      const shown = (await admin().list<KubeObject>(paths.pods('tight'))).items
        .map((p) => p.metadata.annotations?.[ASSIGNED_SLICE_ANNOTATION])
        .sort();
      return JSON.stringify(shown) === JSON.stringify(l.map((x) => x.spec.slice).sort()) ? l : undefined;
    });
    const holds = new Map(full.map((x) => [x.spec.pod.uid, x]));

    const blind = new Claimer('solo', s.agentKc.get('solo')!, 'blind');
    for (let round = 0; round < 10; round++) {
      for (const n of names) {
        const ref = refs.get(n)!;
        const got = await blind.claim('tight', ref, { blind: true });
        if (got.slice.metadata.uid !== holds.get(ref.uid)!.metadata.uid)
          t.fail(`round ${round}: pod ${n} was handed ${got.slice.metadata.name}, not the slice it holds`);
      }
    }
    const st = blind.stats;
    const cs = [cni('solo'), repair('solo')];
    t.log(
      `${firsts.size} distinct first choices for 16 pods; the two claimers: created ${cs.map((c) => c.stats.created).join(' + ')}, ` +
        `adopted ${cs.map((c) => c.stats.adopted).join(' + ')}, refused and retried: ${sumRefused(cs)}; ` +
        `blind claimer (10 rounds): created ${st.created}, adopted ${st.adopted}, AlreadyExists for names of other pods ${st.conflicts - st.adopted}`,
    );
    t.true(st.conflicts - st.adopted > 0, 'the blind claimer asked for names held by other pods');
    t.is(st.created, 0, 'and got none of them: the word is full');
    t.is(st.adopted, 160, "every claim came back with the pod's own slice");
    const after = await slicesOf('tight');
    t.deepEqual(
      after.map((x) => x.metadata.uid).sort(),
      full.map((x) => x.metadata.uid).sort(),
      'the very same 16 objects',
    );
    t.deepEqual(
      after.map((x) => sliceWords(x.spec.slice)!.b).sort((a, b) => a - b),
      Array.from({ length: 16 }, (_, i) => 0x100 + i),
      'each slice once',
    );
    t.is(new Set(after.map((x) => x.spec.pod.uid)).size, 16, 'each pod one');

    // a 17th pod: the word is full on this node, whether the claimer knows it (its view) or asks (blind)
    const extra = await createPod('tight', 'one-too-many', 'solo');
    for (const [who, claim] of [
      ['blind', () => blind.claim('tight', extra, { blind: true })],
      ['cni', () => cni('solo').claim('tight', extra)],
    ] as const) {
      const e = await t.throwsAsync(claim(), { instanceOf: ClaimError }, who);
      t.like(e, { reason: 'SlicesExhausted', transient: false }, who);
      t.regex(
        e!.message,
        /namespace tight's word 16 of tight is full on node solo \(2001:db8:64:2::\/64\): every word B from 256 to 271 is held or reserved/,
      );
    }
    t.is(blind.stats.created, 0);
    // released (the pod is gone: the operator), the slice goes to the waiting pod at its CNI ADD's next try
    const t3 = holds.get(refs.get('t3')!.uid)!;
    await deletePod('tight', 't3');
    const got = await cni('solo').claimUntil('tight', extra);
    t.is(got.slice.spec.slice, t3.spec.slice, "t3's word, the only one free");
    await podShows('tight', 'one-too-many', got.slice);
    t.is((await slicesOf('tight')).length, 16);
  },
);

ktest('an operator restart changes nothing: the new leader writes nothing', async (t) => {
  await nodesWithAgents(t, [['still-1', '198.51.100.47']], { 'sixbed4.io/still': 'true' });
  await applyPrefix('still', {
    prefix: '2001:db8:66:1::/64',
    nodeSelector: { 'sixbed4.io/still': 'true' },
    slices: { enabled: true },
  });
  await nodes64('still', 1);
  await createNamespace('still', { 'sixbed4.io/prefix': 'still' });
  for (const n of ['a', 'b', 'c'])
    await podShows(
      'still',
      n,
      (await cni('still-1').claimUntil('still', await createPod('still', n, 'still-1'))).slice,
    );
  await settled();
  const state = async () =>
    JSON.stringify([
      (await slicesOf('still')).map((x) => x.metadata.resourceVersion),
      (await rangesOf('still')).map((x) => x.metadata.resourceVersion),
      (await getPrefix('still'))!.metadata.resourceVersion,
    ]);
  const before = await state();
  const old = await leader();
  t.is(await old.stop('SIGTERM'), 0);
  s.ops = s.ops.filter((o) => o !== old);
  s.ops.push(await OperatorProcess.start(s.operatorKubeconfig!, `op-${s.ops.length + 2}`, OPERATOR_FLAGS));
  const next = await leader();
  t.not(next, old);
  await settled();
  t.is(await next.metricSum('sixbed4_operator_api_writes_total'), 0, 'no writes at all');
  // it looked at every namespace
  const namespaces = (await admin().list<KubeObject>(paths.namespaces)).items.length;
  t.true((await next.metricSum('sixbed4_operator_slice_reconcile_total')) >= namespaces, `${namespaces} namespaces`);
  t.is(await state(), before);
});

ktest(
  "reserved slices are skipped by the claim; a full word gives SlicesExhausted; a full word space gives the operator's Events and status reasons; all recover",
  async (t) => {
    await nodesWithAgents(t, [['solo2', '198.51.100.46']], { role: 'solo2' });
    // one word A (7), four words B (0..3), two of them holding local addresses
    // a listen port of its own (one agent may serve several prefixes on one node)
    await applyPrefix('resv', {
      prefix: '2001:db8:64:1::/64',
      nodeSelector: { role: 'solo2' },
      listen: { port: 25791 },
      localAddresses: ['::7:1:0:11', '2001:db8:64:1:7:2:0:30'],
      slices: { enabled: true, namespaceWords: { first: 7, last: 7 }, podWords: { first: 0, last: 3 } },
    });
    await nodes64('resv', 1);
    await createNamespace('resv-a', { 'sixbed4.io/prefix': 'resv' });
    // the first pod's preferred word B is a reserved one
    const first = Array.from({ length: 200 }, (_, i) => `r${i}`).find(
      (n) => preferredWord(`resv-a/${n}`, { first: 0, last: 3 }) === 1,
    );
    t.truthy(first, 'a pod name whose first choice is B = 1');
    const a0 = await createPod('resv-a', first!, 'solo2');
    const x1 = await createPod('resv-a', 'x1', 'solo2');
    const s0 = (await cni('solo2').claimUntil('resv', a0)).slice;
    t.is(s0.spec.slice, '2001:db8:64:1:7:3::/112', 'B = 1 and B = 2 hold local addresses: the claim steps over both');
    const s1 = (await repair('solo2').claimUntil('resv', x1)).slice;
    t.is(s1.spec.slice, '2001:db8:64:1:7::/112');
    await podShows('resv-a', first!, s0);
    await podShows('resv-a', 'x1', s1);
    t.is(
      (await admin().get<KubeObject>(paths.namespace('resv-a')))!.metadata.annotations![RANGE_ANNOTATION],
      '2001:db8:64:1:7:*:0:0/112',
    );

    // a third pod: the word is full on this node (the agent's answer; the operator counts the pod as pending)
    const x2 = await createPod('resv-a', 'x2', 'solo2');
    const full = await t.throwsAsync(cni('solo2').claim('resv', x2), { instanceOf: ClaimError });
    t.like(full, { reason: 'SlicesExhausted', transient: false });
    t.regex(
      full!.message,
      /namespace resv-a's word 7 of resv is full on node solo2 \(2001:db8:64:1::\/64\): every word B from 0 to 3 is held or reserved/,
    );
    const p = await eventually('status: 2 allocated, 1 pending', async () => {
      const p = await getPrefix('resv');
      return p?.status?.slices?.allocated === 2 && p.status.slices.pending === 1 ? p : undefined;
    });
    t.like(p.status!.slices, {
      allocated: 2,
      pending: 1,
      namespaces: [{ name: 'resv-a', word: 7, pods: 2, range: '2001:db8:64:1:7:*:0:0/112' }],
    });

    // a second namespace: no word left (the operator's to say); its pod's claim finds no range
    await createNamespace('resv-b', { 'sixbed4.io/prefix': 'resv' });
    const y = await createPod('resv-b', 'y', 'solo2');
    const nev = await eventually('a NamespaceRangesExhausted event', async () =>
      (await events('default', 'resv-b')).find((e) => e.reason === 'NamespaceRangesExhausted'),
    );
    t.is(nev.type, 'Warning');
    t.regex(nev.message, /every word A of SixBed4Prefix resv \(7 to 7, 1 namespaces\) is held by another namespace/);
    const none = await t.throwsAsync(cni('solo2').claim('resv', y), { instanceOf: ClaimError });
    t.like(none, { reason: 'NoNamespaceRange', transient: true });
    t.regex(none!.message, /namespace resv-b has no range of resv yet/);
    await eventually('the pod hears why', async () =>
      (await events('resv-b', 'y')).some((e) => e.reason === 'NoNamespaceRange'),
    );
    const pe = await eventually('SlicesAllocated False', async () => {
      const p = await getPrefix('resv');
      return cond(p, 'SlicesAllocated')?.status === 'False' ? p : undefined;
    });
    t.like(cond(pe, 'SlicesAllocated'), { reason: 'NamespaceRangesExhausted' });
    t.regex(cond(pe, 'SlicesAllocated')!.message, /namespace resv-b: every word A of SixBed4Prefix resv/);
    t.regex(cond(pe, 'SlicesAllocated')!.message, /pod resv-b\/y: namespace resv-b has no range of resv/);

    // a slice is released (its pod is gone): the waiting pod gets it at its CNI ADD's next try
    await deletePod('resv-a', 'x1');
    const s2 = (await cni('solo2').claimUntil('resv', x2)).slice;
    t.is(s2.spec.slice, s1.spec.slice, "x1's word, the only one free");
    await podShows('resv-a', 'x2', s2);
    // the namespace opting out frees the word for the other one
    await admin().mergePatch(paths.namespace('resv-a'), { metadata: { labels: { 'sixbed4.io/prefix': null } } });
    await eventually('resv-b holds word 7', async () =>
      (await rangesOf('resv')).some((r) => r.spec.namespace.name === 'resv-b'),
    );
    const sy = (await cni('solo2').claimUntil('resv', y)).slice;
    t.true(['2001:db8:64:1:7:0:0:1', '2001:db8:64:1:7:3:0:1'].includes(sy.spec.address), sy.spec.address);
    await podShows('resv-b', 'y', sy);
    t.deepEqual(
      (await rangesOf('resv')).map((r) => [r.metadata.name, r.spec.namespace.name]),
      [['resv-0007', 'resv-b']],
    );
    t.false(
      (await slicesOf('resv')).some((x) => x.spec.pod.namespace === 'resv-a'),
      "opted out: resv-a's slices are released",
    );
    await eventually(
      "opted out: the pods' annotations go with their slices, the namespace's with its word",
      async () => {
        const pods = (await admin().list<KubeObject>(paths.pods('resv-a'))).items;
        const ns = await admin().get<KubeObject>(paths.namespace('resv-a'));
        return (
          pods.every(
            (p) =>
              !(ASSIGNED_SLICE_ANNOTATION in (p.metadata.annotations ?? {})) &&
              !(ADDRESS_ANNOTATION in (p.metadata.annotations ?? {})),
          ) && !(RANGE_ANNOTATION in (ns!.metadata.annotations ?? {}))
        );
      },
    );
    await eventually(
      'SlicesAllocated True again',
      async () => cond(await getPrefix('resv'), 'SlicesAllocated')?.status === 'True',
    );
  },
);

ktest(
  'bad annotations, pods on nodes that serve no prefix, host-network pods and unlabelled namespaces get Events saying why',
  async (t) => {
    await nodesWithAgents(
      t,
      [
        ['pw1', '198.51.100.51'],
        ['pw2', '198.51.100.52'],
        ['pw3', '198.51.100.53'],
      ],
      { 'sixbed4.io/probs': 'true' },
    );
    await createNode('pplain', {}, '198.51.100.54');
    await applyPrefix(PROBS, {
      prefix: '2001:db8:65::/48',
      nodeSelector: { 'sixbed4.io/probs': 'true' },
      localAddresses: ['::11'],
      slices: { enabled: true },
    });
    await nodes64(PROBS, 3);
    await createNamespace('probs', { 'sixbed4.io/prefix': PROBS });
    await createPod('probs', 'bad', 'pw1', { 'sixbed4.io/slice': 'please' });
    await createPod('probs', 'far', 'pplain');
    await createPod('probs', 'host', 'pw2', undefined, { hostNetwork: true });
    const fine = await createPod('probs', 'fine', 'pw3');
    await createPod('probs', 'later', undefined); // not scheduled: waits quietly
    const want: [string, string, RegExp][] = [
      [
        'bad',
        'InvalidSliceAnnotation',
        /annotation sixbed4.io\/slice: "please" is neither "true" \(give the pod a \/112\) nor "false"/,
      ],
      [
        'far',
        'NodeNotServing',
        /node pplain serves no \/64 of SixBed4Prefix probs \(the node is not selected by spec.nodeSelector \{"sixbed4.io\/probs":"true"\}\)/,
      ],
      ['host', 'HostNetworkPod', /uses the host network/],
    ];
    for (const [pod, reason, re] of want) {
      const e = await eventually(`${reason} on ${pod}`, async () =>
        (await events('probs', pod)).find((x) => x.reason === reason),
      );
      t.is(e.type, 'Warning');
      t.regex(e.message, re);
    }
    // the pod that can have a slice gets it from its node's agent (its CNI ADD), and the operator shows it
    await podShows('probs', 'fine', (await cni('pw3').claimUntil(PROBS, fine)).slice);
    const p = await eventually('the prefix status says why', async () => {
      const p = await getPrefix(PROBS);
      // far, host and later ask and hold none (bad's annotation is not a request)
      return cond(p, 'SlicesAllocated')?.status === 'False' && p?.status?.slices?.pending === 3 ? p : undefined;
    });
    t.regex(cond(p, 'SlicesAllocated')!.message, /pod probs\/far: node pplain serves no \/64/);
    t.regex(cond(p, 'SlicesAllocated')!.message, /pod probs\/bad: annotation/);

    // a namespace naming no prefix, and a pod asking in a namespace that did not opt in
    await createNamespace('typo', { 'sixbed4.io/prefix': 'bgi' });
    await createNamespace('plainns', {});
    await createPod('plainns', 'asks', 'pw1');
    const te = await eventually('UnknownPrefix on the namespace', async () =>
      (await events('default', 'typo')).find((e) => e.reason === 'UnknownPrefix'),
    );
    t.is(te.message, 'label sixbed4.io/prefix=bgi names no SixBed4Prefix; the namespace gets no slices');
    const ne = await eventually('NamespaceNotOptedIn on the pod', async () =>
      (await events('plainns', 'asks')).find((e) => e.reason === 'NamespaceNotOptedIn'),
    );
    t.regex(ne.message, /namespace plainns does not take slices from any SixBed4Prefix/);

    // fixed: the annotation corrected (the pod's next sandbox asks, and its agent claims), the other pods deleted
    const bad = await getPod('probs', 'bad');
    await admin().mergePatch(paths.pod('probs', 'bad'), { metadata: { annotations: { 'sixbed4.io/slice': 'true' } } });
    await podShows(
      'probs',
      'bad',
      (await cni('pw1').claimUntil(PROBS, { namespace: 'probs', name: 'bad', uid: bad!.metadata.uid! })).slice,
    );
    await deletePod('probs', 'far');
    await deletePod('probs', 'host');
    await deletePod('probs', 'later');
    await eventually(
      'SlicesAllocated True again',
      async () => cond(await getPrefix(PROBS), 'SlicesAllocated')?.status === 'True',
    );
    await eventually('a Normal event on recovery', async () =>
      (await events('default', PROBS)).some((e) => e.type === 'Normal' && e.reason === 'SlicesAllocated'),
    );
  },
);

ktest(
  "the node agent's side: it watches its node's slices by field selector, claims and reports for its own node only, and deletes none",
  async (t) => {
    await nodesWithAgents(
      t,
      [
        ['sa1', '198.51.100.55'],
        ['sa2', '198.51.100.56'],
      ],
      { 'sixbed4.io/side': 'true' },
    );
    await applyPrefix('side', {
      prefix: '2001:db8:67::/48',
      nodeSelector: { 'sixbed4.io/side': 'true' },
      slices: { enabled: true },
    });
    await nodes64('side', 2);
    await createNamespace('side', { 'sixbed4.io/prefix': 'side' });
    await podShows('side', 'fine', (await cni('sa1').claimUntil('side', await createPod('side', 'fine', 'sa1'))).slice);
    const sa1 = s.agentKc.get('sa1')!;
    const agent = new Kube(sa1, 'sixbed4-agent-sa1');
    // as the agent does: an informer of its node's slices (list + watch with a field selector)
    const seen: string[] = [];
    const inf = new Informer<SixBed4Slice>(agent, paths.slices, {
      name: 'slices',
      fieldSelector: 'spec.node=sa1',
      log: logger('agent-test'),
      onChange: (type, x) => seen.push(`${type} ${x.spec.node} ${x.spec.pod.name}`),
    });
    t.teardown(() => inf.stop());
    await inf.start();
    await inf.synced;
    const mine = inf.list();
    t.true(
      mine.some((m) => m.spec.pod.name === 'fine'),
      'the slice it claimed for pod fine',
    );
    t.true(mine.every((x) => x.spec.node === 'sa1'));
    // it may create slices for its own node: that is its claim at a CNI ADD
    const watched = await createPod('side', 'watched', 'sa1');
    t.is((await cni('sa1').claim('side', watched)).how, 'created');
    const elsewhere = await createPod('side', 'elsewhere', 'sa2');
    t.is((await cni('sa2').claim('side', elsewhere)).how, 'created');
    await eventually('the watch to deliver the new slice', async () => seen.includes('add sa1 watched'));
    t.false(
      seen.some((x) => x.includes('elsewhere')),
      "only its own node's slices",
    );
    const x = mine.find((m) => m.spec.pod.name === 'fine')!;
    await agent.apply(
      paths.sliceStatus(x.metadata.name!),
      {
        apiVersion: 'sixbed4.io/v1alpha1',
        kind: 'SixBed4Slice',
        metadata: { name: x.metadata.name },
        status: {
          delivered: true,
          state: 'delivered',
          hostInterface: 's40123456789abc',
          lastUpdate: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'),
        },
      },
      'sixbed4-agent-sa1',
    );
    const back = await admin().get<SixBed4Slice>(paths.slice(x.metadata.name!));
    t.like(back!.status, { delivered: true, state: 'delivered', hostInterface: 's40123456789abc' });

    // a slice for another node: the admission policy refuses it, naming both nodes
    const forged = (name: string, node: string) => ({
      apiVersion: 'sixbed4.io/v1alpha1',
      kind: 'SixBed4Slice',
      metadata: { name },
      spec: { ...x.spec, node },
    });
    const other = await apiErrorMessage(agent.create(paths.slices, forged('forged-w1', 'sa2')));
    t.true([403, 422].includes(other.code), `HTTP ${other.code}`);
    t.regex(
      other.message,
      /a sixbed4 agent creates slices only for its own node: this one runs on sa1, the slice is for sa2/,
    );
    // an agent token bound to no Pod knows no node: refused even for w3
    const unbound = await apiErrorMessage(s.unbound!.create(paths.slices, forged('forged-unbound', 'sa1')));
    t.true([403, 422].includes(unbound.code), `HTTP ${unbound.code}`);
    t.regex(unbound.message, /this one runs on no node \(its token is not bound to a Pod\), the slice is for sa1/);
    t.is(await admin().get(paths.slice('forged-w1')), undefined);
    t.is(await admin().get(paths.slice('forged-unbound')), undefined);
    // RBAC: no delete, no change of a slice (releasing is the operator's)
    const code = async (pr: Promise<unknown>) => (await apiErrorMessage(pr)).code;
    t.is(await code(agent.request('DELETE', paths.slice(x.metadata.name!))), 403);
    t.is(await code(agent.mergePatch(paths.slice(x.metadata.name!), { metadata: { labels: { a: 'b' } } })), 403);
    // the operator's status writes do not disturb the agent's fields
    await settled();
    t.true((await admin().get<SixBed4Slice>(paths.slice(x.metadata.name!)))!.status!.delivered);
    await deletePod('side', 'watched');
    await deletePod('side', 'elsewhere');
  },
);

ktest(
  'a pod that stops asking loses its slice and annotations; a pod re-created with the same name gets its address back at its next claim',
  async (t) => {
    await nodesWithAgents(t, [['ak1', '198.51.100.57']], { 'sixbed4.io/ask': 'true' });
    await applyPrefix('ask', {
      prefix: '2001:db8:68:1::/64',
      nodeSelector: { 'sixbed4.io/ask': 'true' },
      slices: { enabled: true },
    });
    await nodes64('ask', 1);
    await createNamespace('ask', { 'sixbed4.io/prefix': 'ask' });
    await podShows('ask', 'fine', (await cni('ak1').claimUntil('ask', await createPod('ask', 'fine', 'ak1'))).slice);
    const before = await getPod('ask', 'fine');
    const addr = before!.metadata.annotations![ADDRESS_ANNOTATION]!;
    const old = (await sliceOfPod('ask', before!.metadata.uid!))[0]!;
    t.is(old.spec.address, addr);
    await admin().mergePatch(paths.pod('ask', 'fine'), { metadata: { annotations: { 'sixbed4.io/slice': 'false' } } });
    await eventually('annotations removed', async () => {
      const p = await getPod('ask', 'fine');
      return (
        p &&
        !(ASSIGNED_SLICE_ANNOTATION in (p.metadata.annotations ?? {})) &&
        !(ADDRESS_ANNOTATION in (p.metadata.annotations ?? {}))
      );
    });
    t.deepEqual(await sliceOfPod('ask', before!.metadata.uid!), [], 'its slice released');
    await deletePod('ask', 'fine');
    const again = await createPod('ask', 'fine', 'ak1');
    // (the agent's view must have seen the release, or it would step over the word as held)
    await eventually(
      "ak1's agent sees the old slice go",
      async () =>
        !cni('ak1')
          .view()
          .some((x) => x.metadata.uid === old.metadata.uid),
    );
    const got = (await cni('ak1').claimUntil('ask', again)).slice;
    t.is(got.spec.address, addr, 'same namespace, name and node: the same first choice, still free');
    await podShows('ask', 'fine', got);
  },
);

ktest(
  'a deleted namespace takes its words and slices with it through the garbage collector, even with no operator running',
  async (t) => {
    await nodesWithAgents(
      t,
      [
        ['gc1', '198.51.100.58'],
        ['gc2', '198.51.100.59'],
        ['gc3', '198.51.100.60'],
      ],
      { 'sixbed4.io/gc': 'true' },
    );
    await applyPrefix('gcp', {
      prefix: '2001:db8:69::/48',
      nodeSelector: { 'sixbed4.io/gc': 'true' },
      slices: { enabled: true },
    });
    await nodes64('gcp', 3);
    await createNamespace('gc-ns', { 'sixbed4.io/prefix': 'gcp' });
    for (const i of [0, 1, 2]) {
      const ref = await createPod('gc-ns', `g${i}`, `gc${i + 1}`);
      await cni(`gc${i + 1}`).claimUntil('gcp', ref);
    }
    await eventually(
      'three slices and a word',
      async () =>
        (await slicesOf('gcp')).filter((x) => x.spec.pod.namespace === 'gc-ns').length === 3 &&
        (await rangesOf('gcp')).some((r) => r.spec.namespace.name === 'gc-ns'),
    );
    const owned = (await slicesOf('gcp')).find((x) => x.spec.pod.namespace === 'gc-ns')!;
    t.like(owned.metadata.ownerReferences![0], { apiVersion: 'v1', kind: 'Namespace', name: 'gc-ns' });
    const word = (await rangesOf('gcp')).find((r) => r.spec.namespace.name === 'gc-ns')!;
    t.like(word.metadata.ownerReferences![0], { apiVersion: 'v1', kind: 'Namespace', name: 'gc-ns' });
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
    await eventually(
      'the namespace gone',
      async () => (await admin().get(paths.namespace('gc-ns'))) === undefined,
      30_000,
    );
    await eventually(
      'its slices and word collected',
      async () =>
        !(await slicesOf('gcp')).some((x) => x.spec.pod.namespace === 'gc-ns') &&
        !(await rangesOf('gcp')).some((r) => r.spec.namespace.name === 'gc-ns'),
      30_000,
    );
    // an operator again for whatever runs after this test
    s.ops.push(await OperatorProcess.start(s.operatorKubeconfig!, 'op-after-gc', OPERATOR_FLAGS));
    t.pass();
  },
);
