// A cloud-style node: its ExternalIP (203.0.113.77) is a 1:1 NAT in front of its InternalIP (the router host's
// 198.51.100.1), not an address on the node. The lab's NAT namespace plays the cloud's NAT. The operator gives the
// node's share the InternalIP to bind; the agent (a process in the node's namespace, as the chart's agent
// ServiceAccount) finds the ExternalIP is not its own, binds the InternalIP, says so in its status entry, and a peer
// behind the NAT that knows only the ExternalIP gets its address and pings the ISP. A node whose only address cannot
// be bound makes the prefix Degraded, naming node and address. spec.fastPath reaches the node's router (the real
// BPF program on the uplink: needs the built dist/agent/bpf/from-peers.bpf.o and to-peers.bpf.o and Linux 6.6+), and a Required one that
// cannot load is the node's FastPathUnavailable.
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { controlPlaneSkipReason, startControlPlane, type ControlPlane } from '../k8s/controlplane.js';
import type { SixBed4Prefix } from '../../kube/api.js';
import { Kube, paths } from '../../kube/client.js';
import { buildTopology, TOPO, type Topology } from '../../lab/topology.js';
import { systemTool } from '../../agent/host/tools.js';
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
} from '../helpers/cluster.js';
import { eventually } from '../helpers/wait.js';

const why = skipReason ?? controlPlaneSkipReason();
const serial = why ? test.serial.skip : test.serial;
const title = (s: string) => (why ? `${s} (skipped: ${why})` : s);
const NODE = 'cloud-1';
const PUBLIC = '203.0.113.77';

const s = {} as {
  cp: ControlPlane;
  admin: Kube;
  topo: Topology;
  dir: string;
  operator: OperatorProcess;
  agent: Proc;
  bridge: ApiBridge;
  peer?: Proc;
};

test.before(async () => {
  if (why) return;
  s.dir = await mkdtemp(join(tmpdir(), 'sixbed4-cloud-'));
  s.cp = await startControlPlane();
  s.admin = new Kube(s.cp.kubeConfig(), 'sixbed4-test');
  await installChart(s.cp);
  const operatorKubeconfig = await s.cp.writeKubeconfig(await s.cp.serviceAccountToken(NS, OPERATOR_SA), 'operator');
  s.topo = await buildTopology({ tag: 'cloud' });
  await s.topo.nat.run([systemTool('nft'), '-f', '-'], {
    input: `table ip sixbed4_cloud {\n  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    ip daddr ${PUBLIC} udp dport 25790 dnat to ${TOPO.routerV4}\n  }\n}\n`,
  });
  await s.admin.create(paths.nodes, {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: NODE, labels: { 'kubernetes.io/hostname': NODE } },
    status: {
      addresses: [
        { type: 'InternalIP', address: TOPO.routerV4 },
        { type: 'ExternalIP', address: PUBLIC },
      ],
    },
  });
  const agentKubeconfig = await s.cp.writeKubeconfig(await agentToken(s.cp, NODE), 'agent');
  s.operator = await OperatorProcess.start(operatorKubeconfig, 'op', ['--namespace', NS]);
  s.bridge = await bridgeApiInto(s.topo.router, Number(new URL(s.cp.server).port), join(s.dir, 'api.sock'));
  s.agent = s.topo.router.spawn(
    agentArgv(
      { node: NODE, kubeconfig: agentKubeconfig, stateDir: s.dir },
      '--heartbeat-ms',
      '1000',
      '--poll-ms',
      '1000',
    ),
  );
});

test.after.always(async () => {
  for (const step of [
    () => s.peer?.stop(),
    () => s.agent?.stop(),
    () => s.bridge?.close(),
    () => s.operator?.stop(),
    () => s.topo?.destroy(),
    () => s.cp?.stop(),
  ]) {
    try {
      await step();
    } catch {
      /* teardown goes on */
    }
  }
  if (s.dir) await rm(s.dir, { recursive: true, force: true });
});

serial(
  title(
    'the ExternalIP is not on the node: the agent binds the InternalIP, says so, and a peer reaching the ExternalIP is served',
  ),
  async (t) => {
    await kubectlApply(s.cp.kubeConfig(), [
      {
        apiVersion: 'sixbed4.io/v1alpha1',
        kind: 'SixBed4Prefix',
        metadata: { name: 'cloud' },
        spec: { prefix: TOPO.prefix, nodeSelector: { 'kubernetes.io/hostname': NODE } },
      } as never,
    ]);
    const entry = await eventually(
      'a ready entry',
      async () => {
        const e = (await s.admin.get<SixBed4Prefix>(paths.prefix('cloud')))?.status?.nodes?.find(
          (n) => n.name === NODE,
        );
        return e?.ready ? e : undefined;
      },
      30_000,
      200,
    );
    t.is(entry.listen, `${PUBLIC}:25790`, 'peers are told the ExternalIP');
    t.is(
      entry.message,
      `forwarding; listening on ${TOPO.routerV4} (the InternalIP) for ${PUBLIC}, which is not an address of this node (1:1 NAT)`,
    );
    const peer = await startPeerIn(s.topo.peers.A, ['--router', PUBLIC, '--default-route']);
    s.peer = peer.proc;
    for (const [from, to] of [
      [s.topo.peers.A, TOPO.ispV6],
      [s.topo.isp, peer.address],
    ] as const) {
      const r = await ping6(from, to, { count: 3 });
      t.is(r.received, 3, r.output);
    }
  },
);

