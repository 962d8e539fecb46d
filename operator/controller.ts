// The operator process: (optionally) wins the leader Lease, then watches
// SixBed4Prefixes, Nodes, its ConfigMaps and the agents' DaemonSet and reconciles
// each prefix that may be affected, one at a time, with backoff on errors and
// a periodic resync; and runs the slice allocator (slices/controller.ts) on the
// same prefix and node caches. A replica that loses the Lease stops at once.
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from '../lib/log.js';
import {
  AGENT_REPORTS_ANNOTATION,
  FAILOVER_LEASE_COMPONENT,
  LABEL_COMPONENT,
  LABEL_MANAGED_BY,
  LABEL_PREFIX,
  MANAGED_BY,
  PREFIXES_PATH,
  agentConfigMapName,
  type KubeObject,
  type SixBed4Prefix,
} from '../kube/api.js';
import { EventRecorder } from '../kube/events.js';
import { apiInformers, type ChangeType, type InformerFactory, type Watched } from '../kube/informer.js';
import { Kube, paths } from '../kube/client.js';
import { LeaderElector, RELEASE_REASON_ANNOTATION, defaultIdentity } from '../kube/leader.js';
import { OperatorMetrics } from './metrics.js';
import { nodeInfo } from './prefix/plan.js';
import { WorkQueue } from '../kube/queue.js';
import { reconcilePrefix, type ReconcileDeps } from './prefix/reconcile.js';
import { SliceController } from './slices/controller.js';

export interface OperatorOptions {
  kubeConfig: KubeConfig;
  /** namespace of the operator: the agent ConfigMaps, the agents' DaemonSet and the Lease */
  namespace: string;
  /** the agents' DaemonSet (the chart's): its rollout is each prefix's Progressing */
  agentDaemonSet: string;
  /** namespace of the Events about prefixes (default: default) */
  eventsNamespace?: string;
  leaderElection?: { leaseName: string; leaseDurationMs: number; renewDeadlineMs: number; retryPeriodMs: number };
  identity?: string;
  cleanupTimeoutMs: number;
  staleAfterMs: number;
  resyncMs: number;
  log: Logger;
  metrics?: OperatorMetrics;
  /** run the slice allocator (default true) */
  slices?: boolean;
  /** the API client (default: one on kubeConfig); tests pass an in-memory API server */
  kube?: Kube;
  /** how the controllers watch (default: the API server through kube) */
  informers?: InformerFactory;
}

export interface Operator {
  readonly identity: string;
  readonly metrics: OperatorMetrics;
  /** resolves when the operator ends: 'stopped' by stop(), 'lost' when the Lease was lost */
  readonly done: Promise<'stopped' | 'lost'>;
  isLeader(): boolean;
  /** stops reconciling, releases the Lease */
  stop(): Promise<void>;
}

export function startOperator(o: OperatorOptions): Operator {
  const metrics = o.metrics ?? new OperatorMetrics();
  const identity = o.identity ?? defaultIdentity();
  const kube = o.kube ?? new Kube(o.kubeConfig);
  kube.onWrite = (verb, path, status) => metrics.countWrite(verb, path, status);
  const leaseKube = new Kube(o.kubeConfig);
  const elector = o.leaderElection
    ? new LeaderElector({
        kube: leaseKube,
        namespace: o.namespace,
        name: o.leaderElection.leaseName,
        identity,
        log: o.log,
        ...o.leaderElection,
      })
    : undefined;
  let controller: Controller | undefined;
  let stopping = false;

  const run = async (): Promise<'stopped' | 'lost'> => {
    if (elector && !(await elector.acquire())) return 'stopped';
    if (stopping) return 'stopped';
    metrics.leader.set(1);
    controller = new Controller(o, kube, metrics, identity);
    await controller.start();
    const outcome = elector ? await elector.holdUntilLost() : await controller.finished;
    metrics.leader.set(0);
    await controller.stop();
    return outcome === 'lost' ? 'lost' : 'stopped';
  };
  const done = run();

  return {
    identity,
    metrics,
    done,
    isLeader: () => (elector ? elector.isLeader : controller !== undefined),
    async stop() {
      stopping = true;
      await controller?.stop();
      await elector?.stop();
      if (!elector) controller?.finish();
      await done.catch(() => undefined);
    },
  };
}

