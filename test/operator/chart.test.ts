// The CRDs and the Helm chart as files: one source of truth for each CRD, a
// description on every field, messages on every rule, valid samples, and a
// chart that lints clean and renders least-privilege RBAC. (That the API
// server accepts all of it is in cluster.test.ts.)
import test from 'ava';
import { execFile } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { checkSpec } from '../../kube/prefix-spec.js';
import { controlPlaneBinaries } from '../k8s/controlplane.js';
import { parseYamlDocs, readYamlDocs, REPO } from '../helpers/cluster.js';

const run = promisify(execFile);
const CRDS = ['sixbed4.io_sixbed4prefixes.yaml', 'sixbed4.io_sixbed4slices.yaml', 'sixbed4.io_sixbed4ranges.yaml'];
const CHART = join(REPO, 'charts', 'sixbed4');

interface Schema {
  type?: string;
  description?: string;
  properties?: Record<string, Schema>;
  items?: Schema;
  additionalProperties?: Schema | boolean;
  'x-kubernetes-validations'?: { rule: string; message?: string; messageExpression?: string }[];
}

const CHART_CRDS = join(CHART, 'charts', 'crds', 'files');

test("the chart carries the repository's CRDs byte for byte", (t) => {
  t.deepEqual(readdirSync(CHART_CRDS).sort(), [...CRDS].sort());
  t.deepEqual(
    readdirSync(join(REPO, 'crds'))
      .filter((f) => f.endsWith('.yaml'))
      .sort(),
    [...CRDS].sort(),
  );
  for (const f of CRDS) {
    t.is(
      readFileSync(join(CHART_CRDS, f), 'utf8'),
      readFileSync(join(REPO, 'crds', f), 'utf8'),
      `charts/sixbed4/charts/crds/files/ must be a copy of crds/${f}: cp crds/${f} charts/sixbed4/charts/crds/files/`,
    );
  }
});

test('every field of the CRDs has a description and every validation rule a message', (t) => {
  const missing: string[] = [];
  const noMessage: string[] = [];
  const walk = (s: Schema, path: string) => {
    if (!s.description && !path.endsWith('.metadata')) missing.push(path);
    for (const v of s['x-kubernetes-validations'] ?? [])
      if (!v.message && !v.messageExpression) noMessage.push(`${path}: ${v.rule}`);
    for (const [k, sub] of Object.entries(s.properties ?? {})) walk(sub, `${path}.${k}`);
    if (s.items) walk(s.items, `${path}[]`);
    if (typeof s.additionalProperties === 'object' && s.additionalProperties.properties)
      walk(s.additionalProperties, `${path}{}`);
  };
  for (const f of CRDS) {
    const crd = parseYaml(readFileSync(join(REPO, 'crds', f), 'utf8')) as {
      spec: { versions: { schema: { openAPIV3Schema: Schema } }[] };
    };
    walk(crd.spec.versions[0]!.schema.openAPIV3Schema, f);
  }
  t.deepEqual(missing, []);
  t.deepEqual(noMessage, []);
});

test('the samples are valid SixBed4Prefixes with no problems', (t) => {
  const dir = join(REPO, 'crds', 'samples');
  const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
  t.true(files.length >= 2);
  for (const f of files) {
    for (const doc of readYamlDocs(join(dir, f))) {
      t.is(doc.kind, 'SixBed4Prefix', f);
      t.deepEqual(checkSpec((doc as unknown as { spec: unknown }).spec).problems, [], f);
    }
  }
});

test('values.yaml has the documented knobs', (t) => {
  const v = parseYaml(readFileSync(join(CHART, 'values.yaml'), 'utf8')) as Record<string, unknown>;
  for (const k of ['image', 'resources', 'logLevel', 'metrics', 'replicas', 'leaderElection']) t.true(k in v, k);
  const agent = v.agent as Record<string, unknown>;
  for (const k of [
    'logLevel',
    'stateDir',
    'slices',
    'fastPath',
    'metrics',
    'podMonitor',
    'priorityClassName',
    'nodeSelector',
    'tolerations',
    'affinity',
    'podAnnotations',
    'resources',
  ]) {
    t.true(k in agent, `agent.${k}`);
  }
});

