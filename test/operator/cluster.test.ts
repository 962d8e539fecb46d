// The operator against a real kube-apiserver (etcd, RBAC, and the garbage
// collector of kube-controller-manager), installed with the Helm chart and
// running as `sixbed4 operator` processes under the chart's ServiceAccount,
// so the chart's RBAC is what is exercised. Nodes are fake Node objects (no
// kubelet: DaemonSet pods stay unscheduled); agents are simulated by writing
// their status entries with the chart's agent ServiceAccount.
//
// Needs `bash test/k8s/build-control-plane.sh` (CI runs it); skips otherwise.
import test from 'ava';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import type { KubeConfig } from '@kubernetes/client-node';
import { controlPlaneSkipReason, startControlPlane, type ControlPlane } from '../k8s/controlplane.js';
import { nodeBinaries } from '../k8s/node.js';
import {
  AGENT_REPORTS_ANNOTATION,
  ALLOCATIONS_ANNOTATION,
  agentLeaseName,
  CLEANUP_TIMEOUT_ANNOTATION,
  FINALIZER,
  tunnelName,
  type KubeObject,
  type SixBed4Prefix,
} from '../../kube/api.js';
import { Kube, paths } from '../../kube/client.js';
import { subnetIndex } from '../../kube/subnets.js';
import { parsePrefix } from '../../lib/ip.js';
import { microTime } from '../../agent/cluster/lease.js';
import {
  AGENT_DAEMONSET,
  AGENT_SA,
  agentToken,
  apiErrorMessage,
  installChart,
  kubectlApply,
  NS,
  OPERATOR_SA,
  OPERATOR_FLAGS,
  OperatorProcess,
  parseYamlDocs,
  readYamlDocs,
  REPO,
  clusterTest,
} from '../helpers/cluster.js';
import { eventually } from '../helpers/wait.js';

const run = promisify(execFile);
const skip = controlPlaneSkipReason();
if (skip) test.serial.skip(`operator against a real API server: ${skip}`, () => {});

interface State {
  cp?: ControlPlane;
  admin?: Kube;
  adminKc?: KubeConfig;
  operatorKubeconfig?: string;
  agent?: Kube;
  ops: OperatorProcess[];
  /** when the garbage collector has rediscovered the API (CRDs created after it started) */
  gcKnowsCrdAt?: number;
}
const ktest = clusterTest(skip, () => s.ops);
const s: State = { ops: [] };

test.before(async (t) => {
  if (skip) return;
  const t0 = Date.now();
  s.cp = await startControlPlane({ controllerManager: true, controllers: ['garbagecollector'] });
  // kube-controller-manager's garbage collector re-reads discovery every 30 s
  // (fixed); until then it ignores the deletion of objects of CRDs created
  // after it started, and with them the cascade to their dependents.
  s.gcKnowsCrdAt = Date.now() + 32_000;
  s.adminKc = s.cp.kubeConfig();
  s.admin = new Kube(s.adminKc, 'sixbed4-test');
  // helm install of the chart (CRD, ServiceAccounts, RBAC, operator Deployment: it stays unscheduled here)
  await installChart(s.cp, ['--set', 'image.tag=test']);
  for (const plural of ['sixbed4prefixes', 'sixbed4slices', 'sixbed4ranges']) {
    await eventually(`the CRD ${plural} to be established`, async () => {
      const crd = await s.admin!.get<KubeObject>(
        `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${plural}.sixbed4.io`,
      );
      return ((crd?.status as { conditions?: { type: string; status: string }[] })?.conditions ?? []).some(
        (c) => c.type === 'Established' && c.status === 'True',
      );
    });
  }
  // the operator runs as the chart's ServiceAccount, the simulated agents as the agent's
  s.operatorKubeconfig = await s.cp.writeKubeconfig(await s.cp.serviceAccountToken(NS, OPERATOR_SA), 'operator');
  s.agent = new Kube(s.cp.kubeConfigForToken(await s.cp.serviceAccountToken(NS, AGENT_SA), 'agent'), 'sixbed4-agent');
  s.ops.push(await OperatorProcess.start(s.operatorKubeconfig, 'op-a', OPERATOR_FLAGS));
  t.log(`control plane ${s.cp.startMs} ms, chart installed and operator up in ${Date.now() - t0} ms total`);
});

test.after.always(async (t) => {
  for (const op of s.ops) {
    if (process.env.SIXBED4_TEST_VERBOSE) t.log(`operator ${op.identity} log:\n${op.tail(200)}`);
    await op.stop();
  }
  await s.cp?.stop();
});

/** the operator currently in charge */
const op = () => s.ops[s.ops.length - 1]!;
const admin = () => s.admin!;
const getPrefix = (name: string) => admin().get<SixBed4Prefix>(paths.prefix(name));
const cond = (p: SixBed4Prefix | undefined, type: string) => p?.status?.conditions?.find((c) => c.type === type);

async function createNode(
  name: string,
  labels: Record<string, string>,
  address?: string,
  type = 'InternalIP',
): Promise<void> {
  await admin().create(paths.nodes, {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels },
    ...(address ? { status: { addresses: [{ type, address }] } } : {}),
  });
}

async function events(name: string): Promise<{ reason: string; type: string; message: string }[]> {
  const l = await admin().list<{ reason: string; type: string; message: string; involvedObject: { name: string } }>(
    paths.events('default'),
    { fieldSelector: `involvedObject.name=${name}` },
  );
  return l.items;
}

/** A /64 served by one node of its own (so that a test needs no other test's objects). */
async function servedPrefix(name: string, node: string, prefix: string, address: string): Promise<SixBed4Prefix> {
  await createNode(node, { 'sixbed4.io/test': name }, address);
  await kubectlApply(s.adminKc!, [
    {
      apiVersion: 'sixbed4.io/v1alpha1',
      kind: 'SixBed4Prefix',
      metadata: { name },
      spec: { prefix, nodeSelector: { 'sixbed4.io/test': name } },
    } as never,
  ]);
  return eventually(`${name} served by ${node}`, async () => {
    const p = await getPrefix(name);
    return p?.status?.nodes?.length === 1 ? p : undefined;
  });
}

