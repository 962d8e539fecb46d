// A small cluster in memory for the table tests of the controllers
// (reconcile-table.test.ts, slices-table.test.ts): the in-memory API server,
// caches on it, a clock the rows move, the Events the code records, and the
// writes of nodes, prefixes, agents' Leases, namespaces and pods as the
// cluster tests make them on a real server.
import {
  AGENT_REPORTS_ANNOTATION,
  LABEL_COMPONENT,
  LABEL_MANAGED_BY,
  MANAGED_BY,
  agentLeaseName,
  type KubeObject,
  type SixBed4Prefix,
} from '../../kube/api.js';
import { paths } from '../../kube/client.js';
import type { EventType, Recorder } from '../../kube/events.js';
import { microTime } from '../../agent/cluster/lease.js';
import { reconcilePrefix, type ReconcileDeps, type ReconcileResult } from '../../operator/prefix/reconcile.js';
import { MemKube } from '../helpers/memkube.js';
import { LogRing, ringLogger } from '../helpers/logring.js';

export const NS = 'sixbed4-system';
export const AGENT_DAEMONSET = 'sixbed4-agent';

export interface RecordedEvent {
  object: string;
  kind: string;
  type: EventType;
  reason: string;
  message: string;
}

export class World {
  readonly kube = new MemKube();
  readonly log = new LogRing(400);
  readonly events: RecordedEvent[] = [];
  readonly recorder: Recorder = {
    event: (obj, type, reason, message) => {
      this.events.push({ object: obj.metadata.name ?? '', kind: obj.kind ?? '', type, reason, message });
    },
  };
  /** the clock of the server and of the reconciler */
  now = new Date('2026-03-01T10:00:00Z');
  readonly deps: ReconcileDeps;
  /** failover Lease -> the holder that released it (what the controller's watch records) */
  readonly releases = new Map<string, { by: string; reason?: string }>();

  constructor(opts: { cleanupTimeoutMs?: number; staleAfterMs?: number } = {}) {
    this.kube.now = () => this.now;
    this.deps = {
      kube: this.kube,
      namespace: NS,
      render: { namespace: NS },
      agentDaemonSet: AGENT_DAEMONSET,
      prefixes: this.kube.cache<SixBed4Prefix>(paths.prefixes),
      nodes: this.kube.cache(paths.nodes),
      daemonSets: this.kube.cache(paths.daemonSets(NS)),
      configMaps: this.kube.cache(paths.configMaps(NS), { labelSelector: `${LABEL_MANAGED_BY}=${MANAGED_BY}` }),
      leases: this.kube.cache(paths.leases(NS), { labelSelector: `${LABEL_COMPONENT}=agent-lease` }),
      failoverLeases: this.kube.cache(paths.leases(NS), { labelSelector: `${LABEL_COMPONENT}=failover-lease` }),
      failoverReleases: this.releases,
      recorder: this.recorder,
      log: ringLogger(this.log, 'operator'),
      cleanupTimeoutMs: opts.cleanupTimeoutMs ?? 120_000,
      staleAfterMs: opts.staleAfterMs ?? 300_000,
      now: () => this.now,
      seen: new Map(),
    };
  }

  tick(ms: number): void {
    this.now = new Date(this.now.getTime() + ms);
  }

