// The node agent of a SixBed4Prefix: makes this node what its share of the
// prefix says (host networking, then the router on the node's /64), keeps its
// entry in the prefix status current, and gives the host back when the prefix
// is deleted. The forwarding never depends on the API server: the config comes
// from mounted files and the router runs on whatever the API does; only status
// reports wait for it to come back.
import { access } from 'node:fs/promises';
import type { Logger } from '../log.js';
import { applyHost, revertHost } from '../host/apply.js';
import { hostConfig } from '../host/config.js';
import { readSavedState } from '../host/statefile.js';
import { routerConfig, startRouter, type RunningRouter } from '../router/router.js';
import { routerRegistry } from '../router/metrics.js';
import { Counters } from '../router/counters.js';
import { startMetricsServer, type MetricsServer } from '../metrics.js';
import { paths, type Kube } from '../../kube/client.js';
import { Informer } from '../../kube/informer.js';
import type { SixBed4Prefix } from '../../kube/api.js';
import { proxiedLocalAddresses } from '../ndp/policy.js';
import { readShare } from './config.js';
import { SliceAgent } from './slices.js';
import { reportNode, type AgentReport } from './status.js';

export interface AgentOptions {
  prefixName: string;
  node: string;
  configDir: string;
  /** Where the pre-change host state is kept (a hostPath in the cluster). */
  statePath: string;
  /** Prometheus metrics on host:port; while the port is held (by the agent this one replaces), retried every second. */
  metrics?: string;
  /** /healthz (and /metrics) on a Unix socket for the Pod's exec probes: always this agent's own answer. */
  healthSocket?: string;
  /** On stop, how long to wait for the next agent's router to take the tunnel over (default 20 s; 0: no wait). */
  handoverWaitMs?: number;
  /** How often the mounted config is read again. */
  pollMs?: number;
  /** How often the status entry is refreshed. */
  heartbeatMs?: number;
  /** The tunnel interface name. */
  tun?: string;
}

export interface RunningAgent { stop(): Promise<void>; }

