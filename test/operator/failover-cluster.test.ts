// spec.failover against a real kube-apiserver, with the chart installed and `sixbed4 operator` running under the
// chart's ServiceAccount: what only a real server shows. The CRD's CEL rules and their messages; the printer column
// Active through the real kubectl; the group's Lease created by the operator and owned by the prefix; the agents'
// side through the chart's RBAC and admission policy (an agent takes, renews and releases the group's Lease with
// kube/leader.ts for its own node only); the operator's status, conditions and Events as the Lease moves. Nodes are
// Node objects and agents are their tokens (no kubelet: test/k8s/failover.test.ts runs the real nodes).
//
// Needs the control-plane binaries (test/k8s/build-control-plane.sh); skips otherwise.
import test from 'ava';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { KubeConfig } from '@kubernetes/client-node';
import { controlPlaneSkipReason, startControlPlane, type ControlPlane } from '../k8s/controlplane.js';
import { nodeBinaries } from '../k8s/node.js';
import {
  AGENT_REPORTS_ANNOTATION,
  agentLeaseName,
  failoverLeaseName,
  type KubeObject,
  type SixBed4Prefix,
} from '../../kube/api.js';
import { Kube, paths } from '../../kube/client.js';
import { LeaderElector } from '../../kube/leader.js';
import { microTime } from '../../agent/cluster/lease.js';
import { createLogger } from '../../lib/log.js';
import {
  agentToken,
  apiErrorMessage,
  clusterTest,
  installChart,
  kubectlApply,
  NS,
  OPERATOR_FLAGS,
  OPERATOR_SA,
  OperatorProcess,
} from '../helpers/cluster.js';
import { eventually } from '../helpers/wait.js';

const run = promisify(execFile);
const skip = controlPlaneSkipReason();
if (skip) test.serial.skip(`failover against a real API server: ${skip}`, () => {});

const s: { cp?: ControlPlane; admin?: Kube; adminKc?: KubeConfig; ops: OperatorProcess[] } = { ops: [] };
const ktest = clusterTest(skip, () => s.ops);
const admin = () => s.admin!;
const log = createLogger({ level: 'error', component: 'test' });

test.before(async () => {
  if (skip) return;
  s.cp = await startControlPlane({ controllerManager: true, controllers: ['garbagecollector'] });
  s.adminKc = s.cp.kubeConfig();
  s.admin = new Kube(s.adminKc, 'sixbed4-test');
  await installChart(s.cp, ['--set', 'image.tag=test']);
  await eventually('the CRD established', async () => {
    const crd = await admin().get<KubeObject>(
      '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/sixbed4prefixes.sixbed4.io',
    );
    return ((crd?.status as { conditions?: { type: string; status: string }[] })?.conditions ?? []).some(
      (c) => c.type === 'Established' && c.status === 'True',
    );
  });
  const kubeconfig = await s.cp.writeKubeconfig(await s.cp.serviceAccountToken(NS, OPERATOR_SA), 'operator');
  s.ops.push(await OperatorProcess.start(kubeconfig, 'op-f', OPERATOR_FLAGS));
});

test.after.always(async () => {
  for (const op of s.ops) await op.stop();
  await s.cp?.stop();
});

const BASE = {
  prefix: '2001:db8:9:10::/64',
  nodeSelector: { 'sixbed4.io/test': 'failover' },
  listen: { address: '198.51.100.10' },
};
const FO = { upstream: 'RoutedNextHop', nextHop: '2001:db8:ffff::64', virtualRouterId: 7 };
const apply = (name: string, spec: Record<string, unknown>, dryRun = false) =>
  kubectlApply(
    s.adminKc!,
    [{ apiVersion: 'sixbed4.io/v1alpha1', kind: 'SixBed4Prefix', metadata: { name }, spec } as never],
    { dryRun },
  );

