// One prefix on this node: makes the node what its share of the prefix says
// (host networking, then the router on the node's /64), keeps its entry in the
// prefix status current, and gives the host back when the prefix is deleted.
// The node agent (agent.ts) runs one of these per prefix that selects the node.
// The forwarding never depends on the API server: the share comes from the
// node agent (the API's ConfigMap, or its copy on the node's disk) and the
// router runs on whatever the API does; only status reports wait for it.
import type { Logger } from '../../lib/log.js';
import type { Kube } from '../../kube/client.js';
import type { AgentReport } from '../../kube/api.js';
import type { CountersSnapshot } from '../router/counters.js';
import type { FailoverMetrics } from '../failover/metrics.js';
import type { NodeShare } from './config.js';
import type { PrefixMetricsSource } from './metrics.js';
import { SliceAgent, type SliceRepair } from './slices.js';
import { PrefixAgentRunner } from './prefix-agent.js';
import { realPrefixParts } from './prefix-parts.js';

export { fastPathRefusal, shareRouterOptions } from './prefix-router.js';

export interface PrefixAgentOptions {
  prefixName: string;
  node: string;
  /** Where the pre-change host state is kept (a hostPath in the cluster). */
  statePath: string;
  /** The latest share of this prefix for this node (null: none yet). */
  share: () => NodeShare | null;
  /** Hands the node agent this prefix's report (it goes out in the node's Lease when it changed). */
  report: (r: AgentReport) => void;
  /** How often the report is compared with what was written (and written when it differs). */
  heartbeatMs?: number;
  /** The tunnel interface name (default: the share's, else 6bed4). */
  tun?: string;
  /** Claims for pods that run without a slice (they predate the CNI plugin); see SliceAgent. */
  sliceRepair?: SliceRepair;
  /** For a share with failover: the agents' namespace (the group's Lease) and the agent's failover metrics. */
  failover?: { namespace: string; metrics: FailoverMetrics };
}

export interface PrefixAgent {
  /** Converge again (the share changed, or a retry is due). */
  kick(): Promise<void>;
  /** The prefix is being deleted: stop the router and revert the host. */
  deleting(): Promise<void>;
  /** Whether this prefix forwards (or has given its host back). */
  healthy(): boolean;
  counters(): Promise<CountersSnapshot>;
  /** What the node agent's /metrics shows of this prefix (metrics.ts). */
  metricsSource(): Omit<PrefixMetricsSource, 'prefix'>;
  /** The prefix's slices on this node (CNI requests go there). */
  readonly slices: SliceAgent;
  /**
   * Stops. A pod restart keeps the host as configured and hands the tunnel to the next agent's router when one
   * comes within waitForSuccessorMs.
   */
  stop(opts?: { waitForSuccessorMs?: number }): Promise<void>;
}

/**
 * Starts the agent of one prefix on this node with the real parts (prefix-parts.ts): the first pass has run when this
 * resolves. The agent itself, its lifecycle and its order: prefix-agent.ts.
 */
export async function startPrefixAgent(kube: Kube, o: PrefixAgentOptions, log: Logger): Promise<PrefixAgent> {
  const slices = new SliceAgent(kube, {
    prefixName: o.prefixName,
    node: o.node,
    log,
    ...(o.sliceRepair ? { repair: o.sliceRepair } : {}),
  });
  return PrefixAgentRunner.start(kube, o, log, realPrefixParts(slices));
}
