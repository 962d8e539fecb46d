// A failover group under test: a real kube-apiserver + etcd (with the chart's CRDs and RBAC), the segment
// (segment.ts), the agents' share written as the operator renders it, and one node agent per node as a process
// in its namespace, reaching the API server through a bridge that the test can cut.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startControlPlane, type ControlPlane } from '../k8s/controlplane.js';
import {
  agentConfigMapName,
  AGENT_REPORTS_ANNOTATION,
  API_VERSION,
  LABEL_MANAGED_BY,
  LABEL_PREFIX,
  MANAGED_BY,
  type AgentCommonConfig,
  type AgentNodeConfig,
  type AgentReport,
} from '../../kube/api.js';
import { Kube, paths } from '../../kube/client.js';
import type { Proc } from '../../lab/proc.js';
import { bridgeApiInto, type ApiBridge } from '../helpers/api-bridge.js';
import { agentArgv, installChart, NS, safely } from '../helpers/cluster.js';
import { eventually } from '../helpers/wait.js';
import { buildSegment, SEG, type Segment } from './segment.js';

export const PREFIX = 'fo';
export const LEASE = 'sixbed4-failover-fo';
export const NODES = ['n1', 'n2'];
/** The operator's defaults; FAILOVER_LEASE_MS=1000 runs the group with a 1 s lease (renew and fence scaled along). */
const LEASE_MS = Number(process.env.FAILOVER_LEASE_MS ?? 2000);
export const TIMING = { leaseDurationMs: LEASE_MS, renewIntervalMs: LEASE_MS / 4, fenceAfterMs: (LEASE_MS * 3) / 4 };
export const METRICS = '127.0.0.1:9475';

export class Group {
  agents: (Proc | undefined)[] = [];
  bridges: (ApiBridge | undefined)[] = [];
  private constructor(
    readonly cp: ControlPlane,
    readonly admin: Kube,
    readonly seg: Segment,
    readonly dir: string,
    readonly apiPort: number,
  ) {}

  static async start(
    tag: string,
    upstream: 'RoutedNextHop' | 'OnLink',
    opts: { fastPath?: boolean } = {},
  ): Promise<Group> {
    const dir = await mkdtemp(join(tmpdir(), `sixbed4-${tag}-`));
    const cp = await startControlPlane();
    const admin = new Kube(cp.kubeConfig(), 'sixbed4-test');
    try {
      await installChart(cp);
      const seg = await buildSegment(tag, { upstream });
      const g = new Group(cp, admin, seg, dir, Number(new URL(cp.server).port));
      await admin.create(paths.configMaps(NS), {
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: {
          name: agentConfigMapName(PREFIX),
          namespace: NS,
          labels: { [LABEL_PREFIX]: PREFIX, [LABEL_MANAGED_BY]: MANAGED_BY },
        },
        data: share(upstream, opts.fastPath ?? !!process.env.FAILOVER_FAST_PATH),
      });
      return g;
    } catch (err) {
      await safely(() => cp.stop());
      throw err;
    }
  }

  async stop(): Promise<void> {
    for (const a of this.agents) await safely(() => a?.stop('SIGTERM', 10_000));
    for (const b of this.bridges) await safely(() => b?.close());
    await safely(() => this.seg.destroy());
    await safely(() => this.cp.stop());
    await safely(() => rm(this.dir, { recursive: true, force: true }));
  }

  async connect(i: number): Promise<void> {
    this.bridges[i] ??= await bridgeApiInto(this.seg.nodes[i]!, this.apiPort, join(this.dir, `api-${i}.sock`));
  }

  async disconnect(i: number): Promise<void> {
    await this.bridges[i]?.close();
    this.bridges[i] = undefined;
  }

  async startAgent(i: number): Promise<Proc> {
    await this.connect(i);
    const p = this.seg.nodes[i]!.spawn(
      agentArgv(
        { node: NODES[i]!, kubeconfig: this.cp.kubeconfigPath, stateDir: join(this.dir, NODES[i]!) },
        '--prefix',
        PREFIX,
        '--metrics',
        METRICS,
        '--heartbeat-ms',
        '1000',
        '--poll-ms',
        '1000',
        '--handover-wait-ms',
        '0',
      ),
    );
    this.agents[i] = p;
    await p.waitFor(/router ready/, 30_000);
    return p;
  }

  /** The node whose member holds the Lease ('' none). */
  async holder(): Promise<string> {
    return (await this.holderIdentity()).split('_')[0]!;
  }

  /** The Lease's holder as written: <node>_<8 hex> ('' none). */
  async holderIdentity(): Promise<string> {
    const l = await this.admin.get<{ spec?: { holderIdentity?: string } }>(paths.lease(NS, LEASE));
    return l?.spec?.holderIdentity ?? '';
  }

  async report(i: number): Promise<AgentReport | undefined> {
    const l = await this.admin.get<{ metadata: { annotations?: Record<string, string> } }>(
      paths.lease(NS, `sixbed4-agent-${NODES[i]}`),
    );
    const text = l?.metadata.annotations?.[AGENT_REPORTS_ANNOTATION];
    return text ? (JSON.parse(text) as Record<string, AgentReport>)[PREFIX] : undefined;
  }

  async role(i: number, want: NonNullable<AgentReport['failover']>, timeoutMs = 20_000): Promise<AgentReport> {
    return eventually(
      `${NODES[i]} ${want}`,
      async () => {
        const r = await this.report(i);
        return r?.failover === want ? r : undefined;
      },
      timeoutMs,
      200,
    );
  }

  async macvlanAddresses(i: number): Promise<string[]> {
    const a = await this.seg.nodes[i]!.json<{ addr_info: { local: string }[] }[]>([
      'addr',
      'show',
      'dev',
      `6b4vr${SEG.virtualRouterId}`,
    ]);
    return a[0]!.addr_info.map((x) => x.local).filter((x) => !x.startsWith('fe80'));
  }

  takeoverLines(i: number): string[] {
    return (this.agents[i]?.output() ?? '')
      .split('\n')
      .filter((l) => /took over|first packet forwarded|withdrew|withdrawing/.test(l));
  }
}

function share(upstream: 'RoutedNextHop' | 'OnLink', fastPath: boolean): Record<string, string> {
  const common: AgentCommonConfig = {
    apiVersion: API_VERSION,
    kind: 'AgentConfig',
    name: PREFIX,
    prefix: SEG.prefix,
    nodes: NODES,
    metricsPort: 9475,
  };
  const node: AgentNodeConfig = {
    prefix: SEG.prefix,
    listen: { address: SEG.floating, port: 25790 },
    uplink: 'eth0',
    localAddresses: [],
    localAddressMode: 'uplink128',
    routes: [],
    ndpProxy: upstream === 'OnLink' ? 'on' : 'off',
    tunnel: '6b4fo',
    // Every member's router with its fast path (Required: a member without it is not a member).
    ...(fastPath ? { fastPath: 'on' as const } : {}),
    failover: {
      address: SEG.floating,
      leaseName: LEASE,
      members: NODES,
      upstream,
      ...(upstream === 'RoutedNextHop' ? { nextHop: SEG.nextHop } : {}),
      virtualRouterId: SEG.virtualRouterId,
      ...TIMING,
    },
  };
  return {
    'prefix.json': JSON.stringify(common),
    ...Object.fromEntries(NODES.map((n) => [`node.${n}.json`, JSON.stringify(node)])),
  };
}