const helmSkip = controlPlaneBinaries() ? null : 'helm not built (bash test/k8s/build-control-plane.sh)';
const htest = helmSkip ? test.skip : test;
const helm = () => join(controlPlaneBinaries()!, 'helm');
const helmEnv = () => ({
  ...process.env,
  HELM_CACHE_HOME: '/tmp/sixbed4-helm-test/cache',
  HELM_CONFIG_HOME: '/tmp/sixbed4-helm-test/config',
  HELM_DATA_HOME: '/tmp/sixbed4-helm-test/data',
});

htest('helm lint --strict is clean', async (t) => {
  const { stdout } = await run(helm(), ['lint', '--strict', CHART], { env: helmEnv() });
  t.regex(stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
  t.notRegex(stdout, /\[(WARNING|ERROR)\]/);
  const all = await run(
    helm(),
    [
      'lint',
      '--strict',
      CHART,
      '--set',
      'agent.slices=true',
      '--set',
      'agent.podMonitor.enabled=true',
      '--set',
      'metrics.serviceMonitor.enabled=true',
      '--set',
      'agent.priorityClassName=',
    ],
    { env: helmEnv() },
  );
  t.regex(all.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
  t.notRegex(all.stdout, /\[(WARNING|ERROR)\]/);
});

interface Rule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
  resourceNames?: string[];
}

htest('helm template: operator Deployment flags, least-privilege RBAC', async (t) => {
  const { stdout } = await run(
    helm(),
    ['template', 'sixbed4', CHART, '--namespace', 'sixbed4-system', '--set', 'image.tag=9.9.9'],
    { env: helmEnv() },
  );
  const docs = parseYamlDocs(stdout) as unknown as {
    kind: string;
    metadata: { name: string; namespace?: string };
    rules?: Rule[];
    spec?: any;
  }[];
  const dep = docs.find((d) => d.kind === 'Deployment')!;
  const c = dep.spec.template.spec.containers[0];
  t.is(c.image, 'sixbed4:9.9.9');
  // the operator renders no agent pods any more: the chart owns the one agent DaemonSet
  t.deepEqual(c.args, [
    'operator',
    '--namespace=sixbed4-system',
    '--agent-daemonset=sixbed4-agent',
    '--log-level=info',
    '--log-format=json',
    '--cleanup-timeout=300',
    '--leader-elect',
    '--lease-name=sixbed4-operator',
    '--lease-duration=15',
    '--renew-deadline=10',
    '--retry-period=2',
    '--metrics=0.0.0.0:9464',
  ]);
  for (const gone of [
    '--image',
    '--image-pull-policy',
    '--agent-service-account',
    '--agent-log-level',
    '--agent-state-dir',
  ]) {
    t.false(
      c.args.some((a: string) => a.split('=')[0] === gone),
      `no ${gone}`,
    );
  }
  t.is(dep.spec.template.spec.serviceAccountName, 'sixbed4-operator');
  t.true(dep.spec.template.spec.securityContext.runAsNonRoot);
  t.deepEqual(c.securityContext.capabilities.drop, ['ALL']);

  const rules = (kind: string, name: string) => docs.find((d) => d.kind === kind && d.metadata.name === name)!.rules!;
  const all = docs
    .filter((d) => d.rules)
    .flatMap((d) => d.rules!.map((r) => ({ doc: `${d.kind}/${d.metadata.name}`, ...r })));
  for (const r of all) {
    t.false(r.verbs.includes('*') || r.resources.includes('*') || r.apiGroups.includes('*'), `${r.doc}: no wildcards`);
    t.false(r.resources.includes('secrets'), `${r.doc}: no secrets`);
    t.false(r.verbs.includes('deletecollection'), `${r.doc}: no deletecollection`);
    // the garbage collector deletes what the operator owns, except the
    // cluster-scoped slices and ranges of pods that are gone (it never
    // collects a cluster-scoped object for a namespaced owner)
    if (r.verbs.includes('delete'))
      t.deepEqual(r.resources, ['sixbed4slices', 'sixbed4ranges'], `${r.doc}: delete only slices and ranges`);
  }
  const slices = rules('ClusterRole', 'sixbed4-operator-slices');
  t.deepEqual(slices, [
    { apiGroups: [''], resources: ['namespaces', 'pods'], verbs: ['get', 'list', 'watch', 'patch'] },
    {
      apiGroups: ['sixbed4.io'],
      resources: ['sixbed4slices', 'sixbed4ranges'],
      verbs: ['get', 'list', 'watch', 'create', 'delete'],
    },
    { apiGroups: [''], resources: ['events'], verbs: ['create', 'patch'] },
  ]);
  t.truthy(docs.find((d) => d.kind === 'ClusterRoleBinding' && d.metadata.name === 'sixbed4-operator-slices'));
  const opCluster = rules('ClusterRole', 'sixbed4-operator');
  t.deepEqual(opCluster.find((r) => r.resources.includes('nodes'))!.verbs, ['get', 'list', 'watch']);
  t.true(opCluster.some((r) => r.resources.includes('sixbed4prefixes/status')));
  t.true(opCluster.some((r) => r.resources.includes('sixbed4prefixes/finalizers')));
  const opNs = docs.find((d) => d.kind === 'Role' && d.metadata.name === 'sixbed4-operator')!;
  t.is(opNs.metadata.namespace, 'sixbed4-system', 'DaemonSets and ConfigMaps only in the release namespace');
  t.deepEqual(
    opNs.rules!.find((r) => r.resources.includes('daemonsets')),
    { apiGroups: ['apps'], resources: ['daemonsets'], verbs: ['get', 'list', 'watch'] },
    'the operator only follows the agent DaemonSet',
  );
  t.deepEqual(
    opNs.rules!.find((r) => r.resources.includes('configmaps'))!.verbs,
    ['get', 'list', 'watch', 'create', 'patch', 'update'],
    'the operator renders the per-prefix agent ConfigMaps',
  );
  for (const r of all) {
    if (r.resources.includes('daemonsets'))
      t.deepEqual(
        r.verbs.filter((v) => !['get', 'list', 'watch'].includes(v)),
        [],
        `${r.doc}: nobody writes DaemonSets`,
      );
  }
  t.deepEqual(opNs.rules!.find((r) => r.resourceNames)!.resourceNames, ['sixbed4-operator'], 'only its own Lease');
  const events = docs.find((d) => d.kind === 'Role' && d.metadata.name === 'sixbed4-operator-events')!;
  t.is(events.metadata.namespace, 'default');
  t.deepEqual(events.rules, [{ apiGroups: [''], resources: ['events'], verbs: ['create', 'patch'] }]);
  const agent = rules('ClusterRole', 'sixbed4-agent');
  const writes = agent.filter((r) => r.verbs.some((v) => !['get', 'list', 'watch'].includes(v)));
  t.deepEqual(
    writes,
    [
      { apiGroups: ['sixbed4.io'], resources: ['sixbed4slices'], verbs: ['get', 'list', 'watch', 'create'] },
      { apiGroups: ['sixbed4.io'], resources: ['sixbed4slices/status'], verbs: ['get', 'patch'] },
      { apiGroups: [''], resources: ['events'], verbs: ['create', 'patch'] },
    ],
    'cluster-wide, the agent claims slices (for its own node: the admission policy) and writes their status; never deletes, never writes a prefix',
  );
  t.deepEqual(
    agent.find((r) => r.resources.includes('pods'))?.verbs,
    ['get', 'list', 'watch'],
    "the agent reads Pods (a CNI ADD without annotations; its node's pods, for repair)",
  );
  t.false(
    agent.some((r) => r.resources.includes('nodes')),
    'the agent reads no Nodes',
  );
  const agentNs = docs.find((d) => d.kind === 'Role' && d.metadata.name === 'sixbed4-agent')!;
  t.deepEqual(
    agentNs.rules,
    [
      { apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'list', 'watch'] },
      {
        apiGroups: ['coordination.k8s.io'],
        resources: ['leases'],
        verbs: ['get', 'list', 'watch', 'create', 'update'],
      },
      { apiGroups: ['apps'], resources: ['daemonsets'], resourceNames: ['sixbed4-agent'], verbs: ['get'] },
    ],
    "in its namespace: the agent ConfigMaps, its node's Lease and the failover groups' Leases, whether its DaemonSet is being deleted",
  );
  // The admission policy: agents create slices only for the node of their token's Pod.
  const vap = docs.find((d) => d.kind === 'ValidatingAdmissionPolicy')!;
  t.regex(
    JSON.stringify(vap.spec.validations),
    /object\.spec\.node == request\.userInfo\.extra\['authentication\.kubernetes\.io\/node-name'\]\[0\]/,
  );
  t.is(
    vap.spec.matchConditions[0].expression,
    'request.userInfo.username == "system:serviceaccount:sixbed4-system:sixbed4-agent"',
  );
  t.truthy(
    docs.find(
      (d) =>
        d.kind === 'ValidatingAdmissionPolicyBinding' &&
        d.spec.policyName === vap.metadata.name &&
        d.spec.validationActions.join() === 'Deny',
    ),
  );

  const off = await run(
    helm(),
    ['template', 'x', CHART, '--set', 'leaderElection.enabled=false', '--set', 'metrics.enabled=false'],
    { env: helmEnv() },
  );
  const c2 = (parseYamlDocs(off.stdout) as any[]).find((d) => d.kind === 'Deployment').spec.template.spec.containers[0];
  t.false(c2.args.includes('--leader-elect'));
  t.false(c2.args.some((a: string) => a.startsWith('--metrics')));
  t.is(c2.readinessProbe, undefined);
});

