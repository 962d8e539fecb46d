// The product as a user meets it, on real nodes: kube-apiserver, etcd, kube-controller-manager and kube-scheduler,
// two nodes each running containerd + runc + the CNI reference plugins + kubelet (built from the Go module proxy,
// test/k8s/build-node.sh) in a network namespace of the lab topology (test/k8s/nodelab.ts). `helm install` of the
// chart starts the operator as a Pod; a SixBed4Prefix applied as kubectl does makes the kubelets run the agent Pods
// (hostNetwork: the node namespaces are their host network); 6bed4 peers behind a NAT reach the ISP, and each other,
// through the agents' routers; spec.fastPath Required is refused for want of CAP_BPF, then runs in the Pods once the
// chart grants it (agent.fastPath); deleting the prefix leaves each node's network as it was.
//
// Needs root, the control-plane and node binaries and a Docker Engine (the images are built locally); skips with
// the reason otherwise (under CI a missing piece is a failure: CI is root and runs everything).
import test from 'ava';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Proc } from '../../lab/proc.js';
import { ping6, scrape, startPeerIn } from '../../lab/sixbed4.js';
import { TOPO } from '../../lab/topology.js';
import { Kube, paths } from '../../kube/client.js';
import { tunnelName, type KubeObject, type SixBed4Prefix } from '../../kube/api.js';
import { startControlPlane, type ControlPlane } from './controlplane.js';
import {
  KubeNode,
  NODE_API_SERVER_ARGS,
  NODE_AUTHORIZATION_MODE,
  NODE_CONTROLLERS,
  nodeSkipReason,
  nodeUsers,
} from './node.js';
import { buildNodeImages, retagImage, type NodeImages } from './images.js';
import { releaseDocker } from '../helpers/docker.js';
import { lossOf, pingEvery20ms } from '../host/hostlab.js';
import { API_SERVICE_IP, buildNodeLab, SERVICE_RANGE, type LabNode, type NodeLab } from './nodelab.js';
import { hostNetwork } from '../helpers/netstate.js';
import { readSession, runSession } from '../helpers/doc-session.js';
import { eventually } from '../helpers/wait.js';
import { helmFor, NS, RELEASE, REPO, safely } from '../helpers/cluster.js';

const run = promisify(execFile);
const isCI = process.env.CI === 'true' || process.env.CI === '1';
const why = process.env.SIXBED4_SKIP_DOCKER === '1' ? 'SIXBED4_SKIP_DOCKER=1' : nodeSkipReason();
if (why && isCI && process.getuid?.() === 0) throw new Error(`real-node tests cannot run under CI: ${why}`);
const serial = why ? test.serial.skip : test.serial;
const title = (s: string) => (why ? `${s} (skipped: ${why})` : s);

// Named as in docs/kubernetes.md, whose terminal sessions these tests run word for word.
const NODES = ['edge-1', 'edge-2'];
const DOC = join(REPO, 'docs', 'kubernetes.md');
const PREFIX = '2001:db8:9:10::/63';
const PREFIX_NAME = 'edge';
const TAG = 'node-test';
/** The pod network's interfaces on a node (the CNI bridge and the pods' veths) are the CNI's, not sixbed4's. */
const nodeOwned = (ifname: string) => !ifname.startsWith('veth') && ifname !== 'cni0';

interface State {
  dir: string;
  images: NodeImages;
  lab: NodeLab;
  cp: ControlPlane;
  admin: Kube;
  nodes: KubeNode[];
  before: Map<string, Record<string, string[]>>;
  peers: Proc[];
  peerAddress: Map<string, string>;
}
const s = { nodes: [], peers: [], before: new Map(), peerAddress: new Map() } as unknown as State;

/** The docs' sessions run as a user's shell would: the real kubectl on PATH, the admin's kubeconfig, in the repository. */
const docEnv = () => ({
  cwd: REPO,
  env: { ...process.env, PATH: `${s.cp.binDir}:${process.env.PATH ?? ''}`, KUBECONFIG: s.cp.kubeconfigPath },
});

