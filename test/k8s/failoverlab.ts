// A failover group on real nodes (issue 26), shared by test/k8s/failover.test.ts and bench/failover.ts: the control
// plane, two kubelet + containerd nodes on one layer-2 segment with the provider's router (test/k8s/nodelab.ts: the
// ISP's bridge), the chart installed, and the traffic that tells what a failover did: a peer behind the NAT on the
// floating address, pings every 20 ms from the ISP to it, and a TCP stream ISP ⇄ peer that checks every byte.
//
// The ISP routes the failover /64 to the group's next hop (2001:db8:ffff::20), an address that moves with the active
// node; the peers send to the floating IPv4 198.51.100.10, which no node holds as its own.
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Proc } from '../../lab/proc.js';
import { scrape, startPeerIn } from '../../lab/sixbed4.js';
import { TOPO } from '../../lab/topology.js';
import { Kube, paths } from '../../kube/client.js';
import type { KubeObject, SixBed4Prefix } from '../../kube/api.js';
import { repoRoot, startControlPlane, type ControlPlane } from './controlplane.js';
import { KubeNode, NODE_API_SERVER_ARGS, NODE_AUTHORIZATION_MODE, NODE_CONTROLLERS, nodeUsers } from './node.js';
import { buildNodeImages, type NodeImages } from './images.js';
import { API_SERVICE_IP, buildNodeLab, SERVICE_RANGE, type LabNode, type NodeLab } from './nodelab.js';
import { eventually } from '../helpers/wait.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { STREAM_CLIENT, pingGap } from '../failover/stream.js';
import { Informer } from '../../kube/informer.js';
import { RELEASE_REASON_ANNOTATION } from '../../kube/leader.js';
import { createLogger } from '../../lib/log.js';

/** The chart's agent.metrics.port. */
const AGENT_METRICS_PORT = 9475;
// As test/helpers/cluster.ts has them; not imported from there, which loads ava (bench/failover.ts runs without it).
export const NS = 'sixbed4-system';
const RELEASE = 'sixbed4';
const REPO = repoRoot();
async function safely(step: () => Promise<unknown> | undefined): Promise<void> {
  try {
    await step();
  } catch {
    /* teardown goes on */
  }
}
/** `helm` against a control plane as its admin, with helm's cache, config and data under dir (never the user's). */
function helmFor(cp: ControlPlane, dir: string): (args: string[]) => Promise<string> {
  const home = (k: string) => join(dir, `helm-${k}`);
  return async (args) =>
    (
      await promisify(execFile)(cp.helm, [...args, '--kubeconfig', cp.kubeconfigPath], {
        env: {
          ...process.env,
          HELM_CACHE_HOME: home('cache'),
          HELM_CONFIG_HOME: home('config'),
          HELM_DATA_HOME: home('data'),
        },
      })
    ).stdout;
}

/** An echo server on port 7000 that outlives its clients: one that is killed (a reset) must not take it down. */
const ECHO = `require('node:net').createServer((c) => { c.on('error', () => {}); c.pipe(c); }).listen(7000, '::', () => console.log('listening'));`;

export const HA = {
  name: 'ha',
  prefix: '2001:db8:9:20::/64',
  floating: '198.51.100.10',
  nextHop: '2001:db8:ffff::20',
  vrid: 20,
  nodes: ['edge-1', 'edge-2'],
  /** the group's Lease and each member's macvlan (agent/failover/config.ts) */
  lease: 'sixbed4-failover-ha',
  macvlan: '6b4vr20',
} as const;

/**
 * Samples every 50 ms whether this node holds the floating address on the group's macvlan: "<ms since epoch> <0|1>".
 * The node's own view (what answers ARP), not the agents' word.
 */
const HOLDS_SAMPLER = `while :; do n=$(ip -o -4 addr show dev ${HA.macvlan} 2>/dev/null | grep -c ' ${HA.floating}/'); echo "$(date +%s%3N) $n"; sleep 0.05; done`;

