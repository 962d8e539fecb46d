// The node agent: one per node (the chart's DaemonSet, as MetalLB's speaker or Calico's node), serving every
// SixBed4Prefix that gives this node a share. It follows the operator's agent ConfigMaps (one per prefix) and the
// prefixes themselves, and runs one prefix agent (prefix.ts) per share: its own tunnel, listen address and host
// state. It keeps a copy of each share on the node's disk, so that after a restart with the API server away it
// serves what it served; and it serves metrics and the Pod's health.
import { join } from 'node:path';
import type { Logger } from '../../lib/log.js';
import { AgentRegistry } from './metrics.js';
import { startMetricsServer, type MetricsServer } from '../../lib/metrics-server.js';
import type { Registry } from 'prom-client';
import { KubeError, paths, type Kube } from '../../kube/client.js';
import { Informer, type ChangeType } from '../../kube/informer.js';
import { LABEL_MANAGED_BY, LABEL_PREFIX, MANAGED_BY, type KubeObject, type SixBed4Prefix } from '../../kube/api.js';
import { shareCache, shareFromData, type NodeShare } from './config.js';
import { startPrefixAgent, type PrefixAgent } from './prefix.js';
import { NodeLease } from './lease.js';
import { NodeReports } from './reports.js';
import { NodeCni } from './cni.js';
import { EventRecorder } from '../../kube/events.js';
import { cniMetrics, removeStaleSockets, startCniServer, type CniServer } from '../cni/server.js';
import { checkSlices } from '../../kube/slice-model.js';
import { install, uninstall, type PluginSettings } from '../cni/install.js';
import { removeInbound } from '../slices/inbound-apply.js';
import { FailoverMetrics } from '../failover/metrics.js';

export interface AgentOptions {
  node: string;
  /** Where the operator keeps the agent ConfigMaps (its namespace, the chart's release namespace). */
  namespace: string;
  /** The node's directory for saved host states and copies of the shares (a hostPath in the cluster). */
  stateDir: string;
  /** Serve only this prefix (a node dedicated to one, or a test). */
  prefixName?: string;
  /** The tunnel interface (default: the share's; only with prefixName). */
  tun?: string;
  /** Prometheus metrics on host:port; while the port is held (by the agent this one replaces), retried every second. */
  metrics?: string;
  /** /healthz (and /metrics) on a Unix socket for the Pod's exec probes: always this agent's own answer. */
  healthSocket?: string;
  /** On stop, how long to wait for the next agent's routers to take the tunnels over (default 20 s; 0: no wait). */
  handoverWaitMs?: number;
  /** How often every prefix converges again anyway (retries after failures). Default 5 s. */
  pollMs?: number;
  /** How often the node's heartbeat Lease is renewed, and each prefix's report compared with what was written. Default 10 s. */
  heartbeatMs?: number;
  /** Answer the sixbed4-cni shim on this Unix socket path (a symbolic link to this agent's own socket). */
  cniSocket?: string;
  /**
   * Keep the plugin installed (every minute: a primary CNI that rewrites its list drops our entry), and take it off
   * when this agent stops because its DaemonSet is being deleted (helm uninstall), not for an upgrade or a drain.
   */
  cniInstall?: { binDir: string; confDir: string; settings: PluginSettings; pluginBinary: string; daemonSet?: string };
}

export interface RunningAgent {
  stop(): Promise<void>;
}

type ConfigMap = KubeObject & { data?: Record<string, string> };

export async function startAgent(kube: Kube, o: AgentOptions, log: Logger): Promise<RunningAgent> {
  const agent = new NodeAgent(kube, o, log);
  await agent.start();
  return agent;
}

/**
 * Where the agent's idea of the node's shares comes from: the node's copies (at
 * start, with the API server perhaps away), then the API once both informers
 * have synced. Only then is a prefix without a ConfigMap really gone.
 */
type ShareSource = 'copies' | 'api';

/**
 * The agent's life: starting (until the first pass has started what the
 * node's shares say: not yet Ready), running, stopped (for good: nothing new is
 * started, the shares' agents have handed over or reverted).
 */
type Phase = 'starting' | 'running' | 'stopped';

