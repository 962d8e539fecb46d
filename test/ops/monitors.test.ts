// The chart's PodMonitor, ServiceMonitor and PrometheusRule, proven by use: the prometheus-operator CRDs (from its
// Go module) in a real API server; the chart rendered with all three and applied server-side with strict field
// validation, as kubectl does; the agent Pod made by the chart's DaemonSet and the operator Pod by its Deployment
// (their controllers run; the test binds both to the node, as the scheduler would); the scrape configuration
// prometheus-operator would generate from the monitors (monitors.ts) in a real Prometheus whose Kubernetes service
// discovery watches that API server. Its
// targets must be the agent on the node's address and agent.metrics.port (the PodMonitor's relabeling, the pod
// declaring no port) and the operator through its Service's EndpointSlice, both up, with node, pod and namespace.
//
// Not the real-node test's kubelets: no kubelet runs here, so the test marks the Pods Running and Ready with the
// node's address (a host-network Pod's IP is its node's) and runs the agent and the operator as processes in the
// node's network namespace of the lab topology, listening where those Pods would. Discovery, relabeling and
// scrapes are Prometheus' own.
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import YAML from 'yaml';
import { controlPlaneSkipReason, startControlPlane, type ControlPlane } from '../k8s/controlplane.js';
import { agentConfigMapName, type KubeObject } from '../../kube/api.js';
import { Kube, paths } from '../../kube/client.js';
import { buildTopology, TOPO, type Topology } from '../../lab/topology.js';
import type { Proc } from '../../lab/proc.js';
import { skipReason } from '../helpers/fixtures.js';
import { bridgeApiInto, type ApiBridge } from '../helpers/api-bridge.js';
import { agentArgv, agentToken, NS, OPERATOR_SA, operatorArgv, REPO, safely } from '../helpers/cluster.js';
import { eventually } from '../helpers/wait.js';
import { OPERATOR_CRDS, PROMETHEUS, prometheusSkipReason } from './tools.js';
import { scrapeConfigs, type Monitor } from './monitors.js';
import { bridgeOut, type ScrapeBridge } from './scrape-bridge.js';

const run = promisify(execFile);
const why = skipReason ?? controlPlaneSkipReason() ?? prometheusSkipReason();
const serial = why ? test.serial.skip : test.serial;
const title = (s: string) => (why ? `${s} (skipped: ${why})` : s);
const NODE = 'edge-1';
const PREFIX = 'home';
const RELEASE = 'sixbed4';
const CRDS = ['podmonitors', 'servicemonitors', 'prometheusrules'];

interface Target {
  labels: Record<string, string>;
  scrapePool: string;
  scrapeUrl: string;
  health: string;
  lastError: string;
}

const s = {} as {
  cp: ControlPlane;
  admin: Kube;
  topo: Topology;
  dir: string;
  bridge: ApiBridge;
  procs: Proc[];
  out: ScrapeBridge;
  rendered: KubeObject[];
  promUrl: string;
};

const kubectl = (args: string[]) =>
  run(join(s.cp.binDir, 'kubectl'), [...args, '--kubeconfig', s.cp.kubeconfigPath], { maxBuffer: 64 << 20 });