/** resourceVersions of every object the operator owns or writes */
async function resourceVersions(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const p of (await admin().list<KubeObject>(paths.prefixes)).items)
    out[`prefix/${p.metadata.name}`] = p.metadata.resourceVersion!;
  for (const d of (await admin().list<KubeObject>(paths.daemonSets(NS))).items)
    out[`ds/${d.metadata.name}`] = d.metadata.resourceVersion!;
  for (const c of (
    await admin().list<KubeObject>(paths.configMaps(NS), {
      labelSelector: 'app.kubernetes.io/managed-by=sixbed4-operator',
    })
  ).items)
    out[`cm/${c.metadata.name}`] = c.metadata.resourceVersion!;
  return out;
}

/** The agent of a node: the chart's agent ServiceAccount with a token bound to a Pod on that node. */
const agents = new Map<string, Kube>();
async function agentOf(node: string): Promise<Kube> {
  let k = agents.get(node);
  if (!k) {
    k = new Kube(s.cp!.kubeConfigForToken(await agentToken(s.cp!, node), `agent-${node}`), 'sixbed4-agent');
    agents.set(node, k);
  }
  return k;
}

/** an agent's report, written as the agent does it: into its node's Lease, as that node's agent */
async function agentReport(prefix: string, node: string, fields: Record<string, unknown>, as?: Kube): Promise<void> {
  const path = paths.lease(NS, agentLeaseName(node));
  const now = new Date();
  const agent = as ?? (await agentOf(node));
  for (;;) {
    const cur = await agent.get<KubeObject & { spec?: unknown }>(path);
    const reports = JSON.parse(cur?.metadata.annotations?.[AGENT_REPORTS_ANNOTATION] ?? '{}') as Record<
      string,
      unknown
    >;
    reports[prefix] = { lastReport: now.toISOString().replace(/\.\d{3}Z$/, 'Z'), ...fields };
    const lease = {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: {
        name: agentLeaseName(node),
        namespace: NS,
        labels: { 'app.kubernetes.io/name': 'sixbed4', 'app.kubernetes.io/component': 'agent-lease' },
        annotations: { [AGENT_REPORTS_ANNOTATION]: JSON.stringify(reports) },
        ...(cur ? { resourceVersion: cur.metadata.resourceVersion } : {}),
      },
      spec: { holderIdentity: node, leaseDurationSeconds: 40, renewTime: microTime(now) },
    };
    try {
      if (cur) await agent.replace(path, lease);
      else await agent.create(paths.leases(NS), lease);
      return;
    } catch (e) {
      if ((await apiErrorMessage(Promise.reject(e))).code !== 409) throw e;
    }
  }
}

const isCI = process.env.CI === 'true' || process.env.CI === '1';
/** The real kubectl's directory; null when it is not built (under CI that is a failure: CI builds it). */
function kubectlDir(): string | null {
  const bin = nodeBinaries();
  if (!bin && isCI && process.getuid?.() === 0)
    throw new Error('kubectl is not built under CI: run bash test/k8s/build-node.sh');
  return bin;
}

/** Runs the real kubectl as the admin; undefined when it is not built. */
async function kubectl(args: string[]): Promise<string | undefined> {
  const bin = kubectlDir();
  if (!bin) return undefined;
  return (await run(join(bin, 'kubectl'), ['--kubeconfig', s.cp!.kubeconfigPath, ...args])).stdout;
}

/** waits until the operator has handled every queued change (nothing queued, and the count of reconciles settles) */
async function settled(o = op()): Promise<void> {
  let last = -1;
  await eventually(
    'the operator to settle',
    async () => {
      const n = await o.metricSum('sixbed4_operator_reconcile_total');
      const q = await o.metric('sixbed4_operator_queue_depth');
      const ok = n === last && q === 0 && n > 0;
      last = n;
      return ok;
    },
    20_000,
    400,
  );
}

ktest('the CRD serves a schema with descriptions (kubectl explain) and printer columns', async (t) => {
  // the API server publishes a CRD's OpenAPI a moment after it is established
  type Doc = {
    components: {
      schemas: Record<
        string,
        { properties?: Record<string, { description?: string; properties?: Record<string, { description?: string }> }> }
      >;
    };
  };
  const doc = await eventually('the OpenAPI v3 document of sixbed4.io', async () => {
    const d = await admin().get<Doc>('/openapi/v3/apis/sixbed4.io/v1alpha1');
    return d?.components.schemas['io.sixbed4.v1alpha1.SixBed4Prefix'] ? d : undefined;
  });
  const schema = doc.components.schemas['io.sixbed4.v1alpha1.SixBed4Prefix']!;
  t.regex(schema.properties!.spec!.properties!.prefix!.description!, /from \/48 to \/64/);
  t.regex(schema.properties!.status!.properties!.nodes!.description!, /One entry per node/);
  const crd = await admin().get<{ spec: { versions: { additionalPrinterColumns: { name: string }[] }[] } }>(
    '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/sixbed4prefixes.sixbed4.io',
  );
  t.deepEqual(
    crd!.spec.versions[0]!.additionalPrinterColumns.map((c) => c.name),
    ['Prefix', 'Nodes Ready', 'Active', 'Live Peers', 'Degraded', 'Ready', 'Age'],
  );
});

