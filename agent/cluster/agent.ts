// The node agent: one per node (the chart's DaemonSet, as MetalLB's speaker or Calico's node), serving every
// SixBed4Prefix that gives this node a share. It follows the operator's agent ConfigMaps (one per prefix) and the
// prefixes themselves, and runs one prefix agent (prefix.ts) per share: its own tunnel, listen address and host
// state. It keeps a copy of each share on the node's disk, so that after a restart with the API server away it
// serves what it served; and it serves metrics and the Pod's health.
import { join } from 'node:path';
import type { Logger } from '../log.js';
import { Counters, type CountersSnapshot } from '../router/counters.js';
import { routerRegistry } from '../router/metrics.js';
import { startMetricsServer, type MetricsServer } from '../metrics.js';
import type { Registry } from 'prom-client';
import { KubeError, paths, type Kube } from '../../kube/client.js';
import { Informer } from '../../kube/informer.js';
import { LABEL_MANAGED_BY, LABEL_PREFIX, MANAGED_BY, type AgentReport, type KubeObject, type SixBed4Prefix } from '../../kube/api.js';
import { shareCache, shareFromData, type NodeShare } from './config.js';
import { startPrefixAgent, type PrefixAgent } from './prefix.js';
import { NodeLease } from './lease.js';
import { NodeCni } from './cni.js';
import { EventRecorder } from '../../kube/events.js';
import { cniMetrics, removeStaleSockets, startCniServer, type CniServer } from '../cni/server.js';
import { checkSlices } from '../../operator/slices/model.js';
import { install, uninstall, type PluginSettings } from '../cni/install.js';
import { removeInbound } from '../slices/inbound-apply.js';

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

export interface RunningAgent { stop(): Promise<void>; }

type ConfigMap = KubeObject & { data?: Record<string, string> };