const helm = (args: string[]): Promise<string> => helmFor(s.cp, s.dir)(args);

interface Pod extends KubeObject {
  spec: { nodeName?: string };
  status?: { phase?: string; podIP?: string; conditions?: { type: string; status: string }[] };
}
const podReady = (p: Pod) =>
  p.status?.phase === 'Running' && (p.status.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
const pods = async (selector: string) =>
  (await s.admin.get<{ items: Pod[] }>(`/api/v1/namespaces/${NS}/pods?labelSelector=${encodeURIComponent(selector)}`))
    ?.items ?? [];
const labNode = (name: string): LabNode => s.lab.nodes.find((n) => n.name === name)!;

/** On failure, what a person would look at first. */
async function dump(): Promise<string> {
  const out: string[] = [];
  for (const n of s.nodes) out.push(await n.logs(15), await n.podLogs('agent', 25));
  try {
    const r = await run(join(s.cp.binDir, 'kubectl'), [
      '--kubeconfig',
      s.cp.kubeconfigPath,
      'get',
      'pods,ds,deploy,sixbed4prefixes',
      '-A',
      '-o',
      'wide',
    ]);
    out.push(r.stdout);
  } catch {
    /* best effort */
  }
  return out.join('\n');
}

test.before(async () => {
  if (why) return;
  s.dir = await mkdtemp(join(tmpdir(), 'sixbed4-node-'));
  s.images = await buildNodeImages(TAG, s.dir);
  s.lab = await buildNodeLab('rn', NODES);
  s.cp = await startControlPlane({
    controllerManager: true,
    controllers: NODE_CONTROLLERS,
    scheduler: true,
    serviceClusterIpRange: SERVICE_RANGE,
    users: nodeUsers(NODES),
    authorizationMode: NODE_AUTHORIZATION_MODE,
    apiServerArgs: NODE_API_SERVER_ARGS,
  });
  s.admin = new Kube(s.cp.kubeConfig(), 'sixbed4-test');
  for (const n of s.lab.nodes) {
    s.nodes.push(
      await KubeNode.start({
        name: n.name,
        ns: n.ns,
        nodeIp: n.v4,
        podCidr: n.podCidr,
        cp: s.cp,
        apiServiceIp: API_SERVICE_IP,
        imageArchive: s.images.archive,
        sandboxImage: s.images.sandbox,
        dir: s.dir,
      }),
    );
  }
  await mkdir(join(s.dir, 'agent-state'));
});

test.after.always(async () => {
  if (why) return;
  for (const p of s.peers) await safely(() => p.stop());
  // The kubelets tear pods down the normal way (CNI DEL) before the nodes go.
  await safely(() => s.admin.delete(paths.prefix(PREFIX_NAME)));
  await safely(() => helm(['uninstall', RELEASE, '--namespace', NS, '--wait', '--timeout', '60s']));
  await safely(() =>
    eventually('every pod gone', async () => (await pods('app.kubernetes.io/name=sixbed4')).length === 0, 60_000, 500),
  );
  for (const n of s.nodes) await safely(() => n.stop());
  await safely(() => s.cp?.stop());
  await safely(() => s.lab?.destroy());
  if (s.dir) await safely(() => rm(s.dir, { recursive: true, force: true }));
  if (s.images) await safely(() => releaseDocker());
});

serial(
  title(
    'helm install: the operator runs as a Pod on a node, takes the Lease, and answers /healthz and metrics through the Pod',
  ),
  async (t) => {
    await helm([
      'install',
      RELEASE,
      join(REPO, 'charts', 'sixbed4'),
      '--namespace',
      NS,
      '--create-namespace',
      '--set',
      `image.repository=${s.images.repository}`,
      '--set',
      `image.tag=${s.images.tag}`,
      '--set',
      'image.pullPolicy=Never',
      '--set',
      `agent.stateDir=${join(s.dir, 'agent-state')}`,
      '--set',
      'logFormat=json',
    ]);
    const op = await eventually(
      'the operator Pod Running and Ready',
      async () => (await pods('app.kubernetes.io/component=operator')).find(podReady),
      180_000,
      500,
    ).catch(async (e: Error) => {
      throw new Error(`${e.message}\n${await dump()}`);
    });
    t.truthy(op.spec.nodeName && NODES.includes(op.spec.nodeName), `scheduled on a node (${op.spec.nodeName})`);
    const lease = await eventually(
      'the Lease held by the operator Pod',
      async () => {
        const l = await s.admin.get<{ spec?: { holderIdentity?: string } }>(
          `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases/sixbed4-operator`,
        );
        return l?.spec?.holderIdentity ? l : undefined;
      },
      60_000,
      500,
    );
    t.regex(lease.spec!.holderIdentity!, new RegExp(op.metadata.name!), 'the Pod holds it');
    // Through the Pod's own address, from its node (as Prometheus would scrape it).
    const node = labNode(op.spec.nodeName!);
    const health = await node.ns.run([
      process.execPath,
      '-e',
      `fetch('http://${op.status!.podIP}:9464/healthz').then(r => console.log(r.status))`,
    ]);
    t.is(health.trim(), '200');
    const metrics = await scrape(node.ns, `${op.status!.podIP}:9464`);
    t.true(
      [...metrics.keys()].some((k) => k.startsWith('sixbed4_operator_')),
      'operator metrics served',
    );
    // Each node's network now, with the operator's pod network in place: what deleting the prefix must return to.
    for (const n of s.lab.nodes) s.before.set(n.name, await hostNetwork(n.ns, nodeOwned));
  },
);

serial(
  title(
    "the docs' kubectl session (label, apply a /63, wait, get, describe): an agent Pod Running and Ready on each node, status Ready from the real agents, the rollout followed",
  ),
  async (t) => {
    // Runs beside the observation below: kubectl waits for Ready while the test watches Progressing go by.
    const session = runSession(readSession(DOC, 'prefix'), docEnv()).then(
      () => null,
      (e: Error) => e,
    );
    // Progressing follows the real rollout: True while the DaemonSet's pods start.
    const seen = new Set<string>();
    const ready = await eventually(
      'agents Ready on both nodes and the prefix Ready',
      async () => {
        const p = await s.admin.get<SixBed4Prefix>(paths.prefix(PREFIX_NAME));
        const prog = p?.status?.conditions?.find((c) => c.type === 'Progressing');
        if (prog) seen.add(`${prog.status}/${prog.reason}`);
        const agents = (await pods('app.kubernetes.io/component=agent')).filter(podReady);
        const isReady = p?.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
        return p && agents.length === 2 && isReady && prog?.reason === 'RolledOut' ? { p, agents } : undefined;
      },
      240_000,
      300,
    ).catch(async (e: Error) => {
      throw new Error(`${e.message}\n${(await session)?.message ?? ''}\n${await dump()}`);
    });
    const failed = await session;
    if (failed) throw new Error(`docs/kubernetes.md, session "prefix":\n${failed.message}\n${await dump()}`);
    t.deepEqual(ready.agents.map((a) => a.spec.nodeName).sort(), NODES, 'one agent Pod per node');
    t.is(ready.p.spec.prefix, PREFIX, 'the /63 the docs apply');
    t.is(ready.p.status!.nodesReady, '2/2');
    const entries = ready.p.status!.nodes!;
    t.deepEqual(
      entries.map((e) => e.prefix).sort(),
      ['2001:db8:9:10::/64', '2001:db8:9:11::/64'],
      'the /63 split in two /64s',
    );
    for (const e of entries) {
      t.is(e.listen, `${labNode(e.name).v4}:25790`, `${e.name} listens on its InternalIP`);
      await s.lab.routeAtIsp(e.prefix!, labNode(e.name));
    }
  },
);

serial(
  title("the docs' kubectl session on the API itself: explain, and a wrong object refused with its message"),
  async (t) => {
    const runs = await runSession(readSession(DOC, 'api'), docEnv());
    t.is(runs.at(-1)!.code, 1, 'the wrong object is refused');
    t.falsy(await s.admin.get(paths.prefix('oops')), 'and not stored');
  },
);

serial(
  title(
    "peers behind the NAT reach the ISP, and the ISP them, through each node's agent; and each other across the nodes",
  ),
  async (t) => {
    const p = (await s.admin.get<SixBed4Prefix>(paths.prefix(PREFIX_NAME)))!;
    const [a, b] = NODES.map((n) => labNode(n));
    const peerA = await startPeerIn(s.lab.peers.A, ['--router', a!.v4, '--default-route']);
    const peerB = await startPeerIn(s.lab.peers.B, ['--router', b!.v4, '--default-route']);
    s.peers.push(peerA.proc, peerB.proc);
    s.peerAddress.set(a!.name, peerA.address).set(b!.name, peerB.address);
    const inPrefixOf = (addr: string, node: string) =>
      addr.startsWith(p.status!.nodes!.find((e) => e.name === node)!.prefix!.replace(/::\/64$/, ':'));
    t.true(inPrefixOf(peerA.address, a!.name), `peer A (${peerA.address}) got an address of ${a!.name}'s /64`);
    t.true(inPrefixOf(peerB.address, b!.name), `peer B (${peerB.address}) got an address of ${b!.name}'s /64`);
    for (const [from, to, what] of [
      [s.lab.peers.A, TOPO.ispV6, 'A -> ISP'],
      [s.lab.isp, peerA.address, 'ISP -> A'],
      [s.lab.peers.B, TOPO.ispV6, 'B -> ISP'],
      [s.lab.isp, peerB.address, 'ISP -> B'],
      [s.lab.peers.A, peerB.address, 'A -> B'],
      [s.lab.peers.B, peerA.address, 'B -> A'],
    ] as const) {
      const r = await ping6(from, to, { count: 3 });
      t.is(r.received, 3, `${what}: ${r.output}${r.received === 3 ? '' : `\n${await dump()}`}`);
    }
  },
);

serial(
  title(
    'helm upgrade to a new image tag: each agent Pod is replaced make-before-break and hands its tunnel over; the forwarding gap is measured',
  ),
  async (t) => {
    const TAG2 = `${TAG}-2`;
    const archive = await retagImage(TAG, TAG2, s.dir);
    for (const n of s.nodes) await n.importImage(archive);
    const tunIndex = async (n: LabNode) =>
      (await n.ns.json<{ ifindex: number }[]>(['link', 'show', 'dev', tunnelName(PREFIX_NAME)]))[0]?.ifindex;
    const before = new Map<string, number | undefined>();
    for (const n of s.lab.nodes) before.set(n.name, await tunIndex(n));
    const oldAgents = new Set((await pods('app.kubernetes.io/component=agent')).map((p) => p.metadata.name!));
    // From the ISP to the peer behind each node, every 20 ms, through the whole rollout.
    const pingers = NODES.map((n) => ({ node: n, proc: pingEvery20ms(s.lab.isp, s.peerAddress.get(n)!, 15_000) }));
    const t0 = Date.now();
    await helm([
      'upgrade',
      RELEASE,
      join(REPO, 'charts', 'sixbed4'),
      '--namespace',
      NS,
      '--reuse-values',
      '--set',
      `image.tag=${TAG2}`,
    ]);
    const seen = new Set<string>();
    await eventually(
      'every agent Pod replaced by a Ready one of the new image, and the prefix rolled out',
      async () => {
        const agents = await pods('app.kubernetes.io/component=agent');
        const p = await s.admin.get<SixBed4Prefix>(paths.prefix(PREFIX_NAME));
        const prog = p?.status?.conditions?.find((c) => c.type === 'Progressing');
        if (prog) seen.add(`${prog.status}/${prog.reason}`);
        const rolledOut = prog?.reason === 'RolledOut' && seen.has('True/RollingOut');
        return (
          agents.length === 2 &&
          agents.every(
            (a) =>
              !oldAgents.has(a.metadata.name!) &&
              podReady(a) &&
              (a.spec as { containers?: { image: string }[] }).containers?.[0]?.image === `sixbed4:${TAG2}`,
          ) &&
          rolledOut
        );
      },
      240_000,
      500,
    ).catch(async (e: Error) => {
      throw new Error(`${e.message}\n${await dump()}`);
    });
    const rolloutMs = Date.now() - t0;
    t.true(seen.has('True/RollingOut'), `Progressing followed the real rollout (seen: ${[...seen].join(', ')})`);
    await new Promise((r) => setTimeout(r, 1000));
    for (const p of pingers) p.proc.child.kill('SIGINT');
    for (const { node, proc } of pingers) {
      const r = await lossOf(proc);
      t.log(
        `rollout ${Math.round(rolloutMs / 1000)} s: ISP -> peer on ${node}: ${r.sent - r.received} of ${r.sent} pings lost (about ${(r.sent - r.received) * 20} ms of forwarding gap)`,
      );
      t.true(r.received > 0, r.output);
    }
    for (const n of s.lab.nodes) {
      t.truthy(before.get(n.name), `${n.name} had its tunnel`);
      t.is(
        (await tunIndex(n)) ?? -1,
        before.get(n.name) ?? 0,
        `${n.name}: the tunnel interface was handed over, never removed`,
      );
    }
    // Stateless: the peers keep their addresses, and both directions work on the new agents.
    for (const n of NODES) {
      const r = await ping6(s.lab.isp, s.peerAddress.get(n)!, { count: 3 });
      t.is(r.received, 3, r.output);
    }
  },
);

serial(
  title(
    'a node reboot (kubelet, containerd and every container killed, then started again): the agent comes back, peers keep their addresses, nothing is duplicated',
  ),
  async (t) => {
    const name = NODES[1]!;
    const node = s.nodes.find((n) => n.name === name)!;
    const peerAddr = s.peerAddress.get(name)!;
    await node.crash();
    const down = await ping6(s.lab.isp, peerAddr, { count: 2 });
    t.is(down.received, 0, 'forwarding stopped with the node (the tunnel went with its process)');
    await node.boot();
    await eventually(
      `a Ready agent Pod on ${name} again`,
      async () =>
        (await pods('app.kubernetes.io/component=agent')).some((p) => p.spec.nodeName === name && podReady(p)),
      180_000,
      500,
    ).catch(async (e: Error) => {
      throw new Error(`${e.message}\n${await dump()}`);
    });
    // Stateless: the router derives the same addresses, so the peer's keepalives simply get through again.
    const peerNs = name === NODES[0] ? s.lab.peers.A : s.lab.peers.B;
    const peerProc = s.peers[NODES.indexOf(name)]!;
    await eventually(
      `the ISP reaching the peer on ${name} at its old address`,
      async () => (await ping6(s.lab.isp, peerAddr, { count: 1 })).received === 1,
      120_000,
      500,
    ).catch(async (e: Error) => {
      const look = async (ns: typeof peerNs, argv: string[]) => (await ns.exec(argv, { timeoutMs: 10_000 })).stdout;
      throw new Error(
        [
          e.message,
          await dump(),
          `--- peer on ${name} (${peerProc.running ? 'running' : JSON.stringify(peerProc.exitStatus)}):\n${peerProc.output().split('\n').slice(-25).join('\n')}`,
          `--- peer addresses:\n${await look(peerNs, ['ip', '-6', 'addr', 'show'])}`,
          `--- NAT conntrack:\n${await look(s.lab.nat, ['conntrack', '-L', '-p', 'udp'])}`,
          `--- ${name} UDP sockets, links and IPv6 routes:\n${await look(labNode(name).ns, ['ss', '-uanp'])}${await look(labNode(name).ns, ['ip', '-br', 'link'])}${await look(labNode(name).ns, ['ip', '-6', 'route'])}`,
        ].join('\n'),
      );
    });
    const peerAddrs = await peerNs.json<{ addr_info?: { local: string }[] }[]>(['-6', 'addr', 'show']);
    t.true(
      peerAddrs.some((l) => (l.addr_info ?? []).some((a) => a.local === peerAddr)),
      'the peer kept its address',
    );
    // Nothing duplicated: one agent per node, one status entry per node, two Nodes.
    const agents = await pods('app.kubernetes.io/component=agent');
    t.deepEqual(agents.map((a) => a.spec.nodeName).sort(), NODES);
    const p = await eventually(
      'the prefix Ready again',
      async () => {
        const x = await s.admin.get<SixBed4Prefix>(paths.prefix(PREFIX_NAME));
        return x?.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ? x : undefined;
      },
      120_000,
      500,
    );
    t.deepEqual(p.status!.nodes!.map((e) => e.name).sort(), NODES);
    const nodes = await s.admin.get<{ items: KubeObject[] }>('/api/v1/nodes');
    t.deepEqual(nodes!.items.map((n) => n.metadata.name).sort(), NODES);
  },
);

serial(
  title(
    "spec.fastPath Required: agents without CAP_BPF (agent.fastPath=false) do not serve and say why; with agent.fastPath=true (the chart's default) the routers in the Pods run the program and peers are served",
  ),
  async (t) => {
    const caps = (a: Pod) =>
      (a.spec as { containers?: { securityContext?: { capabilities?: { add?: string[] } } }[] }).containers?.[0]
        ?.securityContext?.capabilities?.add ?? [];
    const withBpf = new Set((await pods('app.kubernetes.io/component=agent')).map((p) => p.metadata.name!));
    await helm([
      'upgrade',
      RELEASE,
      join(REPO, 'charts', 'sixbed4'),
      '--namespace',
      NS,
      '--reuse-values',
      '--set',
      'agent.fastPath=false',
    ]);
    await eventually(
      'new agent Pods without BPF, Ready',
      async () => {
        const agents = await pods('app.kubernetes.io/component=agent');
        return (
          (agents.length === 2 &&
            agents.every((a) => !withBpf.has(a.metadata.name!) && podReady(a) && !caps(a).includes('BPF'))) ||
          undefined
        );
      },
      240_000,
      500,
    ).catch(async (e: Error) => {
      throw new Error(`${e.message}\n${await dump()}`);
    });
    await s.admin.mergePatch(paths.prefix(PREFIX_NAME), { spec: { fastPath: 'Required' } });
    const degraded = await eventually(
      'Degraded: FastPathUnavailable on both nodes',
      async () => {
        const x = await s.admin.get<SixBed4Prefix>(paths.prefix(PREFIX_NAME));
        const c = x?.status?.conditions?.find((k) => k.type === 'Degraded' && k.reason === 'FastPathUnavailable');
        return c && NODES.every((n) => c.message.includes(`node ${n} `)) ? c : undefined;
      },
      120_000,
      500,
    ).catch(async (e: Error) => {
      throw new Error(`${e.message}\n${await dump()}`);
    });
    t.regex(
      degraded.message,
      /spec\.fastPath Required: the kernel refused the BPF programs? \(needs CAP_BPF and CAP_NET_ADMIN\): .*EPERM.*this agent has no CAP_BPF: the chart gives it to the agents unless agent\.fastPath=false/,
    );

    const oldAgents = new Set((await pods('app.kubernetes.io/component=agent')).map((p) => p.metadata.name!));
    await helm([
      'upgrade',
      RELEASE,
      join(REPO, 'charts', 'sixbed4'),
      '--namespace',
      NS,
      '--reuse-values',
      '--set',
      'agent.fastPath=true',
    ]);
    await eventually(
      'new agent Pods with BPF, Ready, and the prefix Ready with every node served',
      async () => {
        const agents = await pods('app.kubernetes.io/component=agent');
        const p = await s.admin.get<SixBed4Prefix>(paths.prefix(PREFIX_NAME));
        return (
          agents.length === 2 &&
          agents.every((a) => !oldAgents.has(a.metadata.name!) && podReady(a) && caps(a).includes('BPF')) &&
          p?.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') &&
          p.status.conditions.some((c) => c.type === 'Degraded' && c.status === 'False')
        );
      },
      240_000,
      500,
    ).catch(async (e: Error) => {
      throw new Error(`${e.message}\n${await dump()}`);
    });
    for (const n of s.nodes)
      t.regex(
        await n.podLogs('agent', 200),
        /fast path on: .* forwarded in the kernel/,
        `${n.name}: the router in the Pod runs the program`,
      );
    // Stateless: the peers keep their addresses, and both directions work through the routers with the fast path.
    for (const n of NODES) {
      await eventually(
        `the ISP reaching the peer on ${n}`,
        async () => (await ping6(s.lab.isp, s.peerAddress.get(n)!, { count: 1 })).received === 1 || undefined,
        60_000,
        500,
      );
      const peerNs = n === NODES[0] ? s.lab.peers.A : s.lab.peers.B;
      const r = await ping6(peerNs, TOPO.ispV6, { count: 3 });
      t.is(r.received, 3, r.output);
    }
  },
);

serial(
  title(
    'deleting the prefix: each agent reverts its node, whose addresses, routes and sysctls are as before; the agents stay for other prefixes',
  ),
  async (t) => {
    for (const p of s.peers.splice(0)) await p.stop();
    // kubectl delete waits for the object to go, so the finalizer has been released when it returns.
    await runSession(readSession(DOC, 'remove'), docEnv()).catch(async (e: Error) => {
      throw new Error(`${e.message}\n${await dump()}`);
    });
    await eventually(
      'the prefix gone (its finalizer released after the agents reverted)',
      async () => !(await s.admin.get(paths.prefix(PREFIX_NAME))),
      120_000,
      500,
    ).catch(async (e: Error) => {
      throw new Error(`${e.message}\n${await dump()}`);
    });
    for (const n of s.lab.nodes) {
      t.deepEqual(await hostNetwork(n.ns, nodeOwned), s.before.get(n.name), `${n.name}: as before`);
    }
    // The agents keep running, serving nothing (a probe may be slow on a loaded machine: wait for Ready, not the instant).
    const agents = await eventually(
      'both agent Pods Ready, serving nothing',
      async () => {
        const a = (await pods('app.kubernetes.io/component=agent')).filter(podReady);
        return a.length === 2 ? a : undefined;
      },
      120_000,
      500,
    );
    t.deepEqual(agents.map((a) => a.spec.nodeName).sort(), NODES);
  },
);

serial(title('helm uninstall: the operator and agent Pods go; the nodes keep nothing of sixbed4'), async (t) => {
  await helm(['uninstall', RELEASE, '--namespace', NS, '--wait', '--timeout', '120s']);
  await eventually(
    'no sixbed4 Pod left',
    async () => (await pods('app.kubernetes.io/name=sixbed4')).length === 0,
    120_000,
    500,
  );
  for (const n of s.lab.nodes) {
    t.deepEqual(await hostNetwork(n.ns, nodeOwned), s.before.get(n.name), `${n.name}: as before`);
  }
  const leftovers = (await Promise.all(s.lab.nodes.map((n) => n.ns.json<{ ifname: string }[]>(['link', 'show']))))
    .flat()
    .map((l) => l.ifname)
    .filter((i) => i.startsWith('6b4') || i === '6bed4');
  t.deepEqual(leftovers, [], 'no tunnel left on any node');
});
