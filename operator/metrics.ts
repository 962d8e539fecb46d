// Prometheus metrics of the operator (served by lib/metrics-server.ts).
import client from 'prom-client';
import { buildInfo } from '../lib/build-info.js';

export class OperatorMetrics {
  readonly registry = new client.Registry();
  readonly reconciles = new client.Counter({
    name: 'sixbed4_operator_reconcile_total', help: 'Reconciles of SixBed4Prefixes, by result (success, error).',
    labelNames: ['result'] as const, registers: [this.registry],
  });
  readonly reconcileErrors = new client.Counter({
    name: 'sixbed4_operator_reconcile_errors_total', help: 'Reconciles that failed and were retried with backoff.', registers: [this.registry],
  });
  readonly reconcileSeconds = new client.Histogram({
    name: 'sixbed4_operator_reconcile_duration_seconds', help: 'Time per reconcile.',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers: [this.registry],
  });
  readonly writes = new client.Counter({
    name: 'sixbed4_operator_api_writes_total', help: 'Write requests to the API server (not counting the leader Lease), by verb and resource.',
    labelNames: ['verb', 'resource', 'code'] as const, registers: [this.registry],
  });
  readonly leader = new client.Gauge({
    name: 'sixbed4_operator_leader', help: '1 while this replica holds the leader Lease (or runs without leader election).', registers: [this.registry],
  });
  readonly prefixes = new client.Gauge({
    name: 'sixbed4_operator_prefixes', help: 'SixBed4Prefixes by condition state seen in the last reconcile.',
    labelNames: ['state'] as const, registers: [this.registry],
  });
  readonly queueDepth = new client.Gauge({
    name: 'sixbed4_operator_queue_depth', help: 'Prefixes waiting to be reconciled.', registers: [this.registry],
  });
  readonly sliceReconciles = new client.Counter({
    name: 'sixbed4_operator_slice_reconcile_total', help: 'Reconciles of namespaces (slice allocation) and of prefixes\' slice status, by result.',
    labelNames: ['result'] as const, registers: [this.registry],
  });
  readonly sliceQueueDepth = new client.Gauge({
    name: 'sixbed4_operator_slice_queue_depth', help: 'Namespaces and prefix statuses waiting for the slice allocator.', registers: [this.registry],
  });
  readonly slicesAllocated = new client.Counter({
    name: 'sixbed4_operator_slices_allocated_total', help: 'SixBed4Slices and SixBed4Ranges created, by kind.',
    labelNames: ['kind'] as const, registers: [this.registry],
  });
  readonly slicesReleased = new client.Counter({
    name: 'sixbed4_operator_slices_released_total', help: 'SixBed4Slices and SixBed4Ranges deleted by the operator, by kind.',
    labelNames: ['kind'] as const, registers: [this.registry],
  });
  readonly sliceConflicts = new client.Counter({
    name: 'sixbed4_operator_slice_conflicts_total',
    help: 'Creates of a SixBed4Slice or SixBed4Range refused with AlreadyExists (someone else held the name: taken, or adopted when it was for the same pod or namespace).',
    labelNames: ['kind'] as const, registers: [this.registry],
  });

  readonly buildInfo = new client.Gauge({
    name: 'sixbed4_build_info', help: 'Always 1; the labels say which sixbed4 runs: version, git revision, Node.js version.',
    labelNames: ['version', 'revision', 'node'] as const, registers: [this.registry],
  });

  constructor() {
    client.collectDefaultMetrics({ register: this.registry, prefix: 'sixbed4_operator_' });
    this.buildInfo.set({ ...buildInfo() }, 1);
  }

  /** Counts one write; the resource is taken from the REST path. */
  countWrite(verb: string, path: string, status: number): void {
    if (path.includes('/leases')) return;
    // the last resource of the path: /api/v1/namespaces/x/pods/y is a pod
    const m = /\/(sixbed4prefixes|sixbed4slices|sixbed4ranges|daemonsets|configmaps|events|nodes|namespaces|pods)(?:\/[^/]+)?(\/status)?$/.exec(path);
    const resource = m ? `${m[1]}${m[2] ?? ''}` : 'other';
    this.writes.inc({ verb, resource, code: String(status) });
  }
}
