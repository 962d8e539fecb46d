// The whole cluster path with real parts: a real kube-apiserver with the Helm
// chart installed, the operator under the chart's ServiceAccount, and the node
// agent under the agent's ServiceAccount running as a process in a namespace
// that plays the node (the reference topology's router host). A 6bed4 peer
// behind the NAT gets connectivity through the node; the node's entry appears
// in the prefix status; forwarding survives an API server outage; deleting
// the prefix reverts the host before the finalizer lets the object go.
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { controlPlaneSkipReason, startControlPlane, type ControlPlane } from '../k8s/controlplane.js';
import { agentConfigMapName, type SixBed4Prefix } from '../../kube/api.js';
import { Kube, paths } from '../../kube/client.js';
import { buildTopology, TOPO, type Topology } from '../../lab/topology.js';
import type { Proc } from '../../lab/proc.js';
import { ping6, startPeerIn } from '../../lab/sixbed4.js';
import { skipReason } from '../helpers/fixtures.js';
import { bridgeApiInto, type ApiBridge } from '../helpers/api-bridge.js';
import {
  agentArgv,
  agentToken,
  installChart,
  kubectlApply,
  NS,
  OPERATOR_SA,
  OperatorProcess,
  safely,
} from '../helpers/cluster.js';
import { eventually } from '../helpers/wait.js';
import { capture, L11, L30, seedVm } from '../host/hostlab.js';

const why = skipReason ?? controlPlaneSkipReason();
const serial = why ? test.serial.skip : test.serial;
const title = (s: string) => (why ? `${s} (skipped: ${why})` : s);
const NODE = 'edge-1';
const PREFIX_NAME = 'home';

interface State {
  cp: ControlPlane;
  admin: Kube;
  topo: Topology;
  dir: string;
  operator: OperatorProcess;
  agent: Proc;
  bridge: ApiBridge;
  agentKubeconfig: string;
  apiPort: number;
  before: unknown;
  peer: { proc: Proc; address: string };
}
const s = {} as State;

test.before(async () => {
  if (why) return;
  s.dir = await mkdtemp(join(tmpdir(), 'sixbed4-agent-'));
  s.cp = await startControlPlane();
  s.admin = new Kube(s.cp.kubeConfig(), 'sixbed4-test');
  await installChart(s.cp);
  const operatorKubeconfig = await s.cp.writeKubeconfig(await s.cp.serviceAccountToken(NS, OPERATOR_SA), 'operator');
  s.apiPort = Number(new URL(s.cp.server).port);

  s.topo = await buildTopology({ tag: 'agent' });
  await seedVm(s.topo);
  s.before = await capture(s.topo.router);
  await s.admin.create(paths.nodes, {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: NODE, labels: { 'kubernetes.io/hostname': NODE } },
    status: { addresses: [{ type: 'ExternalIP', address: TOPO.routerV4 }] },
  });
  // the agent's identity, as its DaemonSet Pod on the node has it
  s.agentKubeconfig = await s.cp.writeKubeconfig(await agentToken(s.cp, NODE), 'agent');
  s.operator = await OperatorProcess.start(operatorKubeconfig, 'op', ['--namespace', NS]);
});

test.after.always(async () => {
  // Each step on its own: one that fails must not leave the namespaces and processes after it behind.
  await safely(() => s.agent?.stop());
  await safely(() => s.bridge?.close());
  await safely(() => s.operator?.stop());
  await safely(() => s.topo?.destroy());
  await safely(() => s.cp?.stop());
  if (s.dir) await safely(() => rm(s.dir, { recursive: true, force: true }));
});