class NodeAgent implements RunningAgent {
  private phase: Phase = 'starting';
  private source: ShareSource = 'copies';
  /** Each wanted prefix's agent ConfigMap data. */
  private readonly data = new Map<string, Record<string, string>>();
  /** Prefixes being deleted (their finalizer waits for our revert). */
  private readonly deleting = new Set<string>();
  private readonly agents = new Map<string, PrefixAgent>();
  private readonly reports = new NodeReports();
  /** Passes run one after the other: this is the last one asked for. */
  private converging: Promise<void> = Promise.resolve();
  private readonly configMaps: Informer<ConfigMap>;
  private readonly prefixes: Informer<SixBed4Prefix>;
  /** With the CNI plugin: this node's pods, for the repair of those that run without a slice. */
  private readonly podsOnNode: Informer<KubeObject> | undefined;
  private readonly timers: NodeJS.Timeout[] = [];
  private servers: { close(): Promise<void> } | undefined;
  private cni: CniServer | undefined;
  /** The failover members' metrics, in the agent's registry (made with it). */
  private failoverMetrics: FailoverMetrics | undefined;

  constructor(
    private readonly kube: Kube,
    private readonly o: AgentOptions,
    private readonly log: Logger,
  ) {
    this.configMaps = new Informer<ConfigMap>(kube, paths.configMaps(o.namespace), {
      name: 'agent configmaps',
      log,
      labelSelector: `${LABEL_PREFIX},${LABEL_MANAGED_BY}=${MANAGED_BY}`,
      onChange: (type, cm) => this.onConfigMap(type, cm),
    });
    this.podsOnNode = o.cniSocket
      ? new Informer<KubeObject>(kube, paths.allPods, {
          name: 'pods on this node',
          log,
          fieldSelector: `spec.nodeName=${o.node}`,
          onChange: () => undefined,
        })
      : undefined;
    this.prefixes = new Informer<SixBed4Prefix>(kube, paths.prefixes, {
      name: 'sixbed4prefixes',
      log,
      onChange: (type, p) => this.onPrefix(type, p),
    });
  }

  async start(): Promise<void> {
    const { o, log } = this;
    for (const [name, d] of await shareCache.load(o.stateDir)) if (this.wanted(name)) this.data.set(name, d);
    if (this.data.size)
      log.info(`serving from the node's copies until the API answers: ${[...this.data.keys()].join(', ')}`);

    void this.podsOnNode
      ?.start()
      .catch((err: Error) => log.warn(`watching this node's pods: ${err.message} (retrying)`));
    void this.prefixes.start().catch((err: Error) => log.warn(`watching prefixes: ${err.message} (retrying)`));
    void this.configMaps
      .start()
      .catch((err: Error) => log.warn(`watching agent ConfigMaps: ${err.message} (retrying)`));
    void Promise.all([this.configMaps.synced, this.prefixes.synced]).then(() => this.followApi());

    const registry = new AgentRegistry(() => [...this.agents].map(([prefix, a]) => ({ prefix, ...a.metricsSource() })));
    this.failoverMetrics = new FailoverMetrics(registry);
    // Ready only once the first pass has started what the node's shares say (its routers forward): a Pod that is
    // Ready with its routers still starting would let a rollout or a test go on too early.
    this.servers = await serve(
      o,
      log,
      registry,
      () => this.phase !== 'starting' && [...this.agents.values()].every((a) => a.healthy()),
      () => this.phase === 'stopped',
    );
    if (o.cniSocket) {
      const handler = new NodeCni(this.kube, {
        node: o.node,
        log: log.child({ component: 'cni' }),
        recorder: new EventRecorder(this.kube, 'default', 'sixbed4-agent', o.node, log),
        targets: () => [...this.agents].map(([name, a]) => ({ name, agent: a.slices, slices: this.slicesOf(name) })),
      });
      await removeStaleSockets(o.cniSocket);
      this.cni = await startCniServer(o.cniSocket, handler, log.child({ component: 'cni' }), cniMetrics(registry));
    }
    await this.keepPlugin();
    this.timers.push(setInterval(() => void this.keepPlugin(), 60_000));
    await this.kick();
    this.phase = 'running';
    this.timers.push(setInterval(() => void this.kick(), o.pollMs ?? 5000));
    const heartbeatMs = o.heartbeatMs ?? 10_000;
    this.reports.writeTo(
      new NodeLease(this.kube, { namespace: o.namespace, node: o.node, intervalMs: heartbeatMs, log }),
    );
    this.timers.push(setInterval(() => this.reports.send(), heartbeatMs));
    log.info('agent running', {
      node: o.node,
      namespace: o.namespace,
      ...(o.prefixName ? { prefix: o.prefixName } : {}),
    });
  }