class Controller {
  private readonly queue = new WorkQueue();
  private readonly prefixes: Watched<SixBed4Prefix>;
  private readonly nodes: Watched<KubeObject>;
  private readonly daemonSets: Watched<KubeObject>;
  private readonly leases: Watched<KubeObject>;
  private readonly leaseReports = new Map<string, string>();
  private readonly failoverLeases: Watched<KubeObject>;
  /** failover Lease -> its holder and transitions as last seen: a renewal alone changes neither */
  private readonly failoverHolders = new Map<string, string>();
  /** failover Lease -> the holder that released it last (holderIdentity emptied): a handover, told apart from a loss */
  private readonly failoverReleases = new Map<string, { by: string; reason?: string }>();
  private readonly configMaps: Watched<KubeObject>;
  private readonly recorder: EventRecorder;
  private readonly deps: ReconcileDeps;
  private readonly nodeFingerprints = new Map<string, string>();
  private readonly prefixSpecs = new Map<string, string>();
  private resyncTimer: NodeJS.Timeout | undefined;
  private worker: Promise<void> | undefined;
  private stopped = false;
  private finishResolve!: () => void;
  readonly finished = new Promise<void>((r) => (this.finishResolve = r));
  private readonly states = new Map<string, string>();
  private readonly slices: SliceController | undefined;
  private slicesStarted: Promise<void> | undefined;

  constructor(
    private readonly o: OperatorOptions,
    kube: Kube,
    private readonly metrics: OperatorMetrics,
    identity: string,
  ) {
    const log = o.log;
    const managed = `${LABEL_MANAGED_BY}=${MANAGED_BY}`;
    const informer = o.informers ?? apiInformers;
    this.prefixes = informer<SixBed4Prefix>(kube, PREFIXES_PATH, {
      name: 'sixbed4prefixes',
      log,
      onChange: (t, p) => this.onPrefix(t, p),
    });
    this.nodes = informer<KubeObject>(kube, paths.nodes, { name: 'nodes', log, onChange: (t, n) => this.onNode(t, n) });
    // The one agent DaemonSet: its rollout concerns every prefix.
    this.daemonSets = informer<KubeObject>(kube, paths.daemonSets(o.namespace), {
      name: 'daemonsets',
      fieldSelector: `metadata.name=${o.agentDaemonSet}`,
      log,
      onChange: () => this.enqueueAll(),
    });
    // Another prefix's shares matter too: two prefixes may not listen on one address and port of a node (plan.ts).
    this.configMaps = informer<KubeObject>(kube, paths.configMaps(o.namespace), {
      name: 'configmaps',
      labelSelector: managed,
      log,
      onChange: (_t, cm) => {
        this.ownerChanged(cm);
        this.enqueueAll();
      },
    });
    // The node agents' heartbeats and reports. A renewal alone changes nothing (each prefix looks again when a report
    // would go stale: status.ts); a changed report, a new Lease or one gone does.
    this.leases = informer<KubeObject>(kube, paths.leases(o.namespace), {
      name: 'agent leases',
      labelSelector: `${LABEL_COMPONENT}=agent-lease`,
      log,
      onChange: (t, l) => this.onAgentLease(t, l),
    });
    // The failover groups' Leases, renewed every renewIntervalMs by their active nodes: only a change of holder (or a
    // Lease made or gone) concerns the prefix; the renewals themselves are dropped here.
    this.failoverLeases = informer<KubeObject>(kube, paths.leases(o.namespace), {
      name: 'failover leases',
      labelSelector: `${LABEL_COMPONENT}=${FAILOVER_LEASE_COMPONENT}`,
      log,
      onChange: (t, l) => this.onFailoverLease(t, l),
    });
    this.recorder = new EventRecorder(kube, o.eventsNamespace ?? 'default', 'sixbed4-operator', identity, log);
    this.deps = this.reconcileDeps(kube, log);
    if (o.slices !== false) {
      this.slices = new SliceController({
        kube,
        log: log.child({ component: 'slices' }),
        recorder: this.recorder,
        metrics,
        prefixes: this.prefixes,
        nodes: this.nodes,
        resyncMs: o.resyncMs,
        ...(o.informers ? { informers: o.informers } : {}),
      });
    }
  }