test.before(async () => {
  if (why) return;
  s.procs = [];
  s.dir = await mkdtemp(join(tmpdir(), 'sixbed4-monitors-'));
  // The DaemonSet and Deployment controllers make the Pods; the EndpointSlice controller the operator Service's endpoints.
  // nodelifecycle: without it the DaemonSet controller wanted no Pod on the node (DESIRED 0).
  s.cp = await startControlPlane({
    controllerManager: true,
    controllers: [
      'garbagecollector',
      'namespace',
      'serviceaccount',
      'serviceaccount-token',
      'deployment',
      'replicaset',
      'daemonset',
      'nodelifecycle',
      'endpointslice',
    ],
  });
  s.admin = new Kube(s.cp.kubeConfig(), 'sixbed4-test');
  s.topo = await buildTopology({ tag: 'opsm' });
  await s.admin.create(paths.nodes, {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: NODE, labels: { 'kubernetes.io/hostname': NODE, 'kubernetes.io/os': 'linux' } },
    status: { addresses: [{ type: 'InternalIP', address: TOPO.routerV4 }] },
  });
  const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  await s.admin.mergePatch(`${paths.node(NODE)}/status`, {
    status: {
      conditions: [
        {
          type: 'Ready',
          status: 'True',
          reason: 'KubeletReady',
          message: 'test',
          lastHeartbeatTime: now,
          lastTransitionTime: now,
        },
      ],
      addresses: [{ type: 'InternalIP', address: TOPO.routerV4 }],
    },
  });
});

test.after.always(async () => {
  for (const p of (s.procs ?? []).reverse()) await safely(() => p.stop());
  await safely(() => s.out?.close());
  await safely(() => s.bridge?.close());
  await safely(() => s.topo?.destroy());
  await safely(() => s.cp?.stop());
  if (s.dir) await safely(() => rm(s.dir, { recursive: true, force: true }));
});

serial(
  title(
    'the prometheus-operator CRDs install; the chart with both monitors and its rule applies server-side, strictly',
  ),
  async (t) => {
    const files = (await readdir(OPERATOR_CRDS)).filter((f) =>
      CRDS.some((c) => f === `monitoring.coreos.com_${c}.yaml`),
    );
    t.is(files.length, 3, files.join(', '));
    await kubectl([
      'apply',
      '--server-side',
      '--field-manager',
      'sixbed4-test',
      ...files.flatMap((f) => ['-f', join(OPERATOR_CRDS, f)]),
    ]);
    await kubectl([
      'wait',
      '--for',
      'condition=Established',
      '--timeout',
      '60s',
      ...CRDS.map((c) => `crd/${c}.monitoring.coreos.com`),
    ]);

    const { stdout } = await run(
      s.cp.helm,
      [
        'template',
        RELEASE,
        join(REPO, 'charts', 'sixbed4'),
        '--namespace',
        NS,
        '--set',
        'agent.podMonitor.enabled=true',
        '--set',
        'agent.podMonitor.interval=1s',
        '--set',
        'metrics.serviceMonitor.enabled=true',
        '--set',
        'metrics.serviceMonitor.interval=1s',
        '--set',
        'prometheusRule.enabled=true',
        '--set',
        'grafanaDashboard.enabled=true',
        // no kubelet pulls it; the Pods only have to exist
        '--set',
        'image.repository=sixbed4',
        '--set',
        'image.tag=test',
      ],
      { maxBuffer: 64 << 20 },
    );
    s.rendered = YAML.parseAllDocuments(stdout)
      .map((d) => d.toJS() as KubeObject)
      .filter(Boolean);
    const kinds = s.rendered.map((o) => o.kind);
    for (const k of ['PodMonitor', 'ServiceMonitor', 'PrometheusRule', 'ConfigMap', 'DaemonSet', 'Deployment'])
      t.true(kinds.includes(k), k);
    await kubectl(['create', 'namespace', NS]);
    const file = join(s.dir, 'chart.yaml');
    await writeFile(file, stdout);
    // kubectl apply --server-side validates strictly by default: a field the CRD's schema lacks is an error, not dropped.
    const applied = await kubectl([
      'apply',
      '--server-side',
      '--field-manager',
      'helm',
      '--validate=strict',
      '-f',
      file,
    ]);
    t.log(
      applied.stdout
        .split('\n')
        .filter((l) => /monitoring|dashboard/.test(l))
        .join('\n'),
    );
    // What the API server keeps is what the chart says (nothing pruned).
    for (const kind of ['PodMonitor', 'ServiceMonitor', 'PrometheusRule'] as const) {
      const want = s.rendered.find((o) => o.kind === kind)! as KubeObject & { spec: unknown };
      const got = await s.admin.get<{ spec: unknown }>(
        `/apis/monitoring.coreos.com/v1/namespaces/${NS}/${kind.toLowerCase()}s/${want.metadata.name}`,
      );
      t.deepEqual(got?.spec, want.spec, `${kind} ${want.metadata.name} as stored`);
    }
  },
);