  async stop(): Promise<void> {
    if (this.phase === 'stopped') return;
    this.phase = 'stopped';
    const { o, log } = this;
    for (const t of this.timers.splice(0)) clearInterval(t);
    await Promise.all([this.configMaps.stop(), this.prefixes.stop(), this.podsOnNode?.stop(), this.reports.written()]);
    await this.converging;
    // A pod restart keeps each host as configured and hands the tunnels to the next agent when it comes.
    await Promise.all([...this.agents.values()].map((a) => a.stop({ waitForSuccessorMs: o.handoverWaitMs ?? 20_000 })));
    await this.reports.written();
    await this.cni?.close();
    if (o.cniInstall?.daemonSet && (await daemonSetGoing(this.kube, o.namespace, o.cniInstall.daemonSet, log))) {
      for (const line of await uninstall(o.cniInstall)) log.info(`${line} (the agent DaemonSet is being deleted)`);
      await removeInbound().then(
        () => log.info("removed the slices' inbound filter table"),
        (err: Error) => log.warn(`removing the inbound filter: ${err.message}`),
      );
    }
    await this.servers?.close();
    log.info('agent stopped');
  }

  private wanted(name: string): boolean {
    return this.o.prefixName === undefined || name === this.o.prefixName;
  }

  private slicesOf(name: string) {
    return checkSlices(this.prefixes.get(name)?.spec?.slices).slices;
  }

  private onConfigMap(type: ChangeType, cm: ConfigMap): void {
    const name = cm.metadata.labels?.[LABEL_PREFIX];
    if (!name || !this.wanted(name)) return;
    if (type === 'delete') {
      this.data.delete(name);
      void shareCache.remove(this.o.stateDir, name).catch(() => undefined);
    } else {
      this.data.set(name, cm.data ?? {});
      void shareCache
        .save(this.o.stateDir, name, cm.data ?? {})
        .catch((err: Error) => this.log.warn(`keeping a copy of ${name}'s share: ${err.message}`));
    }
    void this.kick();
  }

  /** The prefixes say when one is being deleted (its finalizer waits for our revert). */
  private onPrefix(type: ChangeType, p: SixBed4Prefix): void {
    const name = p.metadata.name ?? '';
    if (!this.wanted(name) || this.deleting.has(name)) return;
    if (type === 'delete' || p.metadata.deletionTimestamp) {
      this.deleting.add(name);
      void this.kick();
    }
  }

  /** Both informers have synced: from now on the API says which shares there are. */
  private followApi(): void {
    if (this.phase === 'stopped') return;
    // What the copies held but the API no longer has: gone while this agent was away.
    for (const name of [...this.data.keys()]) {
      if (!this.configMaps.list().some((cm) => cm.metadata.labels?.[LABEL_PREFIX] === name)) {
        this.data.delete(name);
        void shareCache.remove(this.o.stateDir, name).catch(() => undefined);
      }
    }
    this.source = 'api';
    void this.kick();
  }

  /** Asks for a pass after those already asked for; settles (never rejects) when it is done. */
  private kick(): Promise<void> {
    this.converging = this.converging
      .then(() => this.converge())
      .catch((err: Error) => {
        this.log.error(`agent: ${err.message}`);
      });
    return this.converging;
  }

  private shareOf(name: string): NodeShare | null {
    const d = this.data.get(name);
    if (!d) return null;
    try {
      return shareFromData(d, this.o.node);
    } catch (err) {
      this.log.warn(`agent config of ${name}: ${(err as Error).message}`);
      return null;
    }
  }