  async node(name: string, labels: Record<string, string>, address?: string): Promise<void> {
    await this.kube.create(paths.nodes, {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name, labels },
      ...(address ? { status: { addresses: [{ type: 'InternalIP', address }] } } : {}),
    });
  }

  /** kubectl apply of a prefix (server-side apply, as a user does). */
  async prefix(name: string, spec: Record<string, unknown>, annotations?: Record<string, string>): Promise<void> {
    await this.kube.apply(
      paths.prefix(name),
      {
        apiVersion: 'sixbed4.io/v1alpha1',
        kind: 'SixBed4Prefix',
        metadata: { name, ...(annotations ? { annotations } : {}) },
        spec,
      },
      'kubectl',
    );
  }

  get(name: string): SixBed4Prefix | undefined {
    return this.kube.peek<SixBed4Prefix>(paths.prefix(name));
  }

  cond(name: string, type: string) {
    return this.get(name)?.status?.conditions?.find((c) => c.type === type);
  }

  configMap(prefix: string): (KubeObject & { data?: Record<string, string> }) | undefined {
    return this.kube.peek(paths.configMap(NS, `sixbed4-agent-${prefix}`));
  }

  /** An agent's report, written as the agent does: into its node's Lease. */
  async report(prefix: string, node: string, fields: Record<string, unknown>, at = this.now): Promise<void> {
    const path = paths.lease(NS, agentLeaseName(node));
    const cur = await this.kube.get<KubeObject>(path);
    const reports = JSON.parse(cur?.metadata.annotations?.[AGENT_REPORTS_ANNOTATION] ?? '{}') as Record<
      string,
      unknown
    >;
    reports[prefix] = { lastReport: at.toISOString().replace(/\.\d{3}Z$/, 'Z'), ...fields };
    const lease = {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: {
        name: agentLeaseName(node),
        namespace: NS,
        labels: { 'app.kubernetes.io/name': 'sixbed4', [LABEL_COMPONENT]: 'agent-lease' },
        annotations: { [AGENT_REPORTS_ANNOTATION]: JSON.stringify(reports) },
        ...(cur ? { resourceVersion: cur.metadata.resourceVersion } : {}),
      },
      spec: { holderIdentity: node, leaseDurationSeconds: 40, renewTime: microTime(at) },
    };
    if (cur) await this.kube.replace(path, lease);
    else await this.kube.create(paths.leases(NS), lease);
  }

  /**
   * A failover group's Lease, written as its members do: taken or renewed by node `holder` (as <node>_<8 hex>;
   * undefined: released, as a member that stops releases it; the controller's watch notes who released it and why).
   */
  async failoverLease(
    prefix: string,
    holder: string | undefined,
    at = this.now,
    releaseReason?: string,
  ): Promise<void> {
    const path = paths.lease(NS, `sixbed4-failover-${prefix}`);
    const cur = await this.kube.get<KubeObject & { spec?: { holderIdentity?: string; leaseTransitions?: number } }>(
      path,
    );
    if (!cur) throw new Error(`no failover Lease for ${prefix}: the operator creates it`);
    const before = cur.spec?.holderIdentity;
    if (before && !holder)
      this.releases.set(cur.metadata.name!, { by: before, ...(releaseReason ? { reason: releaseReason } : {}) });
    const transitions = (cur.spec?.leaseTransitions ?? 0) + (holder && before !== `${holder}_0a1b2c3d` ? 1 : 0);
    await this.kube.replace(path, {
      ...cur,
      spec: holder
        ? {
            holderIdentity: `${holder}_0a1b2c3d`,
            leaseDurationSeconds: 2,
            acquireTime: microTime(at),
            renewTime: microTime(at),
            leaseTransitions: transitions,
          }
        : { leaseDurationSeconds: 1, renewTime: microTime(at), leaseTransitions: transitions },
    });
  }

  /** Reconciles until a pass writes nothing (what the controller's queue would do); the results of every pass. */
  async settle(name: string, max = 6): Promise<ReconcileResult[]> {
    const out: ReconcileResult[] = [];
    for (let i = 0; i < max; i++) {
      const before = this.kube.writes.length;
      out.push(await reconcilePrefix(this.deps, name));
      if (this.kube.writes.length === before) return out;
    }
    throw new Error(
      `${name}: still writing after ${max} reconciles: ${this.kube.writes
        .slice(-4)
        .map((w) => `${w.verb} ${w.path}`)
        .join(', ')}`,
    );
  }

  /** Writes since mark (verb and path). */
  mark(): () => string[] {
    const at = this.kube.writes.length;
    return () => this.kube.writes.slice(at).map((w) => `${w.verb} ${w.path}${w.status >= 300 ? ` ${w.status}` : ''}`);
  }

  reasons(object?: string): string[] {
    return this.events.filter((e) => object === undefined || e.object === object).map((e) => `${e.type} ${e.reason}`);
  }
}