serial(
  title(
    "the Pods of the chart's DaemonSet and Deployment, Running and Ready at the node's address, with the agent and operator serving there",
  ),
  async (t) => {
    // The processes, where the Pods would run them: the node's network namespace, metrics on its InternalIP.
    const apiPort = Number(new URL(s.cp.server).port);
    s.bridge = await bridgeApiInto(s.topo.router, apiPort, join(s.dir, 'api.sock'));
    const opKubeconfig = await s.cp.writeKubeconfig(await s.cp.serviceAccountToken(NS, OPERATOR_SA), 'operator');
    s.procs.push(
      s.topo.router.spawn([
        process.execPath,
        ...operatorArgv(),
        '--kubeconfig',
        opKubeconfig,
        '--identity',
        'op',
        '--namespace',
        NS,
        '--agent-daemonset',
        `${RELEASE}-agent`,
        '--metrics',
        `${TOPO.routerV4}:9464`,
        '--log-format',
        'text',
      ]),
    );
    await s.admin.create(paths.prefixes, {
      apiVersion: 'sixbed4.io/v1alpha1',
      kind: 'SixBed4Prefix',
      metadata: { name: PREFIX },
      spec: { prefix: TOPO.prefix, nodeSelector: { 'kubernetes.io/hostname': NODE }, uplink: TOPO.routerUplinkIf },
    });
    await eventually(
      'the agent ConfigMap',
      () => s.admin.get(paths.configMap(NS, agentConfigMapName(PREFIX))),
      30_000,
      200,
    );
    const agent = s.topo.router.spawn(
      agentArgv(
        { node: NODE, kubeconfig: await s.cp.writeKubeconfig(await agentToken(s.cp, NODE), 'agent'), stateDir: s.dir },
        '--prefix',
        PREFIX,
        '--tun',
        '6bed4',
        '--metrics',
        `${TOPO.routerV4}:9475`,
        '--heartbeat-ms',
        '1000',
      ),
    );
    s.procs.push(agent);
    await agent.waitFor(/router ready/, 20_000);

    const podsOf = async (component: string) =>
      (
        await s.admin.list<KubeObject & { spec: { nodeName?: string } }>(paths.pods(NS), {
          labelSelector: `app.kubernetes.io/component=${component}`,
        })
      ).items;
    const explain = async (err: Error): Promise<never> => {
      const state = await kubectl([
        'get',
        'daemonsets,deployments,replicasets,pods,events',
        '-n',
        NS,
        '-o',
        'wide',
      ]).then(
        (r) => r.stdout,
        (e: Error) => e.message,
      );
      throw new Error(`${err.message}\n${state}`);
    };
    // The DaemonSet's Pod for the node: it names the node by affinity and waits for the scheduler.
    const agentPod = await eventually(
      "the DaemonSet's Pod for the node",
      async () => (await podsOf('agent')).find((p) => JSON.stringify(p.spec).includes(`"values":["${NODE}"]`)),
      30_000,
      200,
    ).catch(explain);
    const operatorPod = await eventually(
      "the Deployment's Pod",
      async () => (await podsOf('operator'))[0],
      30_000,
      200,
    ).catch(explain);
    // No scheduler runs: bind both Pods to the node as the scheduler would.
    for (const p of [agentPod, operatorPod]) {
      await s.admin.create(`${paths.pod(NS, p.metadata.name!)}/binding`, {
        apiVersion: 'v1',
        kind: 'Binding',
        metadata: { name: p.metadata.name },
        target: { apiVersion: 'v1', kind: 'Node', name: NODE },
      });
    }
    const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    for (const p of [agentPod, operatorPod]) {
      await s.admin.mergePatch(`${paths.pod(NS, p.metadata.name!)}/status`, {
        status: {
          phase: 'Running',
          hostIP: TOPO.routerV4,
          hostIPs: [{ ip: TOPO.routerV4 }],
          podIP: TOPO.routerV4,
          podIPs: [{ ip: TOPO.routerV4 }],
          startTime: now,
          conditions: ['PodScheduled', 'Initialized', 'ContainersReady', 'Ready'].map((type) => ({
            type,
            status: 'True',
            lastTransitionTime: now,
          })),
        },
      });
    }
    await eventually(
      "the operator Service's EndpointSlice with the Pod, ready",
      async () => {
        const l = await s.admin.list<
          KubeObject & { endpoints?: { addresses: string[]; conditions?: { ready?: boolean } }[] }
        >(`/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices`, {
          labelSelector: `kubernetes.io/service-name=${RELEASE}-operator-metrics`,
        });
        return l.items.some((e) =>
          e.endpoints?.some((x) => x.addresses.includes(TOPO.routerV4) && x.conditions?.ready),
        );
      },
      30_000,
      200,
    );
    t.pass();
  },
);