/** The agent of a node: the chart's agent ServiceAccount, its token bound to a Pod on that node. */
const agents = new Map<string, Kube>();
async function agentOf(node: string): Promise<Kube> {
  if (!agents.has(node))
    agents.set(
      node,
      new Kube(s.cp!.kubeConfigForToken(await agentToken(s.cp!, node), `agent-${node}`), 'sixbed4-agent'),
    );
  return agents.get(node)!;
}

/** A member's report, as its agent writes it: into its node's heartbeat Lease. */
async function report(prefix: string, node: string, fields: Record<string, unknown>): Promise<void> {
  const agent = await agentOf(node);
  const path = paths.lease(NS, agentLeaseName(node));
  const cur = await agent.get<KubeObject>(path);
  const now = new Date();
  const lease = {
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: {
      name: agentLeaseName(node),
      namespace: NS,
      labels: { 'app.kubernetes.io/name': 'sixbed4', 'app.kubernetes.io/component': 'agent-lease' },
      annotations: {
        [AGENT_REPORTS_ANNOTATION]: JSON.stringify({
          [prefix]: { lastReport: now.toISOString().replace(/\.\d{3}Z$/, 'Z'), ...fields },
        }),
      },
      ...(cur ? { resourceVersion: cur.metadata.resourceVersion } : {}),
    },
    spec: { holderIdentity: node, leaseDurationSeconds: 40, renewTime: microTime(now) },
  };
  if (cur) await agent.replace(path, lease);
  else await agent.create(paths.leases(NS), lease);
}

/** A member's elector on the group's Lease, as the agent runs it (kube/leader.ts), with its node's agent token. */
async function elector(prefix: string, node: string): Promise<LeaderElector> {
  return new LeaderElector({
    kube: await agentOf(node),
    namespace: NS,
    name: failoverLeaseName(prefix),
    identity: `${node}_0a1b2c3d`,
    leaseDurationMs: 2000,
    renewDeadlineMs: 1500,
    retryPeriodMs: 500,
    log,
    component: 'failover-lease',
  });
}

async function kubectl(args: string[]): Promise<string | undefined> {
  const bin = nodeBinaries();
  if (!bin) return undefined;
  return (await run(join(bin, 'kubectl'), ['--kubeconfig', s.cp!.kubeconfigPath, ...args])).stdout;
}

ktest('spec.failover mistakes are refused by the API server with readable messages', async (t) => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [
      { ...BASE, prefix: '2001:db8:9:10::/63', failover: FO },
      /spec\.failover: Invalid value: .*failover needs a \/64 prefix .* 2001:db8:9:10::\/63 is split among nodes/,
    ],
    [
      { ...BASE, listen: {}, failover: FO },
      /spec\.failover: Required value: failover needs listen\.address: the floating IPv4 address/,
    ],
    [
      { ...BASE, failover: { ...FO, nextHop: '2001:db8:9:10::1' } },
      /spec\.failover\.nextHop: Invalid value: .*failover\.nextHop 2001:db8:9:10::1 lies inside the prefix 2001:db8:9:10::\/64/,
    ],
    [
      { ...BASE, failover: { upstream: 'RoutedNextHop', virtualRouterId: 7 } },
      /spec\.failover\.nextHop: Required value: upstream RoutedNextHop needs nextHop/,
    ],
    [
      { ...BASE, failover: { ...FO, upstream: 'OnLink' } },
      /spec\.failover\.nextHop: Forbidden: nextHop is only for upstream RoutedNextHop/,
    ],
    [{ ...BASE, failover: { ...FO, nextHop: 'ff02::1' } }, /failover\.nextHop ff02::1 must be a unicast address/],
    [
      { ...BASE, failover: { ...FO, nextHop: '198.51.100.1' } },
      /failover\.nextHop 198\.51\.100\.1 is not an IPv6 address/,
    ],
    [
      { ...BASE, failover: { ...FO, fenceAfterMs: 2500 } },
      /renewIntervalMs < fenceAfterMs < leaseDurationMs \(the active node withdraws/,
    ],
    [
      { ...BASE, failover: { ...FO, virtualRouterId: 0 } },
      /spec\.failover\.virtualRouterId: Invalid value: 0: .*greater than or equal to 1/,
    ],
    [
      { ...BASE, failover: { ...FO, upstream: 'Routed' } },
      /spec\.failover\.upstream: Unsupported value: "Routed": supported values: "RoutedNextHop", "OnLink"/,
    ],
    [{ ...BASE, failover: { upstream: 'OnLink' } }, /spec\.failover\.virtualRouterId: Required value/],
    [
      { ...BASE, failover: FO, slices: { enabled: true } },
      /spec\.slices\.enabled: Forbidden: slices cannot be used with failover/,
    ],
  ];
  for (const [spec, re] of cases) {
    const { code, message } = await apiErrorMessage(apply('invalid', spec));
    t.is(code, 422, JSON.stringify(spec));
    t.regex(message, re, JSON.stringify(spec));
  }
  // the defaults the server fills in, and a valid spec stored as written
  const [stored] = (await apply(
    'valid',
    { ...BASE, failover: { upstream: 'OnLink', virtualRouterId: 9 } },
    true,
  )) as unknown as SixBed4Prefix[];
  t.deepEqual(stored!.spec.failover, {
    upstream: 'OnLink',
    virtualRouterId: 9,
    standbys: 1,
    leaseDurationMs: 2000,
    renewIntervalMs: 500,
    fenceAfterMs: 1500,
  });
});

