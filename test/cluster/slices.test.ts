// /112 slices end to end with real parts: the operator (chart installed on a
// real API server) allocates a slice for an annotated pod in a labelled
// namespace; the node agent, a process in the namespace playing the node,
// finds the pod's network namespace through its cgroup (as on a kubelet node)
// and delivers the slice into it; the native Internet and a 6bed4 peer behind
// NAT reach the pod at its slice address; deleting the pod removes the veth.
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { controlPlaneSkipReason, startControlPlane, type ControlPlane } from '../k8s/controlplane.js';
import { ADDRESS_ANNOTATION, agentConfigMapName, SLICES_PATH, type KubeObject, type SixBed4Slice } from '../../kube/api.js';
import { Kube, paths } from '../../kube/client.js';
import { buildTopology, TOPO, type Topology } from '../../agent/lab/topology.js';
import { Netns, uniqueName, type Proc } from '../../agent/lab/netns.js';
import { CLI, ping6, startPeerIn } from '../../agent/lab/sixbed4.js';
import { skipReason } from '../helpers/fixtures.js';
import { bridgeApiInto, type ApiBridge } from '../helpers/api-bridge.js';
import { AGENT_SA, eventually, installChart, NS, OPERATOR_SA, OperatorProcess } from '../operator/helpers.js';
import { L11, L30, seedVm } from '../host/hostlab.js';
import { FakePodCgroup, waitInNetns } from '../slices/fakepod.js';

const why = skipReason ?? controlPlaneSkipReason() ?? (await FakePodCgroup.unavailable());
const serial = why ? test.serial.skip : test.serial;
const title = (s: string) => (why ? `${s} (skipped: ${why})` : s);
const NODE = 'edge-1';

const s = {} as {
  cp: ControlPlane; admin: Kube; topo: Topology; dir: string; operator: OperatorProcess; agent: Proc; bridge: ApiBridge;
  podNs: Netns; holder: Proc; cgroup: FakePodCgroup; address: string;
};

test.before(async () => {
  if (why) return;
  s.dir = await mkdtemp(join(tmpdir(), 'sixbed4-cslice-'));
  s.cp = await startControlPlane();
  s.admin = new Kube(s.cp.kubeConfig(), 'sixbed4-test');
  await installChart(s.cp);
  const operatorKubeconfig = await s.cp.writeKubeconfig(await s.cp.serviceAccountToken(NS, OPERATOR_SA), 'operator');
  const agentKubeconfig = await s.cp.writeKubeconfig(await s.cp.serviceAccountToken(NS, AGENT_SA), 'agent');

  s.topo = await buildTopology({ tag: 'cslice' });
  await seedVm(s.topo);
  await s.admin.create(paths.nodes, { apiVersion: 'v1', kind: 'Node', metadata: { name: NODE, labels: { 'kubernetes.io/hostname': NODE } },
    status: { addresses: [{ type: 'ExternalIP', address: TOPO.routerV4 }] } });
  s.operator = await OperatorProcess.start(operatorKubeconfig, 'op', ['--namespace', NS]);
  await s.admin.create(paths.prefixes, {
    apiVersion: 'sixbed4.io/v1alpha1', kind: 'SixBed4Prefix', metadata: { name: 'home' },
    spec: { prefix: TOPO.prefix, nodeSelector: { 'kubernetes.io/hostname': NODE }, uplink: TOPO.routerUplinkIf, localAddresses: [L11, L30], slices: { enabled: true } },
  });
  await eventually('the agent ConfigMap', () => s.admin.get<{ data?: Record<string, string> }>(paths.configMap(NS, agentConfigMapName('home'))));
  s.bridge = await bridgeApiInto(s.topo.router, Number(new URL(s.cp.server).port), join(s.dir, 'api.sock'));
  s.agent = s.topo.router.spawn([process.execPath, CLI, 'agent', '--namespace', NS, '--node', NODE, '--prefix', 'home', '--tun', '6bed4',
    '--kubeconfig', agentKubeconfig, '--state-dir', s.dir, '--log-format', 'text']);
  await s.agent.waitFor(/router ready/, 20_000);
});