serial(
  title(
    "Prometheus with the monitors' scrape configuration finds the agent and the operator by their relabeling, and scrapes them",
  ),
  async (t) => {
    const monitors = await Promise.all(
      (['PodMonitor', 'ServiceMonitor'] as const).map(async (kind) => {
        const name = s.rendered.find((o) => o.kind === kind)!.metadata.name!;
        return (await s.admin.get<Monitor>(
          `/apis/monitoring.coreos.com/v1/namespaces/${NS}/${kind.toLowerCase()}s/${name}`,
        ))!;
      }),
    );
    // The kubeconfig's https://127.0.0.1:PORT reaches the API server from the node's namespace through the bridge.
    const sd = { kubeconfig_file: s.cp.kubeconfigPath };
    const rule = (
      await s.admin.list<{ spec: { groups: unknown[] } }>(
        `/apis/monitoring.coreos.com/v1/namespaces/${NS}/prometheusrules`,
      )
    ).items[0]!;
    await writeFile(join(s.dir, 'rules.yaml'), YAML.stringify({ groups: rule.spec.groups }));
    const config = {
      global: { scrape_interval: '1s', evaluation_interval: '1s' },
      rule_files: [join(s.dir, 'rules.yaml')],
      scrape_configs: monitors.flatMap((m) => scrapeConfigs({ ...m, kind: m.kind }, sd)),
    };
    await writeFile(join(s.dir, 'prometheus.yml'), YAML.stringify(config));
    t.log(YAML.stringify(config.scrape_configs[0]));
    const prom = s.topo.router.spawn([
      PROMETHEUS,
      `--config.file=${join(s.dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(s.dir, 'tsdb')}`,
      '--web.listen-address=127.0.0.1:9090',
      '--log.level=warn',
    ]);
    s.procs.push(prom);
    s.out = await bridgeOut(s.topo.router, { host: '127.0.0.1', port: 9090 }, join(s.dir, 'prometheus.sock'));
    s.promUrl = `http://${s.out.address}`;
    const api = async <T>(path: string, params: Record<string, string> = {}) => {
      const body = (await (await fetch(`${s.promUrl}/api/v1/${path}?${new URLSearchParams(params)}`)).json()) as {
        status: string;
        data: T;
        error?: string;
      };
      if (body.status !== 'success') throw new Error(`${path}: ${body.error}`);
      return body.data;
    };
    const targets = await eventually(
      'two targets, both up',
      async () => {
        const ts = (await api<{ activeTargets: Target[] }>('targets').catch(() => ({ activeTargets: [] })))
          .activeTargets;
        return ts.length === 2 && ts.every((x) => x.health === 'up') ? ts : undefined;
      },
      60_000,
      500,
    ).catch(async (err: Error) => {
      const ts = await api<{ activeTargets: Target[]; droppedTargets: unknown[] }>('targets').catch(() => undefined);
      throw new Error(
        `${err.message}\ntargets: ${JSON.stringify(ts, null, 1).slice(0, 4000)}\nprometheus: ${prom.output().slice(-2000)}`,
      );
    });
    const agentTarget = targets.find((x) => x.scrapePool.startsWith('podMonitor/'))!;
    const operatorTarget = targets.find((x) => x.scrapePool.startsWith('serviceMonitor/'))!;
    t.log(`agent: ${agentTarget.scrapeUrl} ${JSON.stringify(agentTarget.labels)}`);
    t.log(`operator: ${operatorTarget.scrapeUrl} ${JSON.stringify(operatorTarget.labels)}`);
    t.is(
      agentTarget.scrapeUrl,
      `http://${TOPO.routerV4}:9475/metrics`,
      "the pod's IP (the node's InternalIP) and agent.metrics.port",
    );
    t.like(agentTarget.labels, {
      node: NODE,
      namespace: NS,
      container: 'agent',
      job: `${NS}/${RELEASE}-agent`,
      instance: `${TOPO.routerV4}:9475`,
    });
    t.regex(agentTarget.labels.pod ?? '', new RegExp(`^${RELEASE}-agent-`));
    t.is(operatorTarget.scrapeUrl, `http://${TOPO.routerV4}:9464/metrics`);
    t.like(operatorTarget.labels, {
      namespace: NS,
      service: `${RELEASE}-operator-metrics`,
      job: `${RELEASE}-operator-metrics`,
      endpoint: 'metrics',
      container: 'operator',
    });
    // The series the alerts and the dashboard use, with the labels they group by.
    const q = async (expr: string) =>
      (await api<{ result: { metric: Record<string, string> }[] }>('query', { query: expr })).result;
    const live = await eventually(
      "the agent's router families",
      async () => {
        const r = await q('sixbed4_router_live_peers');
        return r.length ? r : undefined;
      },
      20_000,
      500,
    );
    t.like(live[0]!.metric, { prefix: PREFIX, node: NODE, job: `${NS}/${RELEASE}-agent` });
    const age = await eventually(
      "the operator's report age",
      async () => {
        const r = await q('sixbed4_operator_agent_report_age_seconds');
        return r.length ? r : undefined;
      },
      20_000,
      500,
    );
    t.like(age[0]!.metric, { prefix: PREFIX, node: NODE, job: `${RELEASE}-operator-metrics` });
    // The rule as the API server stores it loads and evaluates; nothing holds on this healthy node.
    const groups = await eventually(
      'the rules evaluated',
      async () => {
        const g = (
          await api<{ groups: { rules: { name: string; health: string; lastEvaluation: string }[] }[] }>('rules')
        ).groups;
        return g.length && g.every((x) => x.rules.every((r) => !r.lastEvaluation.startsWith('0001'))) ? g : undefined;
      },
      20_000,
      500,
    );
    t.true(groups.flatMap((g) => g.rules).every((r) => r.health === 'ok'));
    // Before the first scrape of the operator, Sixbed4OperatorNoLeader is pending for want of its series (absent):
    // once both targets are in, nothing may hold.
    const alerts = await eventually(
      'no alert pending or firing',
      async () => {
        const a = await q('ALERTS');
        return a.length === 0 ? a : undefined;
      },
      20_000,
      500,
    ).catch(async (err: Error) => {
      throw new Error(`${err.message}: ${(await q('ALERTS')).map((a) => a.metric.alertname).join(', ')}`);
    });
    t.deepEqual(alerts, []);
  },
);