export async function startAgent(kube: Kube, o: AgentOptions, log: Logger): Promise<RunningAgent> {
  let router: RunningRouter | null = null;
  let shareText: string | null = null;
  let hostApplied = false;
  let deleting = false;
  let reverted = false;
  let stopped = false;
  let lastProblem = '';
  let reportFailing = false;

  const report = async (r: AgentReport) => {
    try {
      await reportNode(kube, o.prefixName, o.node, { ...r, lastReport: new Date().toISOString() });
      if (reportFailing) log.info('status reports reach the API server again');
      reportFailing = false;
    } catch (err) {
      // The router keeps forwarding; the next heartbeat tries again.
      if (!reportFailing) log.warn(`cannot report status (will retry): ${(err as Error).message}`);
      reportFailing = true;
    }
  };
  const current = async (): Promise<AgentReport> => {
    if (reverted) return { ready: false, reverted: true, livePeers: 0, message: 'host reverted: the prefix is being deleted' };
    if (router) return { ready: true, reverted: false, livePeers: (await router.counters()).livePeers, message: 'forwarding' };
    return { ready: false, reverted: false, livePeers: 0, message: lastProblem || 'starting' };
  };

  const stopRouter = async (waitForSuccessorMs = 0) => {
    if (router) { const r = router; router = null; await r.stop({ waitForSuccessorMs }); }
  };

  /** Brings the node to what its share says; runs one at a time. */
  const converge = async () => {
    if (stopped) return;
    if (deleting) {
      if (reverted) return;
      await slices.releaseAll();
      await stopRouter();
      if (hostApplied || await stateFileExists(o.statePath)) {
        await revertHost({ log, statePath: o.statePath });
        log.info('host reverted: the prefix is being deleted');
      }
      hostApplied = false;
      reverted = true;
      await report(await current());
      return;
    }
    let share;
    try {
      share = await readShare(o.configDir, o.node);
    } catch (err) {
      lastProblem = `cannot read the agent config in ${o.configDir}: ${(err as Error).message}`;
      log.warn(lastProblem);
      return;
    }
    if (share.text === shareText && (router || !share.node)) return;
    await stopRouter();
    shareText = share.text;
    if (!share.node) {
      lastProblem = `no share of ${share.common.prefix} for node ${o.node}`;
      log.warn(lastProblem);
      await report(await current());
      return;
    }
    const n = share.node;
    try {
      const host = hostConfig({
        prefix: n.prefix, localAddresses: n.localAddresses, localAddressMode: n.localAddressMode, ndpProxy: n.ndpProxy,
        tunnel: o.tun ?? '6bed4', ...(n.uplink ? { uplink: n.uplink } : {}),
      });
      // A share for another prefix (the operator moved this node): give the host back first, then take the new one.
      const saved = await readSavedState(o.statePath);
      if (saved && saved.prefix !== host.prefix.text) {
        log.info(`this node's share moved from ${saved.prefix} to ${host.prefix.text}: reverting the host first`);
        await revertHost({ log, statePath: o.statePath });
      }
      const applied = await applyHost(host, { log, statePath: o.statePath });
      hostApplied = true;
      log.info(applied.plan.steps.length ? `host configured for ${n.prefix}` : `host already configured for ${n.prefix}`);
      router = await startRouter(routerConfig({
        prefix: n.prefix, listen: n.listen.address, port: n.listen.port, routes: n.routes, ...(o.tun ? { tun: o.tun } : {}),
        // A new agent Pod starts beside the old one (the DaemonSet surges): it takes the tunnel and the port over.
        handover: true,
        ...(n.ndpProxy !== 'off' ? { ndpProxy: { uplink: applied.plan.uplink, mode: n.ndpProxy, localAddresses: proxiedLocalAddresses(host) } } : {}),
      }), log);
      slices.start(n.prefix, router.proxy);
      lastProblem = '';
    } catch (err) {
      lastProblem = (err as Error).message;
      shareText = null; // try again at the next poll
      log.error(`cannot serve ${n.prefix} on this node: ${lastProblem}`);
    }
    await report(await current());
  };

  const slices = new SliceAgent(kube, { prefixName: o.prefixName, node: o.node, log });
  let chain = Promise.resolve();
  const kick = () => { chain = chain.then(converge).catch((err: Error) => { log.error(`agent: ${err.message}`); }); return chain; };

  // The prefix object tells us when it is being deleted (its finalizer waits for our revert).
  const informer = new Informer<SixBed4Prefix>(kube, paths.prefixes, {
    name: 'sixbed4prefixes', log,
    onChange: (type, p) => {
      if (p.metadata.name !== o.prefixName) return;
      if ((type === 'delete' || p.metadata.deletionTimestamp) && !deleting) {
        deleting = true;
        log.info(`prefix ${o.prefixName} is being deleted: stopping the router and reverting the host`);
        void kick();
      }
    },
  });
  void informer.start().catch((err: Error) => log.warn(`watching prefixes: ${err.message} (retrying)`));

  const zero = new Counters().snapshot();
  const registry = routerRegistry(async () => router ? router.counters() : zero);
  const healthy = () => router !== null || reverted;
  const servers: MetricsServer[] = [];
  if (o.healthSocket) servers.push(await startMetricsServer(o.healthSocket, registry, log, healthy));
  let metricsRetry: NodeJS.Timeout | undefined;
  if (o.metrics) {
    const listen = o.metrics;
    const tryMetrics = async (first: boolean): Promise<void> => {
      try {
        servers.push(await startMetricsServer(listen, registry, log, healthy));
        if (!first) log.info(`metrics port ${listen} free again: serving metrics`);
      } catch (err) {
        if (!/port in use/.test((err as Error).message)) throw err;
        if (first) log.info(`metrics ${listen}: the port is held (by the agent this one replaces?); retrying every second`);
        if (!stopped) metricsRetry = setTimeout(() => void tryMetrics(false).catch((e: Error) => log.warn(e.message)), 1000);
      }
    };
    await tryMetrics(true);
  }
  await kick();
  const poll = setInterval(() => void kick(), o.pollMs ?? 5000);
  const heartbeat = setInterval(() => {
    current().then(report).catch((err: Error) => log.warn(`heartbeat: ${err.message}`));
  }, o.heartbeatMs ?? 30_000);
  log.info('agent running', { prefix: o.prefixName, node: o.node, config: o.configDir });

  return {
    async stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(poll); clearInterval(heartbeat); clearTimeout(metricsRetry);
      await informer.stop();
      await chain;
      // Slices stay in place across agent restarts: the next agent finds and keeps them.
      await slices.stop();
      // A pod restart keeps the host as configured, and hands the tunnel to the next agent's router when one comes.
      await stopRouter(o.handoverWaitMs ?? 20_000);
      if (!reverted) await report({ ready: false, reverted: false, livePeers: 0, message: 'agent stopped' });
      for (const srv of servers.splice(0)) await srv.close();
      log.info('agent stopped');
    },
  };
}

async function stateFileExists(path: string): Promise<boolean> {
  try { await access(path); return true; } catch { return false; }
}