ktest(
  "a failover group: the operator creates its Lease (owned by the prefix) and the shares; members elect through the chart's RBAC; kubectl get shows the active node; a handover says so; no standby is Degraded",
  async (t) => {
    for (const [n, ip] of [
      ['fo-a', '198.51.100.21'],
      ['fo-b', '198.51.100.22'],
    ] as const) {
      await admin().create(paths.nodes, {
        apiVersion: 'v1',
        kind: 'Node',
        metadata: { name: n, labels: { 'sixbed4.io/test': 'failover' } },
        status: { addresses: [{ type: 'InternalIP', address: ip }] },
      });
    }
    await apply('fo', { ...BASE, failover: FO });
    const lease = await eventually("the group's Lease", () =>
      admin().get<KubeObject & { spec?: { holderIdentity?: string } }>(paths.lease(NS, 'sixbed4-failover-fo')),
    );
    const p0 = (await admin().get<SixBed4Prefix>(paths.prefix('fo')))!;
    t.like(lease.metadata.ownerReferences![0], { kind: 'SixBed4Prefix', name: 'fo', uid: p0.metadata.uid });
    t.falsy(lease.spec?.holderIdentity, 'held by nobody until a member takes it');
    const cm = await eventually(
      'the shares',
      async () =>
        (await admin().get<KubeObject & { data?: Record<string, string> }>(paths.configMap(NS, 'sixbed4-agent-fo')))
          ?.data,
    );
    t.like(JSON.parse(cm['node.fo-b.json']!), {
      prefix: '2001:db8:9:10::/64',
      listen: { address: '198.51.100.10' },
      failover: { members: ['fo-a', 'fo-b'], leaseName: 'sixbed4-failover-fo', virtualRouterId: 7 },
    });

    // fo-a's agent takes the Lease; fo-b's agent may not write it in fo-a's name (the admission policy).
    const a = await elector('fo', 'fo-a');
    t.is((await a.attempt()).holder, 'fo-a_0a1b2c3d');
    // The API server applies a new admission policy once its informer has it (it came with the chart moments ago):
    // a forged write that still got through is tried again, on the Lease as it is now.
    const forged = await eventually(
      'the admission policy in force',
      async () => {
        const cur = (await admin().get<KubeObject & { spec: Record<string, unknown> }>(
          paths.lease(NS, 'sixbed4-failover-fo'),
        ))!;
        return apiErrorMessage(
          (await agentOf('fo-b')).replace(paths.lease(NS, 'sixbed4-failover-fo'), {
            ...cur,
            spec: { ...cur.spec, renewTime: microTime(new Date()) },
          }),
        ).catch(() => undefined);
      },
      30_000,
      500,
    );
    t.is(forged.code, 403);
    t.regex(forged.message, /a sixbed4 agent writes only the Lease of its own node: this one runs on fo-b/);
    await report('fo', 'fo-a', { ready: true, livePeers: 0, message: 'forwarding', failover: 'Active' });
    await report('fo', 'fo-b', { ready: true, livePeers: 0, message: 'standing by', failover: 'Standby' });
    const p1 = await eventually('fo-a active, Ready, fo-b a ready standby', async () => {
      const p = await admin().get<SixBed4Prefix>(paths.prefix('fo'));
      return p?.status?.failover?.active === 'fo-a' &&
        p.status.failover.standbysReady === '1/1' &&
        p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')
        ? p
        : undefined;
    });
    t.like(p1.status!.failover, {
      active: 'fo-a',
      standbysReady: '1/1',
      lastFailover: { to: 'fo-a', reason: 'Elected' },
    });
    t.deepEqual(
      p1.status!.nodes!.map((e) => `${e.name} ${e.failover}`),
      ['fo-a Active', 'fo-b Standby'],
    );
    const table = await kubectl(['get', 's4p', 'fo']);
    if (table !== undefined) {
      t.regex(table.split('\n')[0]!, /^NAME\s+PREFIX\s+NODES READY\s+ACTIVE\s+LIVE PEERS\s+DEGRADED\s+AGE$/);
      t.regex(table.split('\n')[1]!, /^fo\s+2001:db8:9:10::\/64\s+2\/2\s+fo-a\s+0\s+AsExpected\s+\d+s$/);
    } else t.log('kubectl not built: the printer column checked through the CRD only');

    // A planned move: fo-a releases (as its agent does when it stops), fo-b takes over.
    t.true(await a.release('Released'));
    const b = await elector('fo', 'fo-b');
    t.is((await b.attempt()).holder, 'fo-b_0a1b2c3d');
    await report('fo', 'fo-b', { ready: true, livePeers: 0, message: 'forwarding', failover: 'Active' });
    const p2 = await eventually('fo-b active after the handover', async () => {
      const p = await admin().get<SixBed4Prefix>(paths.prefix('fo'));
      return p?.status?.failover?.active === 'fo-b' ? p : undefined;
    });
    t.like(p2.status!.failover!.lastFailover, { from: 'fo-a', to: 'fo-b', reason: 'Handover' });
    // fo-a is not ready to come back: no standby.
    await report('fo', 'fo-a', { ready: false, message: 'router stopped', failover: 'NotReady' });
    const degraded = await eventually('Degraded NoStandbyReady', async () => {
      const p = await admin().get<SixBed4Prefix>(paths.prefix('fo'));
      return p?.status?.conditions?.find(
        (c) => c.type === 'Degraded' && c.reason === 'NoStandbyReady' && c.message.includes('NotReady'),
      );
    });
    t.is(degraded.message, 'fo-b serves the /64 and no standby is ready to take over: fo-a (NotReady: router stopped)');
    const events = await eventually('the Events', async () => {
      const l = await admin().list<{ reason: string; type: string; message: string }>(paths.events('default'), {
        fieldSelector: 'involvedObject.name=fo',
      });
      return l.items.some((e) => e.reason === 'NoStandbyReady') ? l.items : undefined;
    });
    t.true(
      events.some((e) => e.type === 'Normal' && e.reason === 'ActiveElected' && /fo-a holds the Lease/.test(e.message)),
    );
    t.true(
      events.some(
        (e) =>
          e.type === 'Normal' &&
          e.reason === 'FailedOver' &&
          /^Handover: fo-b took over from fo-a: fo-a released the Lease/.test(e.message),
      ),
    );
    t.true(events.some((e) => e.type === 'Warning' && e.reason === 'NoStandbyReady'));
  },
);
