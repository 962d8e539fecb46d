// The slice allocator as a controller: watches Namespaces, Pods,
// SixBed4Slices and SixBed4Ranges (plus the prefixes and nodes the prefix
// controller already watches), and reconciles one namespace at a time per key
// with a few workers (different namespaces hold different words A, so their
// allocations never compete for a name). A prefix's slice status is a key of
// its own, written after a short delay so that a burst of pods yields one
// status write, and only once every namespace has been looked at since start
// (a fresh leader would otherwise write a status that lacks the pending pods
// of namespaces it has not reached yet).
import type { Logger } from '../../lib/log.js';
import {
  PREFIXES_PATH,
  RANGES_PATH,
  SLICES_PATH,
  ADDRESS_ANNOTATION,
  ASSIGNED_SLICE_ANNOTATION,
  type KubeObject,
  type SixBed4Prefix,
  type SixBed4Range,
  type SixBed4Slice,
} from '../../kube/api.js';
import { SliceAllocator } from './allocator.js';
import type { Recorder } from '../../kube/events.js';
import { apiInformers, type ChangeType, type InformerFactory, type Watched } from '../../kube/informer.js';
import { paths, type Kube } from '../../kube/client.js';
import type { OperatorMetrics } from '../metrics.js';
import type { Cache } from '../prefix/reconcile.js';
import { checkSlices } from '../../kube/slice-model.js';
import { WorkQueue } from '../../kube/queue.js';

export interface SliceControllerOptions {
  kube: Kube;
  log: Logger;
  recorder: Recorder;
  metrics?: OperatorMetrics;
  /** the prefix controller's caches; without them the slice controller watches prefixes and nodes itself */
  prefixes?: Cache<SixBed4Prefix>;
  nodes?: Cache<KubeObject>;
  /** concurrent namespace reconciles (default 4) */
  workers?: number;
  /** delay of a prefix's status write after a change (default 250 ms) */
  statusDelayMs?: number;
  resyncMs?: number;
  /** how it watches (default: the API server through kube) */
  informers?: InformerFactory;
}

const nsKey = (n: string) => `ns/${n}`;
const statusKey = (p: string) => `status/${p}`;