htest(
  'the CRDs are templates (helm upgrade upgrades them), equal to crds/ and kept on uninstall; crds.enabled=false leaves them out',
  async (t) => {
    const { stdout } = await run(helm(), ['template', 'sixbed4', CHART, '--namespace', 'sixbed4-system'], {
      env: helmEnv(),
    });
    const crds = (
      parseYamlDocs(stdout) as unknown as {
        kind: string;
        metadata: { name: string; annotations?: Record<string, string> };
      }[]
    ).filter((d) => d.kind === 'CustomResourceDefinition');
    t.is(crds.length, CRDS.length);
    for (const f of CRDS) {
      const want = parseYaml(readFileSync(join(REPO, 'crds', f), 'utf8')) as {
        metadata: { name: string; annotations?: Record<string, string> };
      };
      const got = crds.find((c) => c.metadata.name === want.metadata.name);
      t.truthy(got, want.metadata.name);
      t.is(got!.metadata.annotations?.['helm.sh/resource-policy'], 'keep');
      const { annotations: _a, ...gotMeta } = got!.metadata;
      const { annotations: _b, ...wantMeta } = want.metadata;
      t.deepEqual({ ...got, metadata: gotMeta }, { ...want, metadata: wantMeta }, `${f}: the rendered CRD is the file`);
    }
    const off = await run(helm(), ['template', 'sixbed4', CHART, '--set', 'crds.enabled=false'], { env: helmEnv() });
    t.false(parseYamlDocs(off.stdout).some((d) => d.kind === 'CustomResourceDefinition'));
  },
);