  /** One pass: an agent for each share of this node, told of deletions; with the API's word, none for what is gone. */
  private async converge(): Promise<void> {
    if (this.phase === 'stopped') return;
    const { o, log } = this;
    for (const name of this.data.keys()) {
      let a = this.agents.get(name);
      if (!a) {
        if (!this.shareOf(name)?.node) continue; // this node has no share of it
        const podsOnNode = this.podsOnNode;
        a = await startPrefixAgent(
          this.kube,
          {
            prefixName: name,
            node: o.node,
            statePath: join(o.stateDir, `agent-${name}-${o.node}.json`),
            share: () => this.shareOf(name),
            report: (r) => this.reports.update(name, r),
            ...(o.tun ? { tun: o.tun } : {}),
            heartbeatMs: o.heartbeatMs ?? 10_000,
            ...(this.failoverMetrics ? { failover: { namespace: o.namespace, metrics: this.failoverMetrics } } : {}),
            ...(podsOnNode
              ? { sliceRepair: { slices: () => this.slicesOf(name), podsOnNode: () => podsOnNode.list() } }
              : {}),
          },
          log.child({ prefix: name }),
        );
        this.agents.set(name, a);
      } else {
        await a.kick();
      }
      if (this.deleting.has(name)) await a.deleting();
    }
    // A ConfigMap gone for good: the prefix was deleted (its agent reverted on seeing that) or is gone.
    if (this.source === 'copies') return;
    for (const [name, a] of this.agents) {
      if (this.data.has(name)) continue;
      if (!this.prefixes.get(name)) await a.deleting();
      await a.stop();
      this.agents.delete(name);
      this.reports.remove(name);
      log.info(`no longer serving ${name}`);
    }
  }

  private async keepPlugin(): Promise<void> {
    if (!this.o.cniInstall) return;
    try {
      const r = await install(this.o.cniInstall);
      if (r.changed)
        this.log.info(`sixbed4-cni installed: ${r.binary}${r.conflist ? `, chained into ${r.conflist}` : ''}`);
    } catch (err) {
      this.log.warn(`keeping sixbed4-cni installed: ${(err as Error).message}`);
    }
  }
}

/** Metrics (TCP, retried while the previous agent holds the port) and the health socket. */
async function serve(
  o: AgentOptions,
  log: Logger,
  registry: Registry,
  healthy: () => boolean,
  stopped: () => boolean,
): Promise<{ close(): Promise<void> }> {
  const servers: MetricsServer[] = [];
  if (o.healthSocket) servers.push(await startMetricsServer(o.healthSocket, registry, log, healthy));
  let retry: NodeJS.Timeout | undefined;
  if (o.metrics) {
    const listen = o.metrics;
    const attempt = async (first: boolean): Promise<void> => {
      try {
        servers.push(await startMetricsServer(listen, registry, log, healthy));
        if (!first) log.info(`metrics port ${listen} free again: serving metrics`);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
        if (first)
          log.info(`metrics ${listen}: the port is held (by the agent this one replaces?); retrying every second`);
        if (!stopped()) retry = setTimeout(() => void attempt(false).catch((e: Error) => log.warn(e.message)), 1000);
      }
    };
    await attempt(true);
  }
  return {
    async close() {
      clearTimeout(retry);
      for (const s of servers.splice(0)) await s.close();
    },
  };
}

/**
 * Whether sixbed4 is being uninstalled, not upgraded or drained: the agents' DaemonSet is gone or being deleted, or
 * the agent may no longer ask (helm deletes the RBAC objects and the ServiceAccount right after the DaemonSet, before
 * its Pods stop: a Forbidden or Unauthorized answer for our own DaemonSet means exactly that). An API that does not
 * answer says nothing: then the plugin stays.
 */
async function daemonSetGoing(kube: Kube, namespace: string, name: string, log: Logger): Promise<boolean> {
  try {
    const ds = await kube.get<KubeObject>(
      `/apis/apps/v1/namespaces/${encodeURIComponent(namespace)}/daemonsets/${encodeURIComponent(name)}`,
    );
    return !ds || ds.metadata.deletionTimestamp !== undefined;
  } catch (err) {
    if (err instanceof KubeError && (err.status === 401 || err.status === 403)) return true;
    log.warn(
      `cannot tell whether the agent DaemonSet is being deleted (${(err as Error).message}): leaving sixbed4-cni installed`,
    );
    return false;
  }
}