ktest('helm template output is accepted by the API server (server-side dry run)', async (t) => {
  const { stdout } = await run(
    s.cp!.helm,
    [
      'template',
      'dry',
      join(REPO, 'charts', 'sixbed4'),
      '--namespace',
      'dry-run',
      '--include-crds',
      '--set',
      'replicas=2',
      '--kube-version',
      '1.36.3',
    ],
    { maxBuffer: 10 * 1024 * 1024 },
  );
  const docs = parseYamlDocs(stdout);
  t.deepEqual([...new Set(docs.map((d) => d.kind))].sort(), [
    'ClusterRole',
    'ClusterRoleBinding',
    'CustomResourceDefinition',
    'DaemonSet',
    'Deployment',
    'Role',
    'RoleBinding',
    'ServiceAccount',
    'ValidatingAdmissionPolicy',
    'ValidatingAdmissionPolicyBinding',
  ]);
  await admin().create('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'dry-run' } });
  const out = await kubectlApply(s.adminKc!, docs, { dryRun: true, fieldManager: 'helm' });
  t.is(out.length, docs.length);
  // dry run: nothing was created
  t.is(await admin().get('/apis/apps/v1/namespaces/dry-run/deployments/dry-sixbed4-operator'), undefined);
  t.is(await admin().get('/apis/rbac.authorization.k8s.io/v1/clusterroles/dry-sixbed4-operator'), undefined);
});

ktest('invalid prefixes are refused by the API server with readable messages', async (t) => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [
      { prefix: '2001:db8::/40' },
      /spec\.prefix: Invalid value: "2001:db8::\/40": prefix 2001:db8::\/40 has a length outside \/48 to \/64/,
    ],
    [{ prefix: '2001:db8:9:10::/65' }, /length outside \/48 to \/64/],
    [{ prefix: '198.51.100.0/24' }, /is an IPv4 prefix: 6bed4 serves IPv6 prefixes/],
    [{ prefix: 'not-a-prefix' }, /prefix not-a-prefix is not in CIDR notation: write it like 2001:db8:9:10::\/64/],
    [{ prefix: '2001:db8:9:10::1/64' }, /has host bits set after the prefix length/],
    [{ prefix: 'fe80::/64' }, /is not a global unicast prefix/],
    [
      { prefix: '2001:db8:9:10::/64', localAddresses: ['2001:db8:9:10::1:11'] },
      /local address 2001:db8:9:10::1:11 has a non-zero port word \(bits 96..111/,
    ],
    [
      { prefix: '2001:db8:9:10::/64', localAddresses: ['2001:db8:9:11::11'] },
      /every local address must lie inside the prefix 2001:db8:9:10::\/64/,
    ],
    [
      { prefix: '2001:db8:9:10::/64', listen: { port: 70000 } },
      /spec\.listen\.port: Invalid value: 70000: listen\.port is not a UDP port number/,
    ],
    [
      { prefix: '2001:db8:9:10::/64', listen: { address: '2001:db8::1' } },
      /listen\.address 2001:db8::1 is not an IPv4 address/,
    ],
    [
      { prefix: '2001:db8:9:10::/64', localAddressMode: 'bridge' },
      /spec\.localAddressMode: Invalid value: .*localAddressMode bridge is not one of Uplink, DummyInterface/,
    ],
    [
      { prefix: '2001:db8:9:10::/64', ndpProxy: 'Auto' },
      /spec\.ndpProxy: Invalid value: .*ndpProxy Auto is not one of Disabled, Always, WhenOnLink/,
    ],
    [{ prefix: '2001:db8:9:10::/64', routes: ['2001:db8:ffff::1/48'] }, /route 2001:db8:ffff::1\/48 has host bits set/],
    [
      { prefix: '2001:db8:9:10::/64', fastPath: 'On' },
      /spec\.fastPath: Unsupported value: "On": supported values: "Disabled", "Auto", "Required"/,
    ],
    [
      { prefix: '2001:db8:9:10::/64', fastPath: 'Disabled', fastPathDirect: true },
      /fastPathDirect needs the fast path \(fastPath Auto or Required, not Disabled\)/,
    ],
    [{}, /spec\.prefix: Required value/],
  ];
  for (const [spec, re] of cases) {
    const { code, message } = await apiErrorMessage(
      kubectlApply(s.adminKc!, [
        { apiVersion: 'sixbed4.io/v1alpha1', kind: 'SixBed4Prefix', metadata: { name: 'invalid' }, spec } as never,
      ]),
    );
    t.is(code, 422, JSON.stringify(spec));
    t.regex(message, re, JSON.stringify(spec));
  }
  // what kubectl create sends for an unquoted `ndpProxy: on` (YAML 1.1 reads a boolean); the CamelCase names avoid it
  const bool = await apiErrorMessage(
    admin().create(paths.prefixes, {
      apiVersion: 'sixbed4.io/v1alpha1',
      kind: 'SixBed4Prefix',
      metadata: { name: 'invalid' },
      spec: { prefix: '2001:db8:9:10::/64', ndpProxy: true },
    }),
  );
  t.is(bool.code, 422);
  t.regex(bool.message, /spec\.ndpProxy: Invalid value: "boolean": spec\.ndpProxy in body must be of type string/);
  // `fastPath: on` unquoted: the reason its names are Disabled, Auto, Required and not Off, On
  const fastBool = await apiErrorMessage(
    admin().create(paths.prefixes, {
      apiVersion: 'sixbed4.io/v1alpha1',
      kind: 'SixBed4Prefix',
      metadata: { name: 'invalid' },
      spec: { prefix: '2001:db8:9:10::/64', fastPath: true },
    }),
  );
  t.is(fastBool.code, 422);
  t.regex(fastBool.message, /spec\.fastPath: Invalid value: "boolean": spec\.fastPath in body must be of type string/);
  // fastPathDirect and fastPathXdp are booleans: a quoted one is refused (by create: server-side apply answers a type
  // error with 500)
  for (const [field, value] of [
    ['fastPathDirect', 'yes'],
    ['fastPathXdp', 'off'],
  ] as const) {
    const text = await apiErrorMessage(
      admin().create(paths.prefixes, {
        apiVersion: 'sixbed4.io/v1alpha1',
        kind: 'SixBed4Prefix',
        metadata: { name: 'invalid' },
        spec: { prefix: '2001:db8:9:10::/64', [field]: value },
      }),
    );
    t.is(text.code, 422, field);
    t.regex(
      text.message,
      new RegExp(`spec\\.${field}: Invalid value: "string": spec\\.${field} in body must be of type boolean`),
    );
  }
  // fastPathXdp has no CEL rule: true with fastPath Disabled is harmless, so not refused
  const [xdpOff] = await kubectlApply(
    s.adminKc!,
    [
      {
        apiVersion: 'sixbed4.io/v1alpha1',
        kind: 'SixBed4Prefix',
        metadata: { name: 'invalid' },
        spec: { prefix: '2001:db8:9:10::/64', fastPath: 'Disabled', fastPathXdp: true },
      } as never,
    ],
    { dryRun: true },
  );
  t.like(
    (xdpOff as unknown as SixBed4Prefix).spec,
    { fastPath: 'Disabled', fastPathXdp: true },
    'accepted (a dry run)',
  );
  // the same through the real kubectl, from YAML as a user writes it; the CamelCase name passes
  const bin = kubectlDir();
  if (bin) {
    const dir = await mkdtemp(join(tmpdir(), 'sixbed4-yaml11-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const file = (ndp: string) =>
      `apiVersion: sixbed4.io/v1alpha1\nkind: SixBed4Prefix\nmetadata:\n  name: invalid\nspec:\n  prefix: 2001:db8:9:10::/64\n  ndpProxy: ${ndp}\n`;
    await writeFile(join(dir, 'on.yaml'), file('on'));
    await writeFile(join(dir, 'always.yaml'), file('Always'));
    const kc = ['--kubeconfig', s.cp!.kubeconfigPath];
    const err = await run(join(bin, 'kubectl'), [...kc, 'create', '--dry-run=server', '-f', join(dir, 'on.yaml')]).then(
      () => '',
      (e: { stderr: string }) => e.stderr,
    );
    t.regex(err, /spec\.ndpProxy: Invalid value: "boolean": spec\.ndpProxy in body must be of type string/);
    const ok = await run(join(bin, 'kubectl'), [
      ...kc,
      'create',
      '--dry-run=server',
      '-f',
      join(dir, 'always.yaml'),
      '-o',
      'jsonpath={.spec.ndpProxy}',
    ]);
    t.is(ok.stdout, 'Always');
  }
  t.is(await getPrefix('invalid'), undefined);
});

ktest(
  'every sample under crds/samples/ is accepted by the API server as kubectl reads it (YAML 1.1), through the real kubectl when built',
  async (t) => {
    const dir = join(REPO, 'crds', 'samples');
    const files = readdirSync(dir)
      .filter((f) => f.endsWith('.yaml'))
      .sort();
    t.true(files.length >= 3);
    const bin = kubectlDir();
    if (bin) {
      const { stdout } = await run(join(bin, 'kubectl'), [
        '--kubeconfig',
        s.cp!.kubeconfigPath,
        'apply',
        '--dry-run=server',
        '-f',
        dir,
        '-o',
        'name',
      ]);
      const names = files.flatMap((f) =>
        parseAllDocuments(readFileSync(join(dir, f), 'utf8')).map(
          (d) => `sixbed4prefix.sixbed4.io/${(d.toJS() as KubeObject).metadata.name}`,
        ),
      );
      t.deepEqual(stdout.trim().split('\n').sort(), names.sort());
    } else {
      t.log('kubectl not built (bash test/k8s/build-node.sh): server-side dry run through the client library instead');
    }
    for (const f of files) {
      const docs = parseAllDocuments(readFileSync(join(dir, f), 'utf8'), { version: '1.1' }).map(
        (d) => d.toJS() as KubeObject,
      );
      t.is((await kubectlApply(s.adminKc!, docs as never, { dryRun: true })).length, docs.length, f);
    }
    t.is(await getPrefix('home'), undefined, 'a dry run creates nothing');
  },
);

ktest(
  "a sample /64 yields its agent ConfigMap, a finalizer, and status; the node agents are the chart's one DaemonSet",
  async (t) => {
    await createNode('edge-1', { 'kubernetes.io/hostname': 'edge-1' }, '203.0.113.1', 'ExternalIP');
    await kubectlApply(s.adminKc!, readYamlDocs(join(REPO, 'crds', 'samples', 'single-node-64.yaml')));
    const p = await eventually('status of home', async () => {
      const p = await getPrefix('home');
      return p?.status?.observedGeneration === 1 && p.status.nodes?.length === 1 ? p : undefined;
    });
    t.deepEqual(p.metadata.finalizers, [FINALIZER]);
    t.is(p.metadata.annotations?.[ALLOCATIONS_ANNOTATION], '{"edge-1":"2001:db8:9:10::/64"}');
    t.is(p.spec.fastPath, 'Auto', "the CRD's default for a spec without it (the sample has none)");
    t.is(p.spec.fastPathXdp, false, "the CRD's default: no XDP stage unless asked for");
    t.deepEqual(p.status!.nodes, [{ name: 'edge-1', prefix: '2001:db8:9:10::/64', listen: '198.51.100.1:25790' }]);
    t.is(p.status!.nodesReady, '0/1');
    t.like(cond(p, 'Degraded'), { status: 'False', reason: 'AsExpected' });
    t.like(cond(p, 'Ready'), { status: 'False', reason: 'AgentsNotReady', observedGeneration: 1 });
    t.like(cond(p, 'Progressing'), { status: 'True', reason: 'RollingOut' });

    const cm = await admin().get<{ data: Record<string, string>; metadata: KubeObject['metadata'] }>(
      paths.configMap(NS, 'sixbed4-agent-home'),
    );
    t.truthy(cm);
    t.deepEqual(JSON.parse(cm!.data['node.edge-1.json']!), {
      prefix: '2001:db8:9:10::/64',
      listen: { address: '198.51.100.1', port: 25790 },
      uplink: 'eth0',
      localAddresses: ['2001:db8:9:10::11', '2001:db8:9:10::30'],
      localAddressMode: 'uplink128',
      routes: ['2001:db8:ffff::/48'],
      ndpProxy: 'off',
      fastPath: 'auto',
      tunnel: tunnelName('home'),
    });
    t.like(cm!.metadata.ownerReferences![0], {
      kind: 'SixBed4Prefix',
      name: 'home',
      uid: p.metadata.uid,
      controller: true,
    });

    // No DaemonSet per prefix: the chart's one agent DaemonSet serves every prefix.
    t.is(await admin().get(paths.daemonSet(NS, 'sixbed4-agent-home')), undefined);
    const ds = await admin().get<any>(paths.daemonSet(NS, AGENT_DAEMONSET));
    const pod = ds.spec.template.spec;
    t.true(pod.hostNetwork);
    t.is(pod.serviceAccountName, AGENT_SA);
    const c = pod.containers[0];
    t.is(c.image, 'sixbed4:test');
    t.deepEqual(c.args.slice(0, 3), ['agent', '--namespace', NS]);
    t.deepEqual(
      c.securityContext.capabilities,
      { add: ['NET_ADMIN', 'NET_RAW', 'BPF'], drop: ['ALL'] },
      "BPF by default: the routers' fast path (agent.fastPath)",
    );
    t.false(c.securityContext.privileged);

    const ev = await eventually('events of home', async () => {
      const e = await events('home');
      return e.some((x) => x.reason === 'Allocated') && e.some((x) => x.reason === 'Created') ? e : undefined;
    });
    t.true(ev.some((e) => e.reason === 'Allocated' && e.message === 'node edge-1 serves 2001:db8:9:10::/64'));
  },
);

ktest(
  'v1alpha1 objects with the first spellings (uplink128, dummy112; off, on, auto) are accepted as they are and served as the CamelCase ones',
  async (t) => {
    const pairs: [string, Record<string, string>, Record<string, string>][] = [
      ['a', { localAddressMode: 'uplink128', ndpProxy: 'off' }, { localAddressMode: 'Uplink', ndpProxy: 'Disabled' }],
      [
        'b',
        { localAddressMode: 'dummy112', ndpProxy: 'on' },
        { localAddressMode: 'DummyInterface', ndpProxy: 'Always' },
      ],
      ['c', { ndpProxy: 'auto' }, { ndpProxy: 'WhenOnLink' }],
    ];
    const served = async (name: string) => {
      const p = await eventually(`status of ${name}`, async () => {
        const p = await getPrefix(name);
        return p?.status?.observedGeneration === 1 && p.status.nodes?.length === 1 && cond(p, 'Degraded')
          ? p
          : undefined;
      });
      const cm = await admin().get<{ data: Record<string, string> }>(paths.configMap(NS, `sixbed4-agent-${name}`));
      const node = JSON.parse(cm!.data[`node.${name}.json`]!) as Record<string, unknown>;
      const conds = p.status!.conditions!.map((c) => [
        c.type,
        c.status,
        c.reason,
        c.message.replaceAll(name, '<node>'),
      ]);
      // what differs by construction: the node, its /64, its address and tunnel
      const { prefix: _p, listen: _l, localAddresses: _a, tunnel: _t, ...modes } = node;
      return { spec: p.spec, conds, node: modes };
    };
    let i = 0;
    for (const [tag, old, now] of pairs) {
      const got: Awaited<ReturnType<typeof served>>[] = [];
      for (const [kind, modes] of [
        ['old', old],
        ['new', now],
      ] as const) {
        const name = `spell-${tag}-${kind}`;
        i++;
        await createNode(name, { 'sixbed4.io/spelling': name }, `198.51.100.${100 + i}`);
        await kubectlApply(s.adminKc!, [
          {
            apiVersion: 'sixbed4.io/v1alpha1',
            kind: 'SixBed4Prefix',
            metadata: { name },
            spec: {
              prefix: `2001:db8:5e:${i}::/64`,
              nodeSelector: { 'sixbed4.io/spelling': name },
              localAddresses: ['::11'],
              ...modes,
            },
          } as never,
        ]);
        got.push(await served(name));
      }
      const [o, n] = got as [Awaited<ReturnType<typeof served>>, Awaited<ReturnType<typeof served>>];
      t.like(o.spec, old, 'the old spelling is stored as written');
      t.like(n.spec, now);
      t.deepEqual(o.node, n.node, `ConfigMap share of ${JSON.stringify(old)} and ${JSON.stringify(now)}`);
      t.deepEqual(o.conds, n.conds);
      // the agent ConfigMap keeps its spelling (what agents of the previous version read)
      t.true(['uplink128', 'dummy112'].includes(n.node.localAddressMode as string));
      t.true(['off', 'on', 'auto'].includes(n.node.ndpProxy as string));
    }
    for (const [tag] of pairs) {
      for (const kind of ['old', 'new']) {
        await admin().delete(paths.prefix(`spell-${tag}-${kind}`));
        await admin().delete(paths.node(`spell-${tag}-${kind}`));
      }
    }
  },
);

ktest(
  "an agent reporting (as the chart's agent ServiceAccount) makes the prefix Ready; the agent cannot touch the rest",
  async (t) => {
    await servedPrefix('rep', 'rep-1', '2001:db8:c1:1::/64', '198.51.100.61');
    await agentReport('rep', 'rep-1', { ready: true, livePeers: 3 });
    const p = await eventually('rep Ready', async () => {
      const p = await getPrefix('rep');
      return cond(p, 'Ready')?.status === 'True' ? p : undefined;
    });
    t.is(p.status!.nodesReady, '1/1');
    t.like(p.status!.nodes![0], { name: 'rep-1', prefix: '2001:db8:c1:1::/64', ready: true, livePeers: 3 });
    t.like(cond(p, 'Ready'), { reason: 'AgentsReady', message: '1 of 1 agents ready' });
    t.is(p.status!.livePeers, 3);
    // what an operator sees first, through the real kubectl
    const out = await kubectl(['get', 's4p', 'rep']);
    if (out === undefined) t.log('kubectl not built (bash test/k8s/build-node.sh): kubectl get s4p not run');
    else {
      const [head, row, ...rest] = out
        .trimEnd()
        .split('\n')
        .map((l) => l.trim().split(/\s{2,}/));
      t.deepEqual(head, ['NAME', 'PREFIX', 'NODES READY', 'ACTIVE', 'LIVE PEERS', 'DEGRADED', 'AGE']);
      t.deepEqual(
        row!.slice(0, 5),
        ['rep', '2001:db8:c1:1::/64', '1/1', '3', 'AsExpected'],
        'ACTIVE is blank: only with spec.failover',
      );
      t.deepEqual(rest, []);
      const wide = (await kubectl(['get', 's4p', 'rep', '-o', 'wide']))!
        .trimEnd()
        .split('\n')
        .map((l) => l.trim().split(/\s{2,}/));
      t.deepEqual(wide[0], ['NAME', 'PREFIX', 'NODES READY', 'ACTIVE', 'LIVE PEERS', 'DEGRADED', 'READY', 'AGE']);
      t.deepEqual(wide[1]!.slice(0, 6), ['rep', '2001:db8:c1:1::/64', '1/1', '3', 'AsExpected', 'True']);
    }
    // least privilege: the agent may not change the spec or its DaemonSet
    const deny = async (pr: Promise<unknown>) => (await apiErrorMessage(pr)).code;
    t.is(await deny(s.agent!.mergePatch(paths.prefix('rep'), { spec: { prefix: '2001:db8:c1:2::/64' } })), 403);
    t.is(
      await deny(s.agent!.mergePatch(paths.daemonSet(NS, AGENT_DAEMONSET), { metadata: { labels: { x: 'y' } } })),
      403,
    );
    t.is(await deny(s.agent!.request('DELETE', paths.prefix('rep'))), 403);
    // Only its own node's Lease (the chart's admission policy): rep-1's agent cannot report for another node.
    const other = await apiErrorMessage(agentReport('rep', 'rep-2', { ready: true }, await agentOf('rep-1')));
    t.true([403, 422].includes(other.code), `${other.code} ${other.message}`);
    t.regex(other.message, /only the Lease of its own node: this one runs on rep-1, the Lease is sixbed4-agent-rep-2/);
  },
);

ktest('a /48 is split among three nodes; a node deleted and re-created gets the same /64', async (t) => {
  for (const [n, a] of [
    ['r1', '198.51.100.21'],
    ['r2', '198.51.100.22'],
    ['r3', '198.51.100.23'],
  ] as const)
    await createNode(n, { 'sixbed4.io/router': 'true' }, a);
  await kubectlApply(s.adminKc!, readYamlDocs(join(REPO, 'crds', 'samples', 'cluster-48.yaml')));
  const p = await eventually('three node entries', async () => {
    const p = await getPrefix('edge');
    return p?.status?.nodes?.length === 3 ? p : undefined;
  });
  const subs = Object.fromEntries(p.status!.nodes!.map((n) => [n.name, n.prefix!]));
  const P48 = parsePrefix('2001:db8:48::/48');
  t.is(new Set(Object.values(subs)).size, 3);
  for (const sub of Object.values(subs)) t.true(subnetIndex(P48, sub) >= 0, sub);
  t.is(p.status!.nodes!.find((n) => n.name === 'r2')!.listen, '198.51.100.22:25790');
  const cm = await admin().get<{ data: Record<string, string> }>(paths.configMap(NS, 'sixbed4-agent-edge'));
  t.deepEqual(Object.keys(cm!.data).sort(), ['node.r1.json', 'node.r2.json', 'node.r3.json', 'prefix.json']);
  t.deepEqual(JSON.parse(cm!.data['node.r2.json']!).localAddresses, [subs.r2!.replace('/64', '11')]);

  await admin().delete(paths.node('r2'));
  await eventually('r2 to leave the status', async () => (await getPrefix('edge'))?.status?.nodes?.length === 2);
  const cm2 = await admin().get<{ data: Record<string, string> }>(paths.configMap(NS, 'sixbed4-agent-edge'));
  t.false('node.r2.json' in cm2!.data);
  t.is(
    JSON.parse((await getPrefix('edge'))!.metadata.annotations![ALLOCATIONS_ANNOTATION]!).r2,
    subs.r2,
    'kept in the allocation record',
  );

  await createNode('r2', { 'sixbed4.io/router': 'true' }, '198.51.100.22');
  const back = await eventually('r2 back', async () => {
    const p = await getPrefix('edge');
    return p?.status?.nodes?.length === 3 ? p : undefined;
  });
  t.deepEqual(Object.fromEntries(back.status!.nodes!.map((n) => [n.name, n.prefix!])), subs);
});

ktest('a /64 whose selector matches two nodes is Degraded with a reason, and recovers', async (t) => {
  await createNode('dup-1', { role: 'dup' }, '192.0.2.1');
  await createNode('dup-2', { role: 'dup' }, '192.0.2.2');
  await kubectlApply(s.adminKc!, [
    {
      apiVersion: 'sixbed4.io/v1alpha1',
      kind: 'SixBed4Prefix',
      metadata: { name: 'dup' },
      spec: { prefix: '2001:db8:a:20::/64', nodeSelector: { role: 'dup' } },
    } as never,
  ]);
  const p = await eventually('dup Degraded', async () => {
    const p = await getPrefix('dup');
    return cond(p, 'Degraded')?.status === 'True' ? p : undefined;
  });
  t.is(cond(p, 'Degraded')!.reason, 'MultipleNodesSelected');
  t.regex(
    cond(p, 'Degraded')!.message,
    /2001:db8:a:20::\/64 is a \/64, which exactly one node serves, but spec.nodeSelector \{"role":"dup"\} matches 2 nodes \(dup-1, dup-2\)/,
  );
  t.like(cond(p, 'Ready'), { status: 'False', reason: 'NoNodes' });
  t.deepEqual(p.status!.nodes ?? [], []);
  const row = await kubectl(['get', 's4p', 'dup', '--no-headers']);
  if (row !== undefined)
    t.deepEqual(
      row
        .trim()
        .split(/\s{2,}/)
        .slice(0, 5),
      ['dup', '2001:db8:a:20::/64', '0/0', '0', 'MultipleNodesSelected'],
    );
  await eventually('a Warning event', async () =>
    (await events('dup')).some((e) => e.type === 'Warning' && e.reason === 'MultipleNodesSelected'),
  );

  await admin().mergePatch(paths.node('dup-2'), { metadata: { labels: { role: null } } });
  const ok = await eventually('dup recovered', async () => {
    const p = await getPrefix('dup');
    return cond(p, 'Degraded')?.status === 'False' ? p : undefined;
  });
  t.deepEqual(ok.status!.nodes, [{ name: 'dup-1', prefix: '2001:db8:a:20::/64', listen: '192.0.2.1:25790' }]);
  await eventually('a Recovered event', async () => (await events('dup')).some((e) => e.reason === 'Recovered'));

  // a prefix overlapping an older one is not served
  await kubectlApply(s.adminKc!, [
    {
      apiVersion: 'sixbed4.io/v1alpha1',
      kind: 'SixBed4Prefix',
      metadata: { name: 'overlap' },
      spec: { prefix: '2001:db8:a::/48', nodeSelector: { role: 'dup' } },
    } as never,
  ]);
  const o = await eventually('overlap Degraded', async () => {
    const p = await getPrefix('overlap');
    return cond(p, 'Degraded')?.status === 'True' ? p : undefined;
  });
  t.like(cond(o, 'Degraded'), {
    reason: 'PrefixOverlap',
    message:
      'prefix 2001:db8:a::/48 overlaps the older SixBed4Prefix dup (2001:db8:a:20::/64); this one is not served until the overlap is removed',
  });
  t.deepEqual(o.status!.nodes ?? [], []);
  await admin().delete(paths.prefix('overlap'));
  await eventually('overlap gone', async () => (await getPrefix('overlap')) === undefined);
});

ktest('drift repair: edits to the agent ConfigMap are undone', async (t) => {
  await servedPrefix('drift', 'drift-1', '2001:db8:c1:3::/64', '198.51.100.62');
  await settled();
  const cmPath = paths.configMap(NS, 'sixbed4-agent-drift');
  await admin().mergePatch(cmPath, { data: { 'node.drift-1.json': '{"prefix":"2001:db8:66::/64"}' } }, 'kubectl-edit');
  await eventually('the ConfigMap restored', async () => {
    const cm = await admin().get<{ data: Record<string, string> }>(cmPath);
    return JSON.parse(cm!.data['node.drift-1.json']!).prefix === '2001:db8:c1:3::/64';
  });
  await eventually('a DriftRepaired event', async () =>
    (await events('drift')).some((e) => e.reason === 'DriftRepaired' && /ConfigMap/.test(e.message)),
  );
  await admin().delete(cmPath);
  await eventually('the ConfigMap re-created', async () => (await admin().get(cmPath)) !== undefined);
  t.pass();
});

ktest('an operator restart changes nothing: no writes, same resourceVersions', async (t) => {
  await servedPrefix('restart', 'restart-1', '2001:db8:c1:4::/64', '198.51.100.63');
  await settled();
  const before = await resourceVersions();
  t.true(Object.keys(before).length >= 3, Object.keys(before).join(' '));
  t.is(await op().stop('SIGTERM'), 0);
  const next = await OperatorProcess.start(s.operatorKubeconfig!, 'op-b', OPERATOR_FLAGS);
  s.ops.push(next);
  await eventually('op-b to lead', async () => (await next.metric('sixbed4_operator_leader')) === 1, 15_000);
  await settled(next);
  // it looked at every prefix (at least once each), and wrote nothing
  const prefixes = (await admin().list<KubeObject>(paths.prefixes)).items.length;
  t.true((await next.metricSum('sixbed4_operator_reconcile_total')) >= prefixes, `${prefixes} prefixes`);
  t.is(await next.metricSum('sixbed4_operator_api_writes_total'), 0, 'no writes at all (not even events)');
  t.is(await next.metricSum('sixbed4_operator_reconcile_errors_total'), 0);
  t.deepEqual(await resourceVersions(), before);
});

ktest('two replicas do not fight: one holds the Lease, the other stands by and takes over', async (t) => {
  const leader = op();
  const standby = await OperatorProcess.start(s.operatorKubeconfig!, 'op-c', OPERATOR_FLAGS);
  s.ops.push(standby);
  const leaseOf = async () =>
    (await admin().get<{ spec: { holderIdentity?: string } }>(paths.lease(NS, 'sixbed4-operator')))?.spec
      .holderIdentity;
  t.is(await leaseOf(), leader.identity);
  const before = await resourceVersions();
  await sleep(2500);
  t.is(await standby.metric('sixbed4_operator_leader'), 0);
  t.is(await standby.metricSum('sixbed4_operator_reconcile_total'), 0, 'the standby does not reconcile');
  t.is(await leaseOf(), leader.identity);
  t.deepEqual(await resourceVersions(), before);

  // the leader dies without releasing: the standby waits out the lease (4 s), then leads
  const t0 = Date.now();
  await leader.stop('SIGKILL');
  await eventually('op-c to lead', async () => (await standby.metric('sixbed4_operator_leader')) === 1, 15_000);
  const took = Date.now() - t0;
  t.true(took >= 3000, `took over after ${took} ms, before the lease ran out`);
  t.is(await leaseOf(), standby.identity);
  await settled(standby);
  t.is(await standby.metricSum('sixbed4_operator_api_writes_total'), 0);
  t.deepEqual(await resourceVersions(), before);

  // a graceful stop releases the Lease: the next replica takes over at once
  const third = await OperatorProcess.start(s.operatorKubeconfig!, 'op-d', OPERATOR_FLAGS);
  s.ops.push(third);
  await sleep(700);
  t.is(await standby.stop('SIGTERM'), 0);
  // Timed from the moment the old leader is gone (it released the Lease on the way out), not from the
  // signal: how long a loaded machine takes to stop a process is not what this is about.
  const t1 = Date.now();
  t.true(
    standby.lines.some((l) => l.includes('released the Lease')),
    'the stopping leader released the Lease',
  );
  await eventually('op-d to lead', async () => (await third.metric('sixbed4_operator_leader')) === 1, 10_000);
  t.true(Date.now() - t1 < 3000, `took over ${Date.now() - t1} ms after the release (the Lease lasts 4 s)`);
  t.log(`takeover after a crash: ${took} ms; after a release: ${Date.now() - t1} ms`);
});

ktest('a deleted prefix whose agent never reverts is released after the cleanup timeout, with a Warning', async (t) => {
  await servedPrefix('timeout', 'timeout-1', '2001:db8:c1:5::/64', '198.51.100.64');
  await agentReport('timeout', 'timeout-1', { ready: true });
  await admin().mergePatch(paths.prefix('timeout'), {
    metadata: { annotations: { [CLEANUP_TIMEOUT_ANNOTATION]: '2' } },
  });
  const t0 = Date.now();
  await admin().delete(paths.prefix('timeout'));
  await eventually('timeout gone', async () => (await getPrefix('timeout')) === undefined, 15_000);
  // deletionTimestamp has whole seconds: the 2 s may end up to 1 s early
  t.true(Date.now() - t0 >= 1000, `released after ${Date.now() - t0} ms`);
  const ev = await events('timeout');
  t.true(
    ev.some(
      (e) =>
        e.type === 'Warning' && e.reason === 'CleanupTimedOut' && /waiting for timeout-1 to revert/.test(e.message),
    ),
    JSON.stringify(ev.map((e) => e.reason)),
  );
  t.is(await op().metricSum('sixbed4_operator_reconcile_errors_total'), 0);
});

ktest(
  'deleting a prefix waits until every agent reverted its host, then the finalizer goes and GC removes the rest',
  async (t) => {
    for (const [n, a] of [
      ['g1', '198.51.100.71'],
      ['g2', '198.51.100.72'],
      ['g3', '198.51.100.73'],
    ] as const)
      await createNode(n, { 'sixbed4.io/gone': 'true' }, a);
    await kubectlApply(s.adminKc!, [
      {
        apiVersion: 'sixbed4.io/v1alpha1',
        kind: 'SixBed4Prefix',
        metadata: { name: 'gone' },
        spec: { prefix: '2001:db8:c2::/48', nodeSelector: { 'sixbed4.io/gone': 'true' } },
      } as never,
    ]);
    await eventually('three node entries of gone', async () => (await getPrefix('gone'))?.status?.nodes?.length === 3);
    await agentReport('gone', 'g1', { ready: true });
    await agentReport('gone', 'g3', { ready: true });
    // The operator reads the reports from its Lease cache: delete only once it has seen both (else it waits for g1
    // alone, rightly, and the message below names one node).
    await eventually('g1 and g3 ready in status', async () => {
      const n = (await getPrefix('gone'))?.status?.nodes ?? [];
      return ['g1', 'g3'].every((x) => n.some((e) => e.name === x && e.ready === true));
    });
    await admin().delete(paths.prefix('gone'));
    const p = await eventually('gone deleting', async () => {
      const p = await getPrefix('gone');
      return p?.metadata.deletionTimestamp && cond(p, 'Ready')?.reason === 'Deleting' ? p : undefined;
    });
    t.like(cond(p, 'Progressing'), {
      status: 'True',
      reason: 'RevertingHosts',
      message: 'waiting for g1, g3 to revert the host configuration',
    });
    // g1's agent reverts; g3's node goes away; g2 never reported (nothing to revert)
    await agentReport('gone', 'g1', { ready: false, reverted: true });
    await eventually(
      'only g3 left',
      async () =>
        cond(await getPrefix('gone'), 'Progressing')?.message === 'waiting for g3 to revert the host configuration',
    );
    await sleep(500);
    t.truthy(await getPrefix('gone'), 'still held by the finalizer');
    const gcWait = s.gcKnowsCrdAt! - Date.now();
    if (gcWait > 0) {
      t.log(`waiting ${gcWait} ms for the garbage collector to discover the CRD`);
      await sleep(gcWait);
    }
    await admin().delete(paths.node('g3'));
    await eventually('gone gone', async () => (await getPrefix('gone')) === undefined);
    await eventually(
      'GC of the agent ConfigMap',
      async () => (await admin().get(paths.configMap(NS, 'sixbed4-agent-gone'))) === undefined,
      20_000,
    );
    t.truthy(await admin().get(paths.daemonSet(NS, AGENT_DAEMONSET)), 'the agents stay: they belong to the chart');
    t.true((await events('gone')).some((e) => e.reason === 'HostsReverted'));
  },
);