test.after.always(async () => {
  // Each step on its own: one that fails must not leave the namespaces and processes after it behind.
  await safely(() => s.agent?.stop());
  await safely(() => s.bridge?.close());
  await safely(() => s.operator?.stop());
  await safely(() => s.holder?.stop('SIGKILL'));
  await safely(() => s.cgroup?.destroy());
  await safely(() => s.podNs?.destroy());
  await safely(() => s.topo?.destroy());
  await safely(() => s.cp?.stop());
  if (s.dir) await safely(() => rm(s.dir, { recursive: true, force: true }));
});

async function safely(step: () => Promise<unknown> | undefined): Promise<void> {
  try { await step(); } catch { /* teardown goes on */ }
}

serial(title('an annotated pod in a labelled namespace gets a /112 on its node, delivered into its network namespace'), async (t) => {
  await s.admin.create(paths.namespaces, { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels: { 'sixbed4.io/prefix': 'home' } } });
  await s.admin.create('/api/v1/namespaces/shop/serviceaccounts', { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'default' } });
  const pod = await s.admin.create<KubeObject>(paths.pods('shop'), {
    apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web-0', annotations: { 'sixbed4.io/slice': 'true' } },
    spec: { nodeName: NODE, automountServiceAccountToken: false, containers: [{ name: 'c', image: 'sixbed4:test' }] },
  });
  // What the kubelet and runtime would make: a network namespace and a process in the pod's cgroup.
  s.podNs = await Netns.create(uniqueName('pod'));
  s.holder = s.podNs.spawn(['sleep', 'infinity']);
  await waitInNetns(s.holder.pid!, `/run/netns/${s.podNs.name}`);
  s.cgroup = await FakePodCgroup.create('systemd', pod.metadata.uid!, s.podNs.name);
  await s.cgroup.add(s.holder.pid!);

  s.address = await eventually('the pod\'s address annotation', async () =>
    (await s.admin.get<KubeObject>(paths.pod('shop', 'web-0')))?.metadata.annotations?.[ADDRESS_ANNOTATION], 20_000, 200);
  t.regex(s.address, /^2001:db8:9:10:[0-9a-f]+:[0-9a-f]+:0:1$/, 'a port-0 address in the node\'s /64');
  const slice = await eventually('the slice delivered', async () => {
    const l = await s.admin.list<SixBed4Slice>(SLICES_PATH);
    return l.items.find((x) => x.spec.pod.uid === pod.metadata.uid && x.status?.delivered);
  }, 20_000, 200);
  t.is(slice.spec.address, s.address);
  const inPod = await s.podNs.json<{ ifname: string; addr_info: { local: string }[] }[]>(['-6', 'addr', 'show', 'dev', 'eth6']);
  t.true(inPod[0]!.addr_info.some((a) => a.local === s.address), 'the address is on eth6 in the pod');
});

serial(title('the native Internet and a 6bed4 peer behind NAT reach the pod at its slice address'), async (t) => {
  const fromIsp = await ping6(s.topo.isp, s.address);
  t.is(fromIsp.received, fromIsp.sent, fromIsp.output);
  const peer = await startPeerIn(s.topo.peers.A, ['--router', TOPO.routerV4, '--default-route']);
  t.truthy(peer.address);
  const fromPeer = await ping6(s.topo.peers.A, s.address);
  t.is(fromPeer.received, fromPeer.sent, fromPeer.output);
});

serial(title('deleting the pod releases its slice: the veth and the route leave the node'), async (t) => {
  // No kubelet here to finish a graceful deletion of a bound pod: delete it at once, as the kubelet would in the end.
  await s.admin.delete(paths.pod('shop', 'web-0'), { gracePeriodSeconds: 0 });
  await eventually('the slice object gone', async () => (await s.admin.list<SixBed4Slice>(SLICES_PATH)).items.length === 0, 20_000, 200);
  await eventually('no s4 link left on the node', async () =>
    !(await s.topo.router.json<{ ifname: string }[]>(['link', 'show'])).some((l) => l.ifname.startsWith('s4')), 20_000, 200);
  const routes = await s.topo.router.json<{ dst: string }[]>(['-6', 'route', 'show']);
  t.false(routes.some((r) => r.dst.endsWith('/112')), 'no /112 route left');
});
