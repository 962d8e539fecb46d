// The node agent's heartbeat and reports: a Lease per node (sixbed4-agent-<node>, in the operator's namespace),
// renewed every interval as the kubelet renews its node Lease, carrying the agent's report on each prefix it serves
// (annotation sixbed4.io/reports). One small write per node and round, watched by the operator alone, which copies
// changed reports into the prefixes' status. (Agents writing their entries into the prefix status made every round
// N writes to one object that every agent watches: N² watch events, a managedFields entry per node, and at 1,000
// nodes a first round that the API server of the benchmark could not finish.)
import type { Logger } from '../../lib/log.js';
import { KubeError, paths, type Kube } from '../../kube/client.js';
import {
  AGENT_REPORTS_ANNOTATION,
  agentLeaseName,
  LABEL_COMPONENT,
  LABEL_NAME,
  type AgentReport,
  type KubeObject,
} from '../../kube/api.js';

interface Lease extends KubeObject {
  spec?: { holderIdentity?: string; leaseDurationSeconds?: number; renewTime?: string };
}

/** Kubernetes' MicroTime: RFC 3339 with microseconds. */
export function microTime(d: Date): string {
  return d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

export class NodeLease {
  private rv: string | undefined;
  private failing = false;

  constructor(
    private readonly kube: Kube,
    private readonly o: { namespace: string; node: string; intervalMs: number; log: Logger },
  ) {}

  /** Renews (creating it the first time) with these reports; a failure is logged once and retried at the next round. */
  async renew(reports: Readonly<Record<string, AgentReport>>, now = new Date()): Promise<void> {
    const name = agentLeaseName(this.o.node);
    const path = paths.lease(this.o.namespace, name);
    const lease = (rv?: string): Lease => ({
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: {
        name,
        namespace: this.o.namespace,
        labels: { [LABEL_NAME]: 'sixbed4', [LABEL_COMPONENT]: 'agent-lease' },
        annotations: { [AGENT_REPORTS_ANNOTATION]: JSON.stringify(reports) },
        ...(rv ? { resourceVersion: rv } : {}),
      },
      spec: {
        holderIdentity: this.o.node,
        leaseDurationSeconds: Math.ceil((this.o.intervalMs * 4) / 1000),
        renewTime: microTime(now),
      },
    });
    try {
      if (this.rv === undefined) this.rv = (await this.kube.get<Lease>(path))?.metadata.resourceVersion ?? '';
      const out =
        this.rv === ''
          ? await this.kube.create<Lease>(paths.leases(this.o.namespace), lease())
          : await this.kube.replace<Lease>(path, lease(this.rv), 'sixbed4-agent');
      this.rv = out.metadata.resourceVersion;
      if (this.failing) this.o.log.info('heartbeats reach the API server again');
      this.failing = false;
    } catch (err) {
      // A conflict (a previous agent of this node wrote it last): read it again next round.
      if (err instanceof KubeError && (err.status === 409 || err.status === 404)) this.rv = undefined;
      if (!this.failing)
        this.o.log.warn(`cannot renew the node's heartbeat Lease (will retry): ${(err as Error).message}`);
      this.failing = true;
    }
  }
}