serial(
  title(
    'an address the node cannot bind: the prefix is Degraded with ListenAddressUnavailable, naming node and address',
  ),
  async (t) => {
    await s.admin.mergePatch(paths.prefix('cloud'), { spec: { listen: { address: '192.0.2.99' } } });
    const p = await eventually(
      'Degraded: ListenAddressUnavailable',
      async () => {
        const x = await s.admin.get<SixBed4Prefix>(paths.prefix('cloud'));
        return x?.status?.conditions?.some((c) => c.type === 'Degraded' && c.reason === 'ListenAddressUnavailable')
          ? x
          : undefined;
      },
      30_000,
      200,
    );
    const degraded = p.status!.conditions!.find((c) => c.type === 'Degraded')!;
    t.regex(
      degraded.message,
      /^node cloud-1 cannot serve on 192\.0\.2\.99:25790: 192\.0\.2\.99 is not an address of this host/,
    );
    t.like(
      p.status!.nodes!.find((n) => n.name === NODE),
      { ready: false, reason: 'ListenAddressUnavailable' },
    );
    // Fixed: back to the node's own addresses, and the Degraded reason goes.
    await s.admin.jsonPatch(paths.prefix('cloud'), [{ op: 'remove', path: '/spec/listen' }]);
    await eventually(
      'Degraded False again',
      async () => {
        const x = await s.admin.get<SixBed4Prefix>(paths.prefix('cloud'));
        return (
          x?.status?.conditions?.some((c) => c.type === 'Degraded' && c.status === 'False') &&
          x.status.nodes?.[0]?.ready
        );
      },
      30_000,
      200,
    );
  },
);

serial(
  title(
    'listen.advertise behind a DNAT: the node binds as before, peers are told the advertised address and are served there',
  ),
  async (t) => {
    const ADVERTISED = '203.0.113.78';
    await s.topo.nat.run([systemTool('nft'), '-f', '-'], {
      input: `table ip sixbed4_advertise {\n  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    ip daddr ${ADVERTISED} udp dport 4000 dnat to ${TOPO.routerV4}:25790\n  }\n}\n`,
    });
    // The API server's own check (CEL) refuses what is not IPV4[:PORT].
    await t.throwsAsync(
      s.admin.mergePatch(paths.prefix('cloud'), { spec: { listen: { advertise: 'router.example:4000' } } }),
      { message: /listen.advertise router\.example:4000 is not IPV4\[:PORT\]/ },
    );
    await s.admin.mergePatch(paths.prefix('cloud'), { spec: { listen: { advertise: `${ADVERTISED}:4000` } } });
    const entry = await eventually(
      'a ready entry with the advertised address',
      async () => {
        const e = (await s.admin.get<SixBed4Prefix>(paths.prefix('cloud')))?.status?.nodes?.find(
          (n) => n.name === NODE,
        );
        return e?.ready && e.listen === `${ADVERTISED}:4000` && /listen\.advertise/.test(e.message ?? '')
          ? e
          : undefined;
      },
      30_000,
      200,
    );
    t.is(
      entry.message,
      `forwarding; listening on ${TOPO.routerV4}:25790 (the InternalIP) for ${ADVERTISED}:4000 (listen.advertise, forwarded by a DNAT)`,
    );
    await s.peer?.stop();
    const peer = await startPeerIn(s.topo.peers.B, ['--router', `${ADVERTISED}:4000`, '--default-route']);
    s.peer = peer.proc;
    for (const [from, to] of [
      [s.topo.peers.B, TOPO.ispV6],
      [s.topo.isp, peer.address],
    ] as const) {
      const r = await ping6(from, to, { count: 3 });
      t.is(r.received, 3, r.output);
    }
  },
);

