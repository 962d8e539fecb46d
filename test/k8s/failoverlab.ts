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
import { startPeerIn } from '../../lab/sixbed4.js';
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
} as const;

interface Pod extends KubeObject {
  spec: { nodeName?: string };
  status?: { phase?: string; conditions?: { type: string; status: string }[] };
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

  /** Waits for an active node (other than `not`) and, unless told otherwise, a ready standby; returns the active one. */
  async settled(timeoutMs = 180_000, not?: string, standby = true): Promise<string> {
    const p = await eventually(
      `an active node${not ? ` other than ${not}` : ''}${standby ? ' and a ready standby' : ''}`,
      async () => {
        const x = await this.prefix();
        const f = x?.status?.failover;
        return f?.active && f.active !== not && (!standby || f.standbysReady === '1/1') ? f.active : undefined;
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

  /** Traffic through the floating address while `move` runs, then until the other node forwards; what it saw. */
  async across(what: string, move: () => Promise<void>, settleMs = 4000): Promise<Trial> {
    const from = (await this.prefix())!.status!.failover!.active!;
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
    await move();
    const to = await this.settled(120_000, from, false);
    await new Promise((r) => setTimeout(r, settleMs));
    pinger.child.kill('SIGINT');
    stream.child.kill('SIGTERM');
    await Promise.all([pinger.exited, stream.exited]);
    const gap = pingGap(pinger.output());
    const final = /final (\d+) bytes checked of (\d+) sent, longest silence (\d+) ms/.exec(stream.output());
    return {
      what,
      from,
      to,
      gapMs: gap.gapMs,
      tcpSilenceMs: final ? Number(final[3]) : -1,
      tcpIntact: final !== null && stream.exitStatus?.code === 0,
      ...(await this.takeoverParts(to)),
    };
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