interface Pod extends KubeObject {
  metadata: KubeObject['metadata'] & { deletionTimestamp?: string };
  spec: { nodeName?: string };
  status?: { phase?: string; startTime?: string; conditions?: { type: string; status: string }[] };
}
const podReady = (p: Pod) =>
  p.status?.phase === 'Running' && (p.status.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');

/** One crash or planned move, as measured from the outside and as the new active node's agent logged it. */
export interface Trial {
  what: string;
  from: string;
  to: string;
  /** the longest silence of the 20 ms pings through it (ping's own timestamps) */
  gapMs: number;
  /** the TCP stream's longest silence, and whether it survived with every byte right */
  tcpSilenceMs: number;
  tcpIntact: boolean;
  /** what the group did meanwhile, seen from outside the agents (when the trial watched it) */
  seen?: GroupSeen;
  /** the new active agent's own account (agent/failover/member.ts): ms */
  parts?: {
    reason?: string;
    detectionMs?: number;
    electionMs?: number;
    announceMs?: number;
    firstPacketMs?: number;
    gapMs?: number;
  };
}

/** What a failover group did during a trial, seen from outside its agents. */
export interface GroupSeen {
  /** the Lease's holders in the order its watch showed them; a release as `released (<reason>)` */
  holders: string[];
  /** how long both nodes held the floating address on their macvlans at once, by the 50 ms samples (two actives) */
  bothHeldMs: number;
  /** samples taken per node (that the sampling ran) */
  samples: number[];
  /** samples per node in which it held the floating address */
  held: Record<string, number>;
}

/** Intervals [first, last] of consecutive samples holding the address. */
function heldIntervals(output: string): { intervals: [number, number][]; samples: number; held: number } {
  const out: [number, number][] = [];
  let open: [number, number] | undefined;
  let samples = 0,
    held = 0;
  for (const line of output.split('\n')) {
    const m = /^(\d+) (\d+)$/.exec(line.trim());
    if (!m) continue;
    samples++;
    const at = Number(m[1]);
    if (m[2] !== '0') {
      held++;
      if (open) open[1] = at;
      else open = [at, at];
    } else if (open) {
      out.push(open);
      open = undefined;
    }
  }
  if (open) out.push(open);
  return { intervals: out, samples, held };
}

export class HaLab {
  private constructor(
    readonly dir: string,
    readonly images: NodeImages,
    readonly lab: NodeLab,
    readonly cp: ControlPlane,
    readonly admin: Kube,
    readonly nodes: KubeNode[],
  ) {}

  peer?: { proc: Proc; address: string };
  private echo?: Proc;

  static async start(tag = 'ha-test'): Promise<HaLab> {
    const dir = await mkdtemp(join(tmpdir(), 'sixbed4-ha-'));
    const images = await buildNodeImages(tag, dir);
    const lab = await buildNodeLab('ha', [...HA.nodes]);
    let cp: ControlPlane | undefined;
    const nodes: KubeNode[] = [];
    try {
      cp = await startControlPlane({
        controllerManager: true,
        controllers: NODE_CONTROLLERS,
        scheduler: true,
        serviceClusterIpRange: SERVICE_RANGE,
        users: nodeUsers([...HA.nodes]),
        authorizationMode: NODE_AUTHORIZATION_MODE,
        apiServerArgs: NODE_API_SERVER_ARGS,
      });
      for (const n of lab.nodes) {
        nodes.push(
          await KubeNode.start({
            name: n.name,
            ns: n.ns,
            nodeIp: n.v4,
            podCidr: n.podCidr,
            cp,
            apiServiceIp: API_SERVICE_IP,
            imageArchive: images.archive,
            sandboxImage: images.sandbox,
            dir,
          }),
        );
      }
      await mkdir(join(dir, 'agent-state'));
      // Real nodes reach the Internet's IPv4 through the provider: a member without an IPv4 default route counts its
      // data path as down (agent/failover/health.ts) and never stands by.
      for (const n of lab.nodes) await n.ns.ip(['route', 'replace', 'default', 'via', '198.51.100.254', 'dev', 'eth0']);
      // Kubernetes nodes forward IPv4 (kubeadm's preflight asks for it; here the CNI bridge plugin would switch it on
      // only with the node's first pod): the fast path's route lookup needs it on the group's macvlan.
      for (const n of lab.nodes) await n.ns.sysctl('net.ipv4.ip_forward', 1);
      // The provider routes the /64 to the group's next hop, which moves with the active node.
      await lab.isp.ip(['-6', 'route', 'replace', HA.prefix, 'via', HA.nextHop, 'dev', 'br0']);
      return new HaLab(dir, images, lab, cp, new Kube(cp.kubeConfig(), 'sixbed4-test'), nodes);
    } catch (e) {
      for (const n of nodes) await safely(() => n.stop());
      await safely(() => cp?.stop());
      await safely(() => lab.destroy());
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
  }

  helm(args: string[]): Promise<string> {
    return helmFor(this.cp, this.dir)(args);
  }

  async install(): Promise<void> {
    await this.helm([
      'install',
      RELEASE,
      join(REPO, 'charts', 'sixbed4'),
      '--namespace',
      NS,
      '--create-namespace',
      '--set',
      `image.repository=${this.images.repository}`,
      '--set',
      `image.tag=${this.images.tag}`,
      '--set',
      'image.pullPolicy=Never',
      '--set',
      `agent.stateDir=${join(this.dir, 'agent-state')}`,
      '--set',
      'logFormat=json',
    ]);
  }

  /** The docs' sessions run as a user's shell would: the real kubectl on PATH, the admin's kubeconfig, in the repository. */
  docEnv(): { cwd: string; env: NodeJS.ProcessEnv } {
    return {
      cwd: REPO,
      env: { ...process.env, PATH: `${this.cp.binDir}:${process.env.PATH ?? ''}`, KUBECONFIG: this.cp.kubeconfigPath },
    };
  }

  labNode(name: string): LabNode {
    return this.lab.nodes.find((n) => n.name === name)!;
  }
  kubeNode(name: string): KubeNode {
    return this.nodes.find((n) => n.name === name)!;
  }

  async pods(selector: string): Promise<Pod[]> {
    return (
      (
        await this.admin.get<{ items: Pod[] }>(
          `/api/v1/namespaces/${NS}/pods?labelSelector=${encodeURIComponent(selector)}`,
        )
      )?.items ?? []
    );
  }

  async prefix(): Promise<SixBed4Prefix | undefined> {
    return this.admin.get<SixBed4Prefix>(paths.prefix(HA.name));
  }

  /**
   * Waits for an active node (other than `not`) and, unless told otherwise, a ready standby; returns the active one.
   * A ready standby is one the status counts whose word comes from the agent Pod now on its node (one, Ready, not
   * going): right after an agent was replaced the status still counts what the old one last reported.
   */
  async settled(timeoutMs = 180_000, not?: string, standby = true): Promise<string> {
    const p = await eventually(
      `an active node${not ? ` other than ${not}` : ''}${standby ? ' and a ready standby' : ''}`,
      async () => {
        const x = await this.prefix();
        const f = x?.status?.failover;
        if (!f?.active || f.active === not) return undefined;
        if (!standby) return f.active;
        if (f.standbysReady !== '1/1') return undefined;
        const agents = await this.agentPods();
        for (const n of HA.nodes) {
          if (n === f.active) continue;
          const here = agents.filter((a) => a.spec.nodeName === n && !a.metadata.deletionTimestamp);
          const e = x!.status!.nodes?.find((m) => m.name === n);
          if (here.length !== 1 || !podReady(here[0]!) || e?.failover !== 'Standby' || !e.lastReport) return undefined;
          // lastReport has whole seconds
          if (Date.parse(e.lastReport) + 1000 < Date.parse(here[0]!.status?.startTime ?? '')) return undefined;
        }
        return f.active;
      },
      timeoutMs,
      300,
    ).catch(async (e: Error) => {
      throw new Error(`${e.message}\n${await this.dump()}`);
    });
    return p;
  }

  /** The node the operator's Pod runs on (it writes the status this lab reads). */
  async operatorNode(): Promise<string> {
    const op = await eventually(
      'a Ready operator Pod',
      async () => (await this.pods('app.kubernetes.io/component=operator')).find(podReady),
      180_000,
      500,
    );
    return op.spec.nodeName!;
  }

  /**
   * Makes the active node one that does not run the operator, by a planned move if needed: a crash of the operator's
   * node would stop the status this lab reads (the failover itself needs no operator; its Pod is rescheduled only
   * after the node lifecycle controller's eviction timeout, which this control plane does not run).
   */
  async activeAwayFromOperator(): Promise<string> {
    const active = await this.settled();
    if (active !== (await this.operatorNode())) return active;
    await this.deleteActiveAgent();
    return this.settled(180_000, active);
  }

  async deleteActiveAgent(): Promise<void> {
    const active = (await this.prefix())!.status!.failover!.active!;
    const pod = (await this.pods('app.kubernetes.io/component=agent')).find((p) => p.spec.nodeName === active)!;
    await this.admin.delete(paths.pod(NS, pod.metadata.name!));
  }

  /** Starts the peer on the floating address and the ISP's echo server. */
  async startPeer(): Promise<void> {
    this.peer = await startPeerIn(this.lab.peers.A, ['--router', HA.floating, '--default-route'], 30_000);
    this.echo = this.lab.isp.spawn([process.execPath, '-e', ECHO]);
    await eventually('the echo server', async () => this.echo!.output().includes('listening'), 10_000, 100);
  }

  /**
   * Traffic through the floating address while `move` runs, then until the other node forwards (or `until` says the
   * move is over and which node is active); what it saw. `watch`: the group's Lease and addresses too (GroupSeen).
   */
  async across(
    what: string,
    move: () => Promise<void>,
    o: { settleMs?: number; until?: (from: string) => Promise<string>; watch?: boolean } = {},
  ): Promise<Trial> {
    const from = (await this.prefix())!.status!.failover!.active!;
    const watching = o.watch ? await this.watchGroup() : undefined;
    const pinger = this.lab.isp.spawn(['ping', '-6', '-n', '-D', '-O', '-i', '0.02', '-W', '1', this.peer!.address]);
    const stream = this.lab.peers.A.spawn([process.execPath, '-e', STREAM_CLIENT, TOPO.ispV6]);
    await eventually(
      'the TCP stream connected',
      async () => stream.output().includes('connected') || undefined,
      15_000,
      50,
    ).catch((e: Error) => {
      throw new Error(
        `${e.message}; the stream said: ${stream.output()}; the echo server ${this.echo?.running ? 'runs' : `exited: ${this.echo?.output()}`}`,
      );
    });
    await new Promise((r) => setTimeout(r, 1000));
    let to: string;
    let seen: GroupSeen | undefined;
    try {
      await move();
      to = o.until ? await o.until(from) : await this.settled(120_000, from, false);
      await new Promise((r) => setTimeout(r, o.settleMs ?? 4000));
    } finally {
      pinger.child.kill('SIGINT');
      stream.child.kill('SIGTERM');
      await Promise.all([pinger.exited, stream.exited]);
      seen = await watching?.();
    }
    const gap = pingGap(pinger.output());
    const final = /final (\d+) bytes checked of (\d+) sent, longest silence (\d+) ms/.exec(stream.output());
    return {
      what,
      from,
      to,
      gapMs: gap.gapMs,
      tcpSilenceMs: final ? Number(final[3]) : -1,
      tcpIntact: final !== null && stream.exitStatus?.code === 0,
      ...(seen ? { seen } : {}),
      ...(await this.takeoverParts(to)),
    };
  }

  /**
   * Watches the group from outside its agents until the returned function is called: the Lease's holders (a watch:
   * every write) and, on each node, whether it holds the floating address on the group's macvlan.
   */
  async watchGroup(): Promise<() => Promise<GroupSeen>> {
    const holders: string[] = [];
    const note = (lease: KubeObject & { spec?: { holderIdentity?: string } }) => {
      const h = lease.spec?.holderIdentity;
      const entry = h || `released (${lease.metadata.annotations?.[RELEASE_REASON_ANNOTATION] ?? 'no reason'})`;
      if (holders.at(-1) !== entry) holders.push(entry);
    };
    const lease = new Informer<KubeObject>(this.admin, paths.leases(NS), {
      name: `Lease ${HA.lease}`,
      log: createLogger({ level: 'error', component: 'ha-test' }),
      fieldSelector: `metadata.name=${HA.lease}`,
      onChange: (type, l) => {
        if (type !== 'delete') note(l);
      },
    });
    await lease.start();
    const samplers = this.lab.nodes.map((n) => n.ns.spawn(['sh', '-c', HOLDS_SAMPLER]));
    return async () => {
      for (const p of samplers) p.child.kill('SIGTERM');
      await Promise.all(samplers.map((p) => p.exited));
      await lease.stop();
      const held = samplers.map((p) => heldIntervals(p.output()));
      let both = 0;
      for (const a of held[0]!.intervals)
        for (const b of held[1]!.intervals) both += Math.max(0, Math.min(a[1], b[1]) - Math.max(a[0], b[0]));
      return {
        holders,
        bothHeldMs: both,
        samples: held.map((h) => h.samples),
        held: Object.fromEntries(this.lab.nodes.map((n, i) => [n.name, held[i]!.held])),
      };
    };
  }

  /** The agent Pods now. */
  async agentPods(): Promise<Pod[]> {
    return this.pods('app.kubernetes.io/component=agent');
  }

  /** The name of the agent Pod on a node (the one not going). */
  async agentPodOn(node: string): Promise<string> {
    const p = (await this.agentPods()).find((a) => a.spec.nodeName === node && !a.metadata.deletionTimestamp);
    if (!p) throw new Error(`no agent Pod on ${node}`);
    return p.metadata.name!;
  }

  /**
   * `helm upgrade` that changes only the agents' Pod template (an annotation), as a changed value does: the DaemonSet
   * rolls its Pods. Returns when it has been asked; `rolled` tells when it is over.
   */
  async upgradeAgents(annotation: string): Promise<void> {
    await this.helm([
      'upgrade',
      RELEASE,
      join(REPO, 'charts', 'sixbed4'),
      '--namespace',
      NS,
      '--reuse-values',
      '--set-string',
      `agent.podAnnotations.rollout=${annotation}`,
    ]);
  }

  /** The rollout over: every agent Pod new (none of `old`) and Ready, an active node and a ready standby; the active. */
  async rolled(old: Set<string>, timeoutMs = 240_000): Promise<string> {
    return eventually(
      'every agent Pod replaced and Ready, an active node and a ready standby',
      async () => {
        const agents = await this.agentPods();
        if (agents.length !== HA.nodes.length || !agents.every((a) => !old.has(a.metadata.name!) && podReady(a)))
          return undefined;
        const f = (await this.prefix())?.status?.failover;
        return f?.active && f.standbysReady === '1/1' ? f.active : undefined;
      },
      timeoutMs,
      300,
    ).catch(async (e: Error) => {
      throw new Error(`${e.message}\n${await this.dump()}`);
    });
  }

  /** The interface a node's member uses: the lower link of the group's macvlan. */
  async uplinkOf(node: string): Promise<string> {
    const [l] = await this.labNode(node).ns.json<{ link?: string }[]>(['link', 'show', 'dev', HA.macvlan]);
    if (!l?.link) throw new Error(`${node}: no ${HA.macvlan} with a lower link`);
    return l.link;
  }

  /**
   * The uplink up again and what the node's network configuration puts back (nodelab.ts, HaLab.start): Linux drops
   * a downed link's IPv6 addresses and every route through it.
   */
  async uplinkUp(node: string, dev: string): Promise<void> {
    const n = this.labNode(node);
    await n.ns.ipBatch([
      `link set ${dev} up`,
      `addr replace ${n.ll}/64 dev ${dev} nodad`,
      `addr replace ${n.v6}/64 dev ${dev} nodad`,
      `addr replace ${n.v4}/24 dev ${dev}`,
      `route replace ::/0 via ${TOPO.ispLL} dev ${dev}`,
      `route replace default via 198.51.100.254 dev ${dev}`,
    ]);
  }

  /** A node agent's /metrics (on the node's InternalIP, the chart's agent.metrics.port). */
  async agentMetrics(node: string): Promise<Map<string, number>> {
    const n = this.labNode(node);
    return scrape(n.ns, `${n.v4}:${AGENT_METRICS_PORT}`);
  }

  /** The group's router packets on a node by `direction/path` (sixbed4_router_packets_total of the prefix). */
  async routerPackets(node: string): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const [k, v] of await this.agentMetrics(node)) {
      if (!k.startsWith('sixbed4_router_packets_total{')) continue;
      const prefix = /prefix="([^"]*)"/.exec(k)?.[1];
      if (prefix !== undefined && prefix !== HA.name) continue;
      const key = `${/direction="([^"]*)"/.exec(k)?.[1]}/${/path="([^"]*)"/.exec(k)?.[1]}`;
      out[key] = (out[key] ?? 0) + v;
    }
    return out;
  }

  /** The last takeover the new active node's agent logged (agent/failover/member.ts), with its parts. */
  async takeoverParts(node: string): Promise<{ parts?: Trial['parts'] }> {
    const text = await this.kubeNode(node).podLogs('agent', 400);
    let parts: Trial['parts'] | undefined;
    for (const line of text.split('\n')) {
      const json = line.slice(line.indexOf('{'));
      if (!json.includes('first packet forwarded after the takeover') && !json.includes('"detectionMs"')) continue;
      try {
        const o = JSON.parse(json) as NonNullable<Trial['parts']>;
        parts = { ...parts, ...o };
      } catch {
        /* a partial line */
      }
    }
    return parts ? { parts } : {};
  }

  /** A crash of the node: every process killed (KubeNode.crash); boots it again after the takeover. */
  async crash(node: string): Promise<void> {
    await this.kubeNode(node).crash();
  }

  async boot(node: string): Promise<void> {
    await this.kubeNode(node).boot();
    await eventually(
      `a Ready agent Pod on ${node}`,
      async () =>
        (await this.pods('app.kubernetes.io/component=agent')).some((p) => p.spec.nodeName === node && podReady(p)),
      180_000,
      500,
    );
  }

  async dump(): Promise<string> {
    const out: string[] = [];
    for (const n of this.nodes) out.push(await n.logs(10), await n.podLogs('agent', 30));
    out.push(JSON.stringify((await this.prefix().catch(() => undefined))?.status ?? null, null, 1));
    return out.join('\n');
  }

  async stop(): Promise<void> {
    if (this.peer) await safely(() => this.peer!.proc.stop());
    if (this.echo) await safely(() => this.echo!.stop());
    await safely(() => this.admin.delete(paths.prefix(HA.name)));
    await safely(() => eventually('the prefix gone', async () => !(await this.prefix()), 120_000, 500));
    await safely(() => this.helm(['uninstall', RELEASE, '--namespace', NS, '--wait', '--timeout', '60s']));
    await safely(() =>
      eventually(
        'every pod gone',
        async () => (await this.pods('app.kubernetes.io/name=sixbed4')).length === 0,
        60_000,
        500,
      ),
    );
    for (const n of this.nodes) await safely(() => n.stop());
    await safely(() => this.cp.stop());
    await safely(() => this.lab.destroy());
    await safely(() => rm(this.dir, { recursive: true, force: true }));
  }
}