  /** What reconcilePrefix reads and writes through: the client, this controller's caches, its recorder, settings. */
  private reconcileDeps(kube: Kube, log: Logger): ReconcileDeps {
    const o = this.o;
    return {
      kube,
      namespace: o.namespace,
      render: { namespace: o.namespace },
      agentDaemonSet: o.agentDaemonSet,
      prefixes: this.prefixes,
      nodes: this.nodes,
      daemonSets: this.daemonSets,
      configMaps: this.configMaps,
      leases: this.leases,
      failoverLeases: this.failoverLeases,
      failoverReleases: this.failoverReleases,
      recorder: this.recorder,
      log,
      cleanupTimeoutMs: o.cleanupTimeoutMs,
      staleAfterMs: o.staleAfterMs,
      seen: new Map(),
    };
  }

  /** An object labelled with its prefix (a ConfigMap, a failover Lease) changed: that prefix is looked at again. */
  private ownerChanged(obj: KubeObject): void {
    const prefix = obj.metadata.labels?.[LABEL_PREFIX];
    if (prefix) this.queue.add(prefix);
  }

  /** A node agent's Lease: a changed report, a new Lease or one gone concerns every prefix; a renewal alone does not. */
  private onAgentLease(t: ChangeType, l: KubeObject): void {
    const key = l.metadata.name ?? '';
    const reports = l.metadata.annotations?.[AGENT_REPORTS_ANNOTATION] ?? '';
    if (t === 'update' && this.leaseReports.get(key) === reports) return;
    if (t === 'delete') this.leaseReports.delete(key);
    else this.leaseReports.set(key, reports);
    this.enqueueAll();
  }

  /**
   * A failover group's Lease: a change of holder or transitions (or a Lease made or gone) concerns its prefix. A
   * holder emptied is remembered as a release by the previous holder (with the reason it gave), which status tells
   * apart from a loss.
   */
  private onFailoverLease(t: ChangeType, l: KubeObject): void {
    const key = l.metadata.name ?? '';
    const spec = (l as { spec?: { holderIdentity?: string; leaseTransitions?: number } }).spec ?? {};
    const now = `${spec.holderIdentity ?? ''}|${spec.leaseTransitions ?? 0}`;
    const before = this.failoverHolders.get(key);
    if (t === 'update' && before === now) return;
    const prevHolder = before?.split('|')[0];
    if (t === 'delete') {
      this.failoverHolders.delete(key);
      this.failoverReleases.delete(key);
    } else this.failoverHolders.set(key, now);
    if (prevHolder && !spec.holderIdentity && t !== 'delete') {
      const reason = l.metadata.annotations?.[RELEASE_REASON_ANNOTATION];
      this.failoverReleases.set(key, { by: prevHolder, ...(reason ? { reason } : {}) });
    }
    this.ownerChanged(l);
  }

  async start(): Promise<void> {
    const informers = [this.prefixes, this.nodes, this.daemonSets, this.configMaps, this.leases, this.failoverLeases];
    await Promise.all(informers.map((i) => i.start()));
    await Promise.all(informers.map((i) => i.synced));
    if (this.stopped) return; // stopped while waiting for a first list that may never come
    this.o.log.info('caches synced; reconciling', {
      prefixes: this.prefixes.list().length,
      nodes: this.nodes.list().length,
    });
    this.enqueueAll();
    this.worker = this.work();
    this.resyncTimer = setInterval(() => this.enqueueAll(), this.o.resyncMs);
    this.resyncTimer.unref();
    // not awaited: the prefixes are served even while the slice allocator's
    // watches cannot start (say, RBAC without pods and namespaces)
    this.slicesStarted = this.slices?.start().catch((e: Error) => {
      this.o.log.error(`slice allocator failed to start: ${e.message}`);
    });
  }