export class SliceController {
  readonly allocator: SliceAllocator;
  private readonly queue = new WorkQueue(200, 30_000);
  private readonly own: Watched<KubeObject>[] = [];
  private readonly namespaces: Watched<KubeObject>;
  private readonly pods: Watched<KubeObject>;
  private readonly slices: Watched<SixBed4Slice>;
  private readonly ranges: Watched<SixBed4Range>;
  private readonly prefixes: Cache<SixBed4Prefix>;
  private readonly nodes: Cache<KubeObject>;
  private readonly podPrints = new Map<string, string>();
  /** namespaces not reconciled since start: prefix statuses wait for them */
  private initial: Set<string> | undefined;
  private workers: Promise<void>[] = [];
  private resyncTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly o: SliceControllerOptions) {
    const log = o.log;
    const informer = <T extends KubeObject>(path: string, name: string, onChange: (t: ChangeType, obj: T) => void) => {
      const i = (o.informers ?? apiInformers)<T>(o.kube, path, { name, log, onChange });
      this.own.push(i as unknown as Watched<KubeObject>);
      return i;
    };
    this.prefixes =
      o.prefixes ??
      informer<SixBed4Prefix>(PREFIXES_PATH, 'sixbed4prefixes', (_t, p) => this.prefixChanged(p.metadata.name ?? ''));
    this.nodes = o.nodes ?? informer<KubeObject>(paths.nodes, 'nodes', () => this.nodesChanged());
    this.namespaces = informer<KubeObject>(paths.namespaces, 'namespaces', (t, n) => this.onNamespace(t, n));
    this.pods = informer<KubeObject>(paths.allPods, 'pods', (t, p) => this.onPod(t, p));
    this.slices = informer<SixBed4Slice>(SLICES_PATH, 'sixbed4slices', (_t, s) => {
      if (s.spec?.pod?.namespace) this.queue.add(nsKey(s.spec.pod.namespace));
      if (s.spec?.prefix) this.queue.addAfter(statusKey(s.spec.prefix), this.statusDelay);
    });
    this.ranges = informer<SixBed4Range>(RANGES_PATH, 'sixbed4ranges', (_t, r) => {
      if (r.spec?.namespace?.name) this.queue.add(nsKey(r.spec.namespace.name));
      if (r.spec?.prefix) this.queue.addAfter(statusKey(r.spec.prefix), this.statusDelay);
    });
    this.allocator = new SliceAllocator({
      kube: o.kube,
      recorder: o.recorder,
      log,
      ...(o.metrics ? { metrics: o.metrics } : {}),
      caches: {
        prefixes: this.prefixes,
        nodes: this.nodes,
        namespaces: this.namespaces,
        pods: this.pods,
        slices: this.slices,
        ranges: this.ranges,
      },
    });
    if (o.metrics) o.metrics.sliceUsage = () => this.allocator.usage();
  }

  private get statusDelay(): number {
    return this.o.statusDelayMs ?? 250;
  }

  async start(): Promise<void> {
    await Promise.all(this.own.map((i) => i.start()));
    await Promise.all(this.own.map((i) => i.synced));
    if (this.stopped) return; // stopped while waiting for a first list that may never come
    this.initial = new Set(this.namespaces.list().map((n) => n.metadata.name ?? ''));
    this.o.log.info('slice allocator caches synced', {
      namespaces: this.namespaces.list().length,
      pods: this.pods.list().length,
      slices: this.slices.list().length,
      ranges: this.ranges.list().length,
    });
    this.enqueueAll();
    const n = Math.max(1, this.o.workers ?? 4);
    for (let i = 0; i < n; i++) this.workers.push(this.work());
    if (this.o.resyncMs) {
      this.resyncTimer = setInterval(() => this.enqueueAll(), this.o.resyncMs);
      this.resyncTimer.unref();
    }
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    this.queue.shutdown();
    await Promise.all(this.workers);
    await Promise.all(this.own.map((i) => i.stop()));
  }

  /** A prefix changed (the prefix controller forwards its informer's events). */
  prefixChanged(name: string): void {
    this.enqueueAll();
    if (name) this.queue.addAfter(statusKey(name), this.statusDelay);
  }

  /** A node's labels or addresses changed. */
  nodesChanged(): void {
    this.enqueueAll();
  }

  private enqueueAll(): void {
    for (const n of this.namespaces.list()) this.queue.add(nsKey(n.metadata.name ?? ''));
    for (const p of this.prefixes.list()) this.queue.addAfter(statusKey(p.metadata.name ?? ''), this.statusDelay);
    this.o.metrics?.sliceQueueDepth.set(this.queue.length);
  }

  private onNamespace(t: ChangeType, n: KubeObject): void {
    const name = n.metadata.name ?? '';
    if (t === 'delete') {
      this.allocator.forget(name);
      this.initial?.delete(name);
      for (const p of this.prefixes.list()) this.queue.addAfter(statusKey(p.metadata.name ?? ''), this.statusDelay);
    }
    this.queue.add(nsKey(name));
  }

  /** Pods change often (status, conditions); only what the allocator reads queues their namespace. */
  private onPod(t: ChangeType, p: KubeObject): void {
    const ns = p.metadata.namespace ?? '';
    const key = `${ns}/${p.metadata.name}`;
    if (t === 'delete') {
      this.podPrints.delete(key);
      this.queue.add(nsKey(ns));
      return;
    }
    const a = p.metadata.annotations ?? {};
    const keys = new Set([
      ASSIGNED_SLICE_ANNOTATION,
      ADDRESS_ANNOTATION,
      ...this.prefixes.list().map((x) => checkSlices(x.spec?.slices).slices.podAnnotation),
    ]);
    const spec = (p.spec ?? {}) as { nodeName?: string; hostNetwork?: boolean };
    const print = JSON.stringify([
      p.metadata.uid,
      spec.nodeName,
      spec.hostNetwork,
      (p.status as { phase?: string } | undefined)?.phase,
      p.metadata.deletionTimestamp,
      [...keys].sort().map((k) => a[k] ?? null),
    ]);
    if (this.podPrints.get(key) === print) return;
    this.podPrints.set(key, print);
    this.queue.add(nsKey(ns));
  }

  private async work(): Promise<void> {
    for (;;) {
      const key = await this.queue.get();
      if (key === undefined) return;
      this.o.metrics?.sliceQueueDepth.set(this.queue.length);
      try {
        if (key.startsWith('ns/')) {
          const name = key.slice(3);
          const touched = await this.allocator.reconcileNamespace(name);
          this.initial?.delete(name);
          for (const p of touched) this.queue.addAfter(statusKey(p), this.statusDelay);
        } else {
          const name = key.slice(7);
          if (this.initial && this.initial.size > 0) {
            this.queue.addAfter(key, this.statusDelay);
          } else {
            await this.allocator.reconcileStatus(name);
          }
        }
        this.queue.forget(key);
        this.o.metrics?.sliceReconciles.inc({ result: 'success' });
      } catch (e) {
        if (key.startsWith('ns/')) this.initial?.delete(key.slice(3));
        this.o.metrics?.sliceReconciles.inc({ result: 'error' });
        const delay = this.queue.addRateLimited(key);
        this.o.log.warn(`slice reconcile of ${key} failed; retrying in ${delay} ms: ${(e as Error).message}`);
      } finally {
        this.queue.done(key);
      }
    }
  }
}