serial(
  title('kubectl apply of a prefix: the agent on its node configures the host and serves a peer behind NAT'),
  async (t) => {
    await kubectlApply(s.cp.kubeConfig(), [
      {
        apiVersion: 'sixbed4.io/v1alpha1',
        kind: 'SixBed4Prefix',
        metadata: { name: PREFIX_NAME },
        spec: {
          prefix: TOPO.prefix,
          nodeSelector: { 'kubernetes.io/hostname': NODE },
          uplink: TOPO.routerUplinkIf,
          localAddresses: [L11, L30],
        },
      } as never,
    ]);
    const cm = await eventually('the agent ConfigMap', () =>
      s.admin.get<{ data?: Record<string, string> }>(paths.configMap(NS, agentConfigMapName(PREFIX_NAME))),
    );
    t.truthy(cm.data?.[`node.${NODE}.json`], 'the node has its share');

    s.bridge = await bridgeApiInto(s.topo.router, s.apiPort, join(s.dir, 'api.sock'));
    // The node agent serves every prefix of its node; the tunnel keeps the name the other tests use.
    s.agent = s.topo.router.spawn(
      agentArgv(
        { node: NODE, kubeconfig: s.agentKubeconfig, stateDir: s.dir },
        '--tun',
        '6bed4',
        '--prefix',
        PREFIX_NAME,
        '--metrics',
        '127.0.0.1:9475',
        '--heartbeat-ms',
        '1000',
      ),
    );
    await s.agent.waitFor(/router ready/, 20_000);
    t.regex(s.agent.output(), /host configured for 2001:db8:9:10::\/64/);

    s.peer = await startPeerIn(s.topo.peers.A, ['--router', TOPO.routerV4, '--default-route']);
    for (const [from, to] of [
      [s.topo.isp, s.peer.address],
      [s.topo.peers.A, TOPO.ispV6],
      [s.topo.isp, L11],
    ] as const) {
      const r = await ping6(from, to);
      t.is(r.received, r.sent, r.output);
    }
    const addrs = await s.topo.router.json<{ addr_info: { local: string; prefixlen: number }[] }[]>([
      '-6',
      'addr',
      'show',
      'dev',
      'eth0',
    ]);
    t.true(
      addrs[0]!.addr_info.some((a) => a.local === L11 && a.prefixlen === 128),
      'server address moved to a /128',
    );
  },
);

serial(title('the node entry in the prefix status: ready, with its /64 and live peers'), async (t) => {
  const entry = await eventually(
    'a ready node entry with a live peer',
    async () => {
      const p = await s.admin.get<SixBed4Prefix>(paths.prefix(PREFIX_NAME));
      const e = p?.status?.nodes?.find((n) => n.name === NODE);
      return e?.ready && (e.livePeers ?? 0) >= 1 ? e : undefined;
    },
    20_000,
    200,
  );
  t.is(entry.prefix, TOPO.prefix);
  t.is(entry.listen, `${TOPO.routerV4}:25790`);
  t.truthy(entry.lastReport);
  const p = await s.admin.get<SixBed4Prefix>(paths.prefix(PREFIX_NAME));
  t.is(p!.status!.conditions!.find((c) => c.type === 'Ready')?.status, 'True');
});

serial(
  title("heartbeats go to the node's own Lease; the prefix is written only when the report changes"),
  async (t) => {
    type Lease = { spec: { renewTime: string; holderIdentity: string } };
    const lease = async () => (await s.admin.get<Lease>(paths.lease(NS, `sixbed4-agent-${NODE}`)))!;
    const first = await eventually('the node Lease', () =>
      s.admin.get<Lease>(paths.lease(NS, `sixbed4-agent-${NODE}`)),
    );
    t.is(first.spec.holderIdentity, NODE);
    const rv = (await s.admin.get<SixBed4Prefix>(paths.prefix(PREFIX_NAME)))!.metadata.resourceVersion;
    await eventually(
      'two more renewals',
      async () => Date.parse((await lease()).spec.renewTime) >= Date.parse(first.spec.renewTime) + 2000,
      10_000,
      200,
    );
    t.is(
      (await s.admin.get<SixBed4Prefix>(paths.prefix(PREFIX_NAME)))!.metadata.resourceVersion,
      rv,
      'no write to the prefix meanwhile',
    );
  },
);

serial(title('an API server outage does not stop forwarding'), async (t) => {
  await s.bridge.close(); // the node loses the API server
  const r = await ping6(s.topo.isp, s.peer.address, { count: 5 });
  t.is(r.received, 5, r.output);
  await s.agent.waitFor(/cannot renew the node's heartbeat Lease/, 10_000);
  s.bridge = await bridgeApiInto(s.topo.router, s.apiPort, join(s.dir, 'api.sock'));
  await s.agent.waitFor(/heartbeats reach the API server again/, 10_000);
  t.pass();
});

serial(title('deleting the prefix reverts the host exactly, then the finalizer lets it go'), async (t) => {
  await s.admin.delete(paths.prefix(PREFIX_NAME));
  await s.agent.waitFor(/host reverted/, 20_000);
  await eventually('the prefix to be gone', async () => !(await s.admin.get(paths.prefix(PREFIX_NAME))), 20_000, 200);
  const links = await s.topo.router.json<{ ifname: string }[]>(['link', 'show']);
  t.false(
    links.some((l) => l.ifname === '6bed4'),
    'the tunnel is gone',
  );
  t.deepEqual(await capture(s.topo.router), s.before, 'addresses, routes and sysctls as before the agent came');
  const r = await ping6(s.topo.isp, L11, { count: 2 });
  t.is(r.received, 2, 'the server address is reachable as a /64 again');
});
