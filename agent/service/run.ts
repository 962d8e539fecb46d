// `sixbed4 router --config FILE`: the single host as a service. Applies the
// host part of the file (make-before-break, as `sixbed4 host apply`), runs the
// router, tells systemd it is ready once the tunnel forwards, re-reads the file
// on SIGHUP, and on stop gives the host back exactly (unless --keep-host).
import { access } from 'node:fs/promises';
import type { Logger } from '../../lib/log.js';
import { applyHost, revertHost } from '../host/apply.js';
import { resolveUplink } from '../host/plan.js';
import { readHostState } from '../host/state.js';
import { defaultStatePath } from '../host/statefile.js';
import { hasNetAdmin } from '../host/privilege.js';
import { proxiedLocalAddresses } from '../ndp/policy.js';
import { InputError } from '../../lib/errors.js';
import { parsePrefix } from '../../lib/ip.js';
import { routerConfig, startRouter, type RunningRouter } from '../router/router.js';
import { loadServiceConfig, restartNeeded, type ServiceConfig } from './config.js';
import { monotonicUsec, sdNotify } from './notify.js';

export interface Service {
  readonly router: RunningRouter;
  /** The configuration in force (the last one a reload accepted). */
  readonly config: ServiceConfig;
  /** Re-reads the file and applies what can change while forwarding; resolves with what happened. */
  reload(): Promise<ReloadOutcome>;
  stop(): Promise<void>;
}

export type ReloadOutcome =
  | { result: 'applied'; changed: string[] }
  | { result: 'unchanged' }
  | { result: 'restart-needed'; fields: string[] }
  | { result: 'refused'; error: string };