  finish(): void {
    this.finishResolve();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    this.queue.shutdown();
    // The informers first: that also releases a start() still waiting for its first lists.
    await Promise.all(
      [this.prefixes, this.nodes, this.daemonSets, this.configMaps, this.leases, this.failoverLeases].map((i) =>
        i.stop(),
      ),
    );
    await this.worker;
    await this.slices?.stop();
    await this.slicesStarted;
    await this.recorder.flush();
  }

  private enqueueAll(): void {
    for (const p of this.prefixes.list()) if (p.metadata.name) this.queue.add(p.metadata.name);
    this.metrics.queueDepth.set(this.queue.length);
  }

  private onPrefix(t: ChangeType, p: SixBed4Prefix): void {
    const name = p.metadata.name;
    if (!name) return;
    this.queue.add(name);
    const spec = typeof p.spec?.prefix === 'string' ? p.spec.prefix : '';
    const before = this.prefixSpecs.get(name);
    if (t === 'delete') {
      this.prefixSpecs.delete(name);
      this.states.delete(name);
      this.metrics.prefixSeen(name, undefined);
      this.deps.seen?.delete(paths.configMap(this.o.namespace, agentConfigMapName(name)));
      this.updateStateGauge();
    } else this.prefixSpecs.set(name, spec);
    // another prefix may overlap this one: let the others look again
    if (t !== 'update' || before !== spec) this.enqueueAll();
    this.slices?.prefixChanged(name);
  }

  private onNode(t: ChangeType, n: KubeObject): void {
    const name = n.metadata.name ?? '';
    const info = nodeInfo(n);
    // cordoned (kubectl drain) tells a failover's handover from a loss; IPv6 addresses are what a next hop must not be
    const fp = JSON.stringify([
      info.labels,
      info.address ?? null,
      info.internal ?? null,
      info.v6 ?? null,
      (n.spec as { unschedulable?: boolean } | undefined)?.unschedulable ?? false,
    ]);
    if (t === 'delete') this.nodeFingerprints.delete(name);
    else {
      if (t === 'update' && this.nodeFingerprints.get(name) === fp) return;
      this.nodeFingerprints.set(name, fp);
    }
    this.enqueueAll();
    this.slices?.nodesChanged();
  }

  private updateStateGauge(): void {
    this.metrics.prefixes.reset();
    for (const s of this.states.values()) this.metrics.prefixes.inc({ state: s });
  }

  private async work(): Promise<void> {
    for (;;) {
      const key = await this.queue.get();
      if (key === undefined) return;
      this.metrics.queueDepth.set(this.queue.length);
      const end = this.metrics.reconcileSeconds.startTimer();
      try {
        const r = await reconcilePrefix(this.deps, key);
        this.queue.forget(key);
        this.metrics.reconciles.inc({ result: 'success' });
        if (r.state) this.states.set(key, r.state);
        else this.states.delete(key);
        this.metrics.prefixSeen(key, r.view);
        this.updateStateGauge();
        if (r.requeueAfterMs !== undefined) this.queue.addAfter(key, r.requeueAfterMs);
      } catch (e) {
        this.metrics.reconciles.inc({ result: 'error' });
        this.metrics.reconcileErrors.inc();
        const delay = this.queue.addRateLimited(key);
        this.o.log.warn(`reconcile of ${key} failed; retrying in ${delay} ms: ${(e as Error).message}`, {
          prefix: key,
        });
      } finally {
        end();
        this.queue.done(key);
      }
    }
  }
}
