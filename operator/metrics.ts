// Prometheus metrics of the operator (served by lib/metrics-server.ts).
import client from 'prom-client';
import { buildInfo } from '../lib/build-info.js';

/** A prefix as its last reconcile saw it. */
export interface PrefixView {
  /** the reasons of its problems (empty: not Degraded) */
  degraded: string[];
  /** its serving nodes' agents, read at scrape time: ready now, and when they last reported (ms since the epoch) */
  agents: () => { node: string; ready: boolean; lastSeenMs?: number }[];
}

/** Words of a slicing prefix: held and there are, by kind. */
export interface SliceUsage {
  prefix: string;
  kind: 'namespace' | 'pod';
  used: number;
  capacity: number;
}

export class OperatorMetrics {
  readonly registry = new client.Registry();
  readonly reconciles = new client.Counter({
    name: 'sixbed4_operator_reconcile_total',
    help: 'Reconciles of SixBed4Prefixes, by result (success, error).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly reconcileErrors = new client.Counter({
    name: 'sixbed4_operator_reconcile_errors_total',
    help: 'Reconciles that failed and were retried with backoff.',
    registers: [this.registry],
  });
  readonly reconcileSeconds = new client.Histogram({
    name: 'sixbed4_operator_reconcile_duration_seconds',
    help: 'Time per reconcile.',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  readonly writes = new client.Counter({
    name: 'sixbed4_operator_api_writes_total',
    help: 'Write requests to the API server (not counting the leader Lease), by verb and resource.',
    labelNames: ['verb', 'resource', 'code'] as const,
    registers: [this.registry],
  });
  readonly leader = new client.Gauge({
    name: 'sixbed4_operator_leader',
    help: '1 while this replica holds the leader Lease (or runs without leader election).',
    registers: [this.registry],
  });
  readonly prefixes = new client.Gauge({
    name: 'sixbed4_operator_prefixes',
    help: 'SixBed4Prefixes by condition state seen in the last reconcile.',
    labelNames: ['state'] as const,
    registers: [this.registry],
  });
  readonly queueDepth = new client.Gauge({
    name: 'sixbed4_operator_queue_depth',
    help: 'Prefixes waiting to be reconciled.',
    registers: [this.registry],
  });
  readonly sliceReconciles = new client.Counter({
    name: 'sixbed4_operator_slice_reconcile_total',
    help: "Reconciles of namespaces (slice allocation) and of prefixes' slice status, by result.",
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly sliceQueueDepth = new client.Gauge({
    name: 'sixbed4_operator_slice_queue_depth',
    help: 'Namespaces and prefix statuses waiting for the slice allocator.',
    registers: [this.registry],
  });
  readonly slicesAllocated = new client.Counter({
    name: 'sixbed4_operator_slices_allocated_total',
    help: 'SixBed4Slices and SixBed4Ranges created, by kind.',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  readonly slicesReleased = new client.Counter({
    name: 'sixbed4_operator_slices_released_total',
    help: 'SixBed4Slices and SixBed4Ranges deleted by the operator, by kind.',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  readonly sliceConflicts = new client.Counter({
    name: 'sixbed4_operator_slice_conflicts_total',
    help: 'Creates of a SixBed4Slice or SixBed4Range refused with AlreadyExists (someone else held the name: taken, or adopted when it was for the same pod or namespace).',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });

  /** Per prefix: the reasons it is Degraded for, and when each serving node's agent last reported (see prefixSeen). */
  private readonly perPrefix = new Map<string, PrefixView>();
  /** The slice allocator's usage, read at scrape time (set when slices run). */
  sliceUsage: (() => SliceUsage[]) | undefined;

  readonly prefixDegraded = new client.Gauge({
    name: 'sixbed4_operator_prefix_degraded',
    help: 'Per SixBed4Prefix: 1 for each reason its Degraded condition is True for (the condition\'s reason is the first of them), 0 with reason="AsExpected" (the reason of the condition then) while it is not Degraded.',
    labelNames: ['prefix', 'reason'] as const,
    registers: [this.registry],
    collect: () => this.collectDegraded(),
  });
  readonly agentReady = new client.Gauge({
    name: 'sixbed4_operator_agent_ready',
    help: 'Per SixBed4Prefix and serving node: 1 while its agent counts as ready (reported ready, and not stale), else 0.',
    labelNames: ['prefix', 'node'] as const,
    registers: [this.registry],
    collect: () => this.collectAgents('ready'),
  });
  readonly agentReportAge = new client.Gauge({
    name: 'sixbed4_operator_agent_report_age_seconds',
    help: 'Per SixBed4Prefix and serving node: seconds since its agent last reported (its status entry or its node Lease heartbeat); absent while it never did.',
    labelNames: ['prefix', 'node'] as const,
    registers: [this.registry],
    collect: () => this.collectAgents('age'),
  });
  readonly slicesUsed = new client.Gauge({
    name: 'sixbed4_operator_slice_words_used',
    help: "Per SixBed4Prefix with slices: words held, by kind (namespace: words A held by namespaces' SixBed4Ranges; pod: words B held in the fullest namespace-and-node pair).",
    labelNames: ['prefix', 'kind'] as const,
    registers: [this.registry],
    collect: () => this.collectSlices(),
  });
  readonly slicesCapacity = new client.Gauge({
    name: 'sixbed4_operator_slice_words_capacity',
    help: 'Per SixBed4Prefix with slices: words there are, by kind (namespace: spec.slices.namespaceWords; pod: spec.slices.podWords).',
    labelNames: ['prefix', 'kind'] as const,
    registers: [this.registry],
  });

  readonly buildInfo = new client.Gauge({
    name: 'sixbed4_build_info',
    help: 'Always 1; the labels say which sixbed4 runs: version, git revision, Node.js version.',
    labelNames: ['version', 'revision', 'node'] as const,
    registers: [this.registry],
  });

  constructor() {
    client.collectDefaultMetrics({ register: this.registry, prefix: 'sixbed4_operator_' });
    this.buildInfo.set({ ...buildInfo() }, 1);
  }

  /** What the last reconcile of a prefix found (undefined: the prefix is gone). */
  prefixSeen(name: string, view: PrefixView | undefined): void {
    if (view) this.perPrefix.set(name, view);
    else this.perPrefix.delete(name);
  }

  private collectDegraded(): void {
    this.prefixDegraded.reset();
    for (const [prefix, v] of this.perPrefix) {
      if (v.degraded.length === 0) this.prefixDegraded.set({ prefix, reason: 'AsExpected' }, 0);
      for (const reason of new Set(v.degraded)) this.prefixDegraded.set({ prefix, reason }, 1);
    }
  }

  private collectAgents(what: 'ready' | 'age'): void {
    const now = Date.now();
    const g = what === 'ready' ? this.agentReady : this.agentReportAge;
    g.reset();
    for (const [prefix, v] of this.perPrefix) {
      for (const a of v.agents()) {
        if (what === 'ready') g.set({ prefix, node: a.node }, a.ready ? 1 : 0);
        else if (a.lastSeenMs !== undefined) g.set({ prefix, node: a.node }, Math.max(0, (now - a.lastSeenMs) / 1000));
      }
    }
  }

  private collectSlices(): void {
    this.slicesUsed.reset();
    this.slicesCapacity.reset();
    for (const u of this.sliceUsage?.() ?? []) {
      this.slicesUsed.set({ prefix: u.prefix, kind: u.kind }, u.used);
      this.slicesCapacity.set({ prefix: u.prefix, kind: u.kind }, u.capacity);
    }
  }

  /** Counts one write; the resource is taken from the REST path. */
  countWrite(verb: string, path: string, status: number): void {
    if (path.includes('/leases')) return;
    // the last resource of the path: /api/v1/namespaces/x/pods/y is a pod
    const m =
      /\/(sixbed4prefixes|sixbed4slices|sixbed4ranges|daemonsets|configmaps|events|nodes|namespaces|pods)(?:\/[^/]+)?(\/status)?$/.exec(
        path,
      );
    const resource = m ? `${m[1]}${m[2] ?? ''}` : 'other';
    this.writes.inc({ verb, resource, code: String(status) });
  }
}