export async function startService(file: string, opts: { keepHost: boolean; log: Logger }): Promise<Service> {
  const { log } = opts;
  let cfg = await loadServiceConfig(file);
  if (!hasNetAdmin()) throw new InputError('sixbed4 router --config changes the host\'s addresses and makes a tunnel: run it as root (or with CAP_NET_ADMIN)');
  const statePath = cfg.stateFile ?? defaultStatePath(resolveUplink(cfg.host, await readHostState()));
  const hadState = await exists(statePath);
  const applied = await applyHost(cfg.host, { log, statePath });
  log.info(applied.plan.steps.length ? `host configured for ${cfg.host.prefix.text} (state before: ${statePath})` : `host already configured for ${cfg.host.prefix.text}`);
  const uplink = applied.plan.uplink;
  let router: RunningRouter;
  try {
    router = await startRouter(routerConfig({
      ...cfg.router, metrics: cfg.metrics,
      ...(cfg.host.ndpProxy !== 'off' ? { ndpProxy: { uplink, mode: cfg.host.ndpProxy, localAddresses: proxiedLocalAddresses(cfg.host) } } : {}),
    }), log);
  } catch (err) {
    // Nothing half-applied (--keep-host is about a stop, not a failed start): the host goes back, unless it was
    // configured before this run (a state file was there: an earlier run kept it, or crashed).
    if (!hadState) await revertHost({ log, statePath }).catch((e: Error) => log.error(`reverting the host failed: ${e.message}`));
    throw err;
  }
  sdNotify({ READY: 1, STATUS: `forwarding ${cfg.host.prefix.text}`, MAINPID: process.pid }, log);

  let chain: Promise<unknown> = Promise.resolve();
  let stopped = false;

  const reloadNow = async (): Promise<ReloadOutcome> => {
    let next: ServiceConfig;
    try {
      next = await loadServiceConfig(file);
    } catch (err) {
      const error = (err as Error).message;
      log.error(`reload refused, the running configuration stays: ${error}`);
      return { result: 'refused', error };
    }
    const restart = restartNeeded(cfg, next);
    if (restart.length) {
      log.warn(`reload: ${restart.join('; ')} needs a restart (systemctl restart sixbed4-router); nothing changed, the running configuration stays`);
      return { result: 'restart-needed', fields: restart };
    }
    const changed: string[] = [];
    const sameList = (a: readonly string[], b: readonly string[]) => a.length === b.length && a.every((x, i) => x === b[i]);
    const oldMetrics = router.config.metrics ?? null;
    try {
      // In the order least likely to fail first; a failure undoes what came before it.
      if (cfg.metrics !== next.metrics) {
        await router.reconfigure({ metrics: next.metrics });
        changed.push(`metrics ${cfg.metrics} -> ${next.metrics}`);
      }
      const oldLocals = cfg.host.localAddresses.map((a) => a.text), newLocals = next.host.localAddresses.map((a) => a.text);
      if (!sameList(oldLocals, newLocals)) {
        try {
          await applyHost(next.host, { log, statePath });
        } catch (err) {
          if (changed.length) await router.reconfigure({ metrics: oldMetrics });
          throw err;
        }
        const gone = oldLocals.filter((a) => !newLocals.includes(a));
        // DummyInterface: the proxy answers for the new ones too (proxiedLocalAddresses). A removed address stays
        // on the host, in its port-0 form and still answered for, until the stop reverts the host exactly: its
        // original /64 form back on the uplink now would route the whole /64 to the uplink instead of the tunnel.
        const added = next.host.localAddresses.filter((a) => !oldLocals.includes(a.text));
        if (router.proxy) for (const a of proxiedLocalAddresses({ ...next.host, localAddresses: added })) router.proxy.add(a);
        if (gone.length) {
          log.info(`local address(es) ${gone.join(', ')} left the file: they keep their port-0 form until the router stops, when the host is reverted to exactly how it was`);
        }
        changed.push(`localAddresses [${oldLocals.join(', ')}] -> [${newLocals.join(', ')}]`);
      }
    } catch (err) {
      const error = (err as Error).message;
      log.error(`reload failed, the running configuration stays: ${error}`);
      return { result: 'refused', error };
    }
    const live: Parameters<RunningRouter['reconfigure']>[0] = {};
    if (!sameList(cfg.spec.routes, next.spec.routes)) {
      live.routes = next.spec.routes.map((r) => parsePrefix(r, 'route'));
      changed.push(`routes [${cfg.spec.routes.join(', ')}] -> [${next.spec.routes.join(', ')}]`);
    }
    const rl = routerConfig(next.router).rateLimit;
    if (JSON.stringify(rl) !== JSON.stringify(router.config.rateLimit)) {
      live.rateLimit = rl;
      changed.push(`replyRateLimit ${JSON.stringify(router.config.rateLimit)} -> ${JSON.stringify(rl)}`);
    }
    if (live.routes || live.rateLimit) await router.reconfigure(live);
    cfg = next;
    if (changed.length === 0) {
      log.info('reload: nothing changed');
      return { result: 'unchanged' };
    }
    log.info(`reloaded without stopping the data path: ${changed.join('; ')}`);
    return { result: 'applied', changed };
  };

  return {
    router,
    get config() { return cfg; },
    reload() {
      const p = chain.then(async (): Promise<ReloadOutcome> => {
        if (stopped) return { result: 'refused', error: 'the router is stopping' };
        sdNotify({ RELOADING: 1, MONOTONIC_USEC: monotonicUsec() }, log);
        try {
          return await reloadNow();
        } finally {
          sdNotify({ READY: 1, STATUS: `forwarding ${cfg.host.prefix.text}` }, log);
        }
      });
      chain = p.catch(() => undefined);
      return p;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      sdNotify({ STOPPING: 1 }, log);
      await chain;
      await router.stop();
      if (opts.keepHost) {
        log.info(`host kept as configured (--keep-host); undo with: sixbed4 host revert --state ${statePath}`);
        return;
      }
      const { plan } = await revertHost({ log, statePath });
      log.info(`host reverted to its state before the router started (${plan.steps.length} step(s))`);
    },
  };
}

async function exists(path: string): Promise<boolean> {
  try { await access(path); return true; } catch { return false; }
}