// the agent DaemonSet of a `helm template` with these --set flags
async function agentDaemonSet(...set: string[]): Promise<any> {
  const { stdout } = await run(
    helm(),
    [
      'template',
      'sixbed4',
      CHART,
      '--namespace',
      'sixbed4-system',
      '--set',
      'crds.enabled=false',
      ...set.flatMap((s) => ['--set', s]),
    ],
    { env: helmEnv() },
  );
  const ds = (parseYamlDocs(stdout) as any[]).filter((d) => d.kind === 'DaemonSet');
  if (ds.length !== 1) throw new Error(`${ds.length} DaemonSets rendered`);
  return ds[0];
}

htest('helm template: the one agent DaemonSet (host network, make before break, no ports, exec probes)', async (t) => {
  const ds = await agentDaemonSet('image.tag=9.9.9', 'image.pullPolicy=Always', 'agent.logLevel=debug');
  t.is(ds.apiVersion, 'apps/v1');
  t.is(ds.metadata.name, 'sixbed4-agent');
  t.is(ds.metadata.namespace, 'sixbed4-system');
  t.is(ds.metadata.labels['app.kubernetes.io/component'], 'agent');
  t.is(ds.metadata.labels['app.kubernetes.io/managed-by'], 'Helm');
  t.truthy(ds.metadata.labels['helm.sh/chart']);
  const selector = {
    'app.kubernetes.io/name': 'sixbed4',
    'app.kubernetes.io/instance': 'sixbed4',
    'app.kubernetes.io/component': 'agent',
  };
  t.deepEqual(ds.spec.selector, { matchLabels: selector });
  t.deepEqual(ds.spec.template.metadata.labels, selector);
  t.deepEqual(ds.spec.updateStrategy, { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } });
  t.deepEqual(ds.spec.template.metadata.annotations, {
    'prometheus.io/scrape': 'true',
    'prometheus.io/port': '9475',
    'prometheus.io/path': '/metrics',
  });

  const pod = ds.spec.template.spec;
  t.true(pod.hostNetwork);
  t.is(pod.hostPID, undefined, 'no hostPID without agent.slices');
  t.is(pod.dnsPolicy, 'ClusterFirstWithHostNet');
  t.is(pod.serviceAccountName, 'sixbed4-agent');
  t.is(pod.priorityClassName, 'system-node-critical');
  t.deepEqual(pod.nodeSelector, { 'kubernetes.io/os': 'linux' });
  t.deepEqual(pod.tolerations, [
    { key: 'node-role.kubernetes.io/control-plane', operator: 'Exists', effect: 'NoSchedule' },
  ]);
  t.is(pod.affinity, undefined);
  t.is(pod.imagePullSecrets, undefined);
  t.is(pod.terminationGracePeriodSeconds, 30);
  t.deepEqual(pod.securityContext, { seccompProfile: { type: 'RuntimeDefault' } });
  t.is(pod.containers.length, 1);
  t.is(pod.initContainers, undefined);

  const c = pod.containers[0];
  t.is(c.name, 'agent');
  t.is(c.image, 'sixbed4:9.9.9');
  t.is(c.imagePullPolicy, 'Always');
  t.deepEqual(c.args, [
    'agent',
    '--namespace',
    'sixbed4-system',
    '--metrics',
    ':9475',
    '--health-socket',
    '/tmp/sixbed4-agent.sock',
    '--state-dir',
    '/var/lib/sixbed4',
    '--log-format',
    'json',
    '--log-level',
    'debug',
  ]);
  t.deepEqual(c.env, [
    { name: 'NODE_NAME', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'spec.nodeName' } } },
    { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } } },
    { name: 'SIXBED4_PROC_SYS', value: '/host/proc/sys' },
    { name: 'SIXBED4_METRICS_ADDRESS', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'status.hostIP' } } },
  ]);
  t.is(
    c.ports,
    undefined,
    'no declared ports: on the host network they are host ports, and the surging agent could not start',
  );
  const exec = { command: ['node', '/app/dist/cli/probe.js', '/tmp/sixbed4-agent.sock'] };
  t.deepEqual(c.readinessProbe, { exec, periodSeconds: 10, timeoutSeconds: 10, failureThreshold: 3 });
  t.deepEqual(c.livenessProbe, {
    exec,
    initialDelaySeconds: 15,
    periodSeconds: 20,
    timeoutSeconds: 15,
    failureThreshold: 3,
  });
  t.deepEqual(c.resources, { requests: { cpu: '50m', memory: '64Mi' }, limits: { memory: '256Mi' } });
  t.deepEqual(c.securityContext, {
    privileged: false,
    allowPrivilegeEscalation: false,
    readOnlyRootFilesystem: true,
    runAsUser: 0,
    runAsNonRoot: false,
    // BPF by default (agent.fastPath): the routers' fast path, Auto by default (measured: BPF with NET_ADMIN, no SYS_ADMIN)
    capabilities: { drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW', 'BPF'] },
  });
  t.deepEqual(c.volumeMounts, [
    { name: 'dev-net-tun', mountPath: '/dev/net/tun' },
    { name: 'proc-sys-net', mountPath: '/host/proc/sys/net' },
    { name: 'state', mountPath: '/var/lib/sixbed4' },
    { name: 'tmp', mountPath: '/tmp' },
  ]);
  t.deepEqual(
    pod.volumes,
    [
      { name: 'dev-net-tun', hostPath: { path: '/dev/net/tun', type: 'CharDevice' } },
      { name: 'proc-sys-net', hostPath: { path: '/proc/sys/net', type: 'Directory' } },
      { name: 'state', hostPath: { path: '/var/lib/sixbed4', type: 'DirectoryOrCreate' } },
      { name: 'tmp', emptyDir: { medium: 'Memory', sizeLimit: '16Mi' } },
    ],
    'no config volume: the agents read the per-prefix ConfigMaps through the API',
  );
});