export async function startAgent(kube: Kube, o: AgentOptions, log: Logger): Promise<RunningAgent> {
  const wanted = (name: string) => o.prefixName === undefined || name === o.prefixName;
  const data = new Map<string, Record<string, string>>();
  const deleting = new Set<string>();
  const agents = new Map<string, PrefixAgent>();
  // Each prefix's report as last sent in the node's Lease; a change goes out at once.
  const reports: Record<string, AgentReport> = {};
  let sendReports = (): void => undefined;
  const report = (name: string) => (r: AgentReport) => {
    const prev = reports[name];
    const { lastReport: _l, ...before } = prev ?? {};
    if (prev && JSON.stringify(before) === JSON.stringify(r)) return;
    reports[name] = { ...r, lastReport: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z') };
    sendReports();
  };
  let stopped = false;
  let configSynced = false;

  for (const [name, d] of await shareCache.load(o.stateDir)) if (wanted(name)) data.set(name, d);
  if (data.size) log.info(`serving from the node's copies until the API answers: ${[...data.keys()].join(', ')}`);

  const shareOf = (name: string) => (): NodeShare | null => {
    const d = data.get(name);
    if (!d) return null;
    try {
      return shareFromData(d, o.node);
    } catch (err) {
      log.warn(`agent config of ${name}: ${(err as Error).message}`);
      return null;
    }
  };

  const converge = async () => {
    if (stopped) return;
    for (const name of data.keys()) {
      let a = agents.get(name);
      if (!a) {
        if (!shareOf(name)()?.node) continue; // this node has no share of it
        a = await startPrefixAgent(kube, {
          prefixName: name, node: o.node, statePath: join(o.stateDir, `agent-${name}-${o.node}.json`), share: shareOf(name), report: report(name),
          ...(o.tun ? { tun: o.tun } : {}), heartbeatMs: o.heartbeatMs ?? 10_000,
          ...(podsOnNode ? { sliceRepair: { slices: () => checkSlices(prefixes.get(name)?.spec?.slices).slices, podsOnNode: () => podsOnNode!.list() } } : {}),
        }, log.child({ prefix: name }));
        agents.set(name, a);
      } else {
        await a.kick();
      }
      if (deleting.has(name)) await a.deleting();
    }
    // A ConfigMap gone for good: the prefix was deleted (its agent reverted on seeing that) or is gone.
    if (!configSynced) return;
    for (const [name, a] of agents) {
      if (data.has(name)) continue;
      if (!prefixes.get(name)) await a.deleting();
      await a.stop();
      agents.delete(name);
      delete reports[name];
      sendReports();
      log.info(`no longer serving ${name}`);
    }
  };
  let chain = Promise.resolve();
  const kick = () => { chain = chain.then(converge).catch((err: Error) => { log.error(`agent: ${err.message}`); }); return chain; };

  const configMaps = new Informer<ConfigMap>(kube, paths.configMaps(o.namespace), {
    name: 'agent configmaps', log, labelSelector: `${LABEL_PREFIX},${LABEL_MANAGED_BY}=${MANAGED_BY}`,
    onChange: (type, cm) => {
      const name = cm.metadata.labels?.[LABEL_PREFIX];
      if (!name || !wanted(name)) return;
      if (type === 'delete') {
        data.delete(name);
        void shareCache.remove(o.stateDir, name).catch(() => undefined);
      } else {
        data.set(name, cm.data ?? {});
        void shareCache.save(o.stateDir, name, cm.data ?? {}).catch((err: Error) => log.warn(`keeping a copy of ${name}'s share: ${err.message}`));
      }
      void kick();
    },
  });
  // With the CNI plugin: this node's pods, for the repair of those that run without a slice.
  const podsOnNode = o.cniSocket
    ? new Informer<KubeObject>(kube, paths.allPods, { name: 'pods on this node', log, fieldSelector: `spec.nodeName=${o.node}`, onChange: () => undefined })
    : undefined;
  void podsOnNode?.start().catch((err: Error) => log.warn(`watching this node's pods: ${err.message} (retrying)`));
  // The prefixes say when one is being deleted (its finalizer waits for our revert).
  const prefixes = new Informer<SixBed4Prefix>(kube, paths.prefixes, {
    name: 'sixbed4prefixes', log,
    onChange: (type, p) => {
      const name = p.metadata.name ?? '';
      if (!wanted(name) || deleting.has(name)) return;
      if (type === 'delete' || p.metadata.deletionTimestamp) {
        deleting.add(name);
        void kick();
      }
    },
  });
  void prefixes.start().catch((err: Error) => log.warn(`watching prefixes: ${err.message} (retrying)`));
  void configMaps.start().catch((err: Error) => log.warn(`watching agent ConfigMaps: ${err.message} (retrying)`));
  void Promise.all([configMaps.synced, prefixes.synced]).then(() => {
    if (stopped) return;
    // What the copies held but the API no longer has: gone while this agent was away.
    for (const name of [...data.keys()]) {
      if (!configMaps.list().some((cm) => cm.metadata.labels?.[LABEL_PREFIX] === name)) {
        data.delete(name);
        void shareCache.remove(o.stateDir, name).catch(() => undefined);
      }
    }
    configSynced = true;
    void kick();
  });

  const registry = routerRegistry(async () => sumCounters(await Promise.all([...agents.values()].map((a) => a.counters()))));
  // Ready only once the first pass has started what the node's shares say (its routers forward): a Pod that is
  // Ready with its routers still starting would let a rollout or a test go on too early.
  let firstPass = false;
  const servers = await serve(o, log, registry, () => firstPass && [...agents.values()].every((a) => a.healthy()), () => stopped);
  let cni: CniServer | undefined;
  if (o.cniSocket) {
    const handler = new NodeCni(kube, {
      node: o.node, log: log.child({ component: 'cni' }), recorder: new EventRecorder(kube, 'default', 'sixbed4-agent', o.node, log),
      targets: () => [...agents].map(([name, a]) => ({ name, agent: a.slices, slices: checkSlices(prefixes.get(name)?.spec?.slices).slices })),
    });
    await removeStaleSockets(o.cniSocket);
    cni = await startCniServer(o.cniSocket, handler, log.child({ component: 'cni' }), cniMetrics(registry));
  }
  const keepPlugin = async () => {
    if (!o.cniInstall) return;
    try {
      const r = await install(o.cniInstall);
      if (r.changed) log.info(`sixbed4-cni installed: ${r.binary}${r.conflist ? `, chained into ${r.conflist}` : ''}`);
    } catch (err) {
      log.warn(`keeping sixbed4-cni installed: ${(err as Error).message}`);
    }
  };
  await keepPlugin();
  const pluginTimer = setInterval(() => void keepPlugin(), 60_000);
  await kick();
  firstPass = true;
  const poll = setInterval(() => void kick(), o.pollMs ?? 5000);
  const heartbeatMs = o.heartbeatMs ?? 10_000;
  const lease = new NodeLease(kube, { namespace: o.namespace, node: o.node, intervalMs: heartbeatMs, log });
  // One write at a time; a report that changes while one is on its way goes with the next.
  let renewing = lease.renew(reports);
  let queued = false;
  sendReports = () => {
    if (queued) return;
    queued = true;
    renewing = renewing.then(() => { queued = false; return lease.renew(reports); });
  };
  const heartbeat = setInterval(sendReports, heartbeatMs);
  log.info('agent running', { node: o.node, namespace: o.namespace, ...(o.prefixName ? { prefix: o.prefixName } : {}) });

  return {
    async stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(poll); clearInterval(heartbeat); clearInterval(pluginTimer);
      await Promise.all([configMaps.stop(), prefixes.stop(), podsOnNode?.stop(), renewing]);
      await chain;
      // A pod restart keeps each host as configured and hands the tunnels to the next agent when it comes.
      await Promise.all([...agents.values()].map((a) => a.stop({ waitForSuccessorMs: o.handoverWaitMs ?? 20_000 })));
      await renewing;
      await cni?.close();
      if (o.cniInstall?.daemonSet && await daemonSetGoing(kube, o.namespace, o.cniInstall.daemonSet, log)) {
        for (const line of await uninstall(o.cniInstall)) log.info(`${line} (the agent DaemonSet is being deleted)`);
        await removeInbound().then(() => log.info('removed the slices\' inbound filter table'), (err: Error) => log.warn(`removing the inbound filter: ${err.message}`));
      }
      await servers.close();
      log.info('agent stopped');
    },
  };
}

/** Metrics (TCP, retried while the previous agent holds the port) and the health socket. */
async function serve(o: AgentOptions, log: Logger, registry: Registry, healthy: () => boolean,
  stopped: () => boolean): Promise<{ close(): Promise<void> }> {
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
        if (!/port in use/.test((err as Error).message)) throw err;
        if (first) log.info(`metrics ${listen}: the port is held (by the agent this one replaces?); retrying every second`);
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
    const ds = await kube.get<KubeObject>(`/apis/apps/v1/namespaces/${encodeURIComponent(namespace)}/daemonsets/${encodeURIComponent(name)}`);
    return !ds || ds.metadata.deletionTimestamp !== undefined;
  } catch (err) {
    if (err instanceof KubeError && (err.status === 401 || err.status === 403)) return true;
    log.warn(`cannot tell whether the agent DaemonSet is being deleted (${(err as Error).message}): leaving sixbed4-cni installed`);
    return false;
  }
}

/** The node's totals over its prefixes. */
function sumCounters(all: CountersSnapshot[]): CountersSnapshot {
  const sum = new Counters();
  for (const s of all) sum.add(s);
  return sum.snapshot();
}