serial(
  title(
    "spec.fastPath reaches the node's router: Required runs it on the uplink (also beside ndpProxy) and the peer is served; Auto where it cannot load runs without it and the entry says so",
  ),
  async (t) => {
    // The share changes, so the agent restarts its router, now with --fast-path on (this agent runs as root: CAP_BPF).
    const mark = s.agent.output().length;
    await s.admin.mergePatch(paths.prefix('cloud'), { spec: { fastPath: 'Required' } });
    t.teardown(() => {
      if (!t.passed) t.log(s.agent.output().slice(mark).split('\n').slice(-40).join('\n'));
    });
    await eventually(
      'the router with the fast path',
      async () => /fast path on: .*wan0/.test(s.agent.output().slice(mark)) || undefined,
      30_000,
      200,
    );
    const entry = await eventually(
      'a ready entry',
      async () => {
        const e = (await s.admin.get<SixBed4Prefix>(paths.prefix('cloud')))?.status?.nodes?.find(
          (n) => n.name === NODE,
        );
        return e?.ready ? e : undefined;
      },
      30_000,
      200,
    );
    t.regex(entry.message!, /^forwarding; listening on /);
    t.regex(s.agent.output().slice(mark), /router ready.*fastPath="?on \(wan0 ingress\)/);
    const r = await ping6(s.topo.peers.B, TOPO.ispV6, { count: 3 });
    t.is(r.received, 3, r.output);

    // Required with the neighbour proxy: both run (the router hands the proxy the peers the fast path forwarded for).
    const mark1 = s.agent.output().length;
    await s.admin.mergePatch(paths.prefix('cloud'), { spec: { ndpProxy: 'Always' } });
    await eventually(
      'the router with the fast path and the proxy',
      async () => /router ready.*fastPath="?on \(wan0 ingress\)/.test(s.agent.output().slice(mark1)) || undefined,
      30_000,
      200,
    );
    const r2 = await ping6(s.topo.peers.B, TOPO.ispV6, { count: 3 });
    t.is(r2.received, 3, r2.output);

    // Auto where the program cannot go (the listen address on lo, not an Ethernet uplink): served without it, and the
    // node's entry says so; not Degraded.
    await s.topo.router.run(['ip', 'addr', 'add', '192.0.2.50/32', 'dev', 'lo']);
    const mark2 = s.agent.output().length;
    await s.admin.mergePatch(paths.prefix('cloud'), {
      spec: { fastPath: 'Auto', ndpProxy: 'Disabled', listen: { address: '192.0.2.50', advertise: null } },
    });
    const without = await eventually(
      'an entry that says it runs without',
      async () => {
        const e = (await s.admin.get<SixBed4Prefix>(paths.prefix('cloud')))?.status?.nodes?.find(
          (n) => n.name === NODE,
        );
        return e?.ready && /without the fast path/.test(e.message ?? '') ? e : undefined;
      },
      30_000,
      200,
    );
    t.regex(
      without.message!,
      /; without the fast path \(fastPath Auto: it did not load here, the agent's log says why\)$/,
    );
    t.regex(
      s.agent.output().slice(mark2),
      /fast path unavailable, every packet takes the TypeScript path: 192\.0\.2\.50 is on lo/,
    );
    t.false(
      (await s.admin.get<SixBed4Prefix>(paths.prefix('cloud')))!.status!.conditions!.some(
        (c) => c.type === 'Degraded' && c.status === 'True',
      ),
      'Auto is not Degraded',
    );

    // Required there: the node does not serve, its entry and the Degraded condition say why, with a Warning Event.
    await s.admin.mergePatch(paths.prefix('cloud'), { spec: { fastPath: 'Required' } });
    const p = await eventually(
      'Degraded: FastPathUnavailable',
      async () => {
        const x = await s.admin.get<SixBed4Prefix>(paths.prefix('cloud'));
        return x?.status?.conditions?.some((c) => c.type === 'Degraded' && c.reason === 'FastPathUnavailable')
          ? x
          : undefined;
      },
      30_000,
      200,
    );
    t.like(
      p.status!.nodes!.find((n) => n.name === NODE),
      { ready: false, reason: 'FastPathUnavailable' },
    );
    t.regex(
      p.status!.conditions!.find((c) => c.type === 'Degraded')!.message,
      /^node cloud-1 cannot serve on 192\.0\.2\.50:25790: spec\.fastPath Required: 192\.0\.2\.50 is on lo, a loopback interface: the fast path handles Ethernet uplinks only$/,
    );
    await eventually(
      'a Warning Event',
      async () => {
        const evs = await s.admin.get<{ items: { type: string; reason: string; involvedObject: { name: string } }[] }>(
          '/api/v1/events',
        );
        return (
          evs?.items.some(
            (e) => e.type === 'Warning' && e.reason === 'FastPathUnavailable' && e.involvedObject.name === 'cloud',
          ) || undefined
        );
      },
      15_000,
      200,
    );
    // Disabled again: served without it.
    await s.admin.mergePatch(paths.prefix('cloud'), { spec: { fastPath: 'Disabled' } });
    await eventually(
      'ready again',
      async () => (await s.admin.get<SixBed4Prefix>(paths.prefix('cloud')))?.status?.nodes?.[0]?.ready || undefined,
      30_000,
      200,
    );
  },
);