htest(
  'helm template: agent DaemonSet values (slices, priority, scheduling, resources, pull secrets, stateDir, metrics)',
  async (t) => {
    const slices = await agentDaemonSet('agent.slices=true', 'agent.fastPath=false');
    t.true(slices.spec.template.spec.hostPID, 'slices: hostPID');
    t.deepEqual(
      slices.spec.template.spec.containers[0].securityContext.capabilities,
      { drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW', 'SYS_ADMIN', 'SYS_PTRACE'] },
      'slices: setns into pods',
    );
    t.false(slices.spec.template.spec.containers[0].securityContext.privileged);
    // agent.fastPath=false: BPF left out, and nothing else
    t.deepEqual(
      (await agentDaemonSet('agent.fastPath=false')).spec.template.spec.containers[0].securityContext.capabilities,
      { drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW'] },
      'no fastPath: no BPF',
    );
    t.deepEqual(
      (await agentDaemonSet('agent.slices=true')).spec.template.spec.containers[0].securityContext.capabilities,
      { drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW', 'SYS_ADMIN', 'SYS_PTRACE', 'BPF'] },
      'fastPath and slices',
    );

    const noPriority = await agentDaemonSet('agent.priorityClassName=');
    t.false('priorityClassName' in noPriority.spec.template.spec, 'empty priorityClassName: left out');

    const custom = await agentDaemonSet(
      'agent.nodeSelector.sixbed4\\.io/router=true',
      'agent.tolerations[0].operator=Exists',
      'agent.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=zone',
      'agent.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists',
      'agent.resources.requests.cpu=10m',
      'agent.resources.limits.memory=128Mi',
      'imagePullSecrets[0].name=regcred',
      'agent.stateDir=/data/sixbed4',
      'agent.priorityClassName=net-critical',
      'agent.metrics.port=9999',
      'agent.metrics.podAnnotations=false',
      'agent.podAnnotations.team=net',
      'serviceAccounts.agent.name=custom-agent',
    );
    const pod = custom.spec.template.spec;
    t.deepEqual(pod.nodeSelector, { 'kubernetes.io/os': 'linux', 'sixbed4.io/router': 'true' });
    t.deepEqual(pod.tolerations, [{ operator: 'Exists' }]);
    t.deepEqual(pod.affinity, {
      nodeAffinity: {
        requiredDuringSchedulingIgnoredDuringExecution: {
          nodeSelectorTerms: [{ matchExpressions: [{ key: 'zone', operator: 'Exists' }] }],
        },
      },
    });
    t.deepEqual(pod.containers[0].resources, { requests: { cpu: '10m', memory: '64Mi' }, limits: { memory: '128Mi' } });
    t.deepEqual(pod.imagePullSecrets, [{ name: 'regcred' }]);
    t.is(pod.priorityClassName, 'net-critical');
    t.is(pod.serviceAccountName, 'custom-agent');
    t.deepEqual(
      pod.volumes.filter((v: any) => v.hostPath).map((v: any) => v.hostPath.path),
      ['/dev/net/tun', '/proc/sys/net', '/data/sixbed4'],
      'the only hostPaths',
    );
    t.deepEqual(
      pod.containers[0].volumeMounts.find((m: any) => m.name === 'state'),
      { name: 'state', mountPath: '/var/lib/sixbed4' },
      'the state directory inside the container does not move',
    );
    const args: string[] = pod.containers[0].args;
    t.is(args[args.indexOf('--metrics') + 1], ':9999');
    t.is(args[args.indexOf('--state-dir') + 1], '/var/lib/sixbed4');
    t.deepEqual(custom.spec.template.metadata.annotations, { team: 'net' });
    t.is(pod.containers[0].ports, undefined);
  },
);

htest(
  'helm template: PodMonitor and ServiceMonitor are off by default; on, they select the agents and the operator',
  async (t) => {
    const base = ['template', 'sixbed4', CHART, '--namespace', 'sixbed4-system', '--set', 'crds.enabled=false'];
    const off = parseYamlDocs((await run(helm(), base, { env: helmEnv() })).stdout) as any[];
    t.false(off.some((d) => ['PodMonitor', 'ServiceMonitor', 'Service'].includes(d.kind)));

    const on = parseYamlDocs(
      (
        await run(
          helm(),
          [
            ...base,
            '--set',
            'agent.podMonitor.enabled=true',
            '--set',
            'metrics.serviceMonitor.enabled=true',
            '--set',
            'agent.podMonitor.labels.release=prom',
            '--set',
            'agent.podMonitor.interval=30s',
            '--set',
            'agent.metrics.port=9476',
          ],
          { env: helmEnv() },
        )
      ).stdout,
    ) as any[];
    const pm = on.find((d) => d.kind === 'PodMonitor');
    t.is(pm.apiVersion, 'monitoring.coreos.com/v1');
    t.is(pm.metadata.labels.release, 'prom');
    t.deepEqual(pm.spec.selector, {
      matchLabels: {
        'app.kubernetes.io/name': 'sixbed4',
        'app.kubernetes.io/instance': 'sixbed4',
        'app.kubernetes.io/component': 'agent',
      },
    });
    t.deepEqual(pm.spec.namespaceSelector, { matchNames: ['sixbed4-system'] });
    const ep = pm.spec.podMetricsEndpoints[0];
    t.is(pm.spec.podMetricsEndpoints.length, 1);
    // port and portNumber select declared container ports only; the agents declare none, so the address is relabeled
    t.is(ep.port, undefined);
    t.is(ep.portNumber, undefined);
    t.is(ep.targetPort, undefined);
    t.is(ep.interval, '30s');
    const addr = ep.relabelings.filter((r: any) => r.targetLabel === '__address__');
    t.deepEqual(
      addr.map((r: any) => [r.sourceLabels, r.regex, r.replacement]),
      [
        [['__meta_kubernetes_pod_ip'], '([^:]+)', '${1}:9476'],
        [['__meta_kubernetes_pod_ip'], '(.+:.+)', '[${1}]:9476'],
      ],
    );

    const svc = on.find((d) => d.kind === 'Service');
    t.deepEqual(svc.spec.selector, {
      'app.kubernetes.io/name': 'sixbed4',
      'app.kubernetes.io/instance': 'sixbed4',
      'app.kubernetes.io/component': 'operator',
    });
    t.deepEqual(svc.spec.ports, [{ name: 'metrics', port: 9464, targetPort: 'metrics', protocol: 'TCP' }]);
    const sm = on.find((d) => d.kind === 'ServiceMonitor');
    t.is(sm.apiVersion, 'monitoring.coreos.com/v1');
    t.deepEqual(sm.spec.selector.matchLabels, svc.spec.selector);
    for (const [k, v] of Object.entries(sm.spec.selector.matchLabels))
      t.is(svc.metadata.labels[k], v, `the Service carries ${k}`);
    t.deepEqual(sm.spec.endpoints, [{ port: 'metrics', path: '/metrics' }]);

    const noMetrics = parseYamlDocs(
      (
        await run(helm(), [...base, '--set', 'metrics.serviceMonitor.enabled=true', '--set', 'metrics.enabled=false'], {
          env: helmEnv(),
        })
      ).stdout,
    ) as any[];
    t.false(
      noMetrics.some((d) => ['ServiceMonitor', 'Service'].includes(d.kind)),
      'no ServiceMonitor without the metrics port',
    );
  },
);
