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
import { routerConfig, startRouter, type RouterConfig, type RunningRouter } from '../router/router.js';
import type { HostConfig } from '../host/config.js';
import { loadServiceConfig, restartNeeded, type ServiceConfig } from './config.js';
import { monotonicUsec, sdNotify } from './notify.js';

export interface Service {
  readonly router: ServiceRouter;
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

/** What the service needs of the router: a fake stands in for it in tests without root. */
export type ServiceRouter = Pick<RunningRouter, 'config' | 'reconfigure' | 'stop'> & {
  readonly proxy?: Pick<NonNullable<RunningRouter['proxy']>, 'add'>;
};

/**
 * The parts the service is made of: the file, the host, the router, systemd. realServiceParts are the real ones;
 * test/service/run-unit.test.ts hands in fakes and checks what happens in which order (as wireguard-go's device
 * takes its tun and bind).
 */
export interface ServiceParts {
  loadConfig(file: string): Promise<ServiceConfig>;
  /** May this process change the host's addresses and make a tunnel? */
  privileged(): boolean;
  /** The state file for cfg: its stateFile, else named by the uplink. */
  statePath(cfg: ServiceConfig): Promise<string>;
  exists(path: string): Promise<boolean>;
  applyHost(
    host: HostConfig,
    opts: { log: Logger; statePath: string },
  ): Promise<{ plan: { uplink: string; steps: readonly unknown[] } }>;
  revertHost(opts: { log: Logger; statePath: string }): Promise<{ plan: { steps: readonly unknown[] } }>;
  startRouter(cfg: RouterConfig, log: Logger): Promise<ServiceRouter>;
  notify(fields: Record<string, string | number>, log: Logger): void;
}

export const realServiceParts: ServiceParts = {
  loadConfig: loadServiceConfig,
  privileged: hasNetAdmin,
  statePath: async (cfg) => cfg.stateFile ?? defaultStatePath(resolveUplink(cfg.host, await readHostState())),
  exists,
  applyHost: (host, opts) => applyHost(host, opts),
  revertHost,
  startRouter,
  notify: (fields, log) => {
    sdNotify(fields, log);
  },
};

export async function startService(
  file: string,
  opts: { keepHost: boolean; log: Logger },
  parts: ServiceParts = realServiceParts,
): Promise<Service> {
  return SingleHostService.start(file, opts, parts);
}

/** One host's router service: started by start(), reloads one at a time, stopped once. */
export class SingleHostService implements Service {
  private chain: Promise<unknown> = Promise.resolve();
  private stopped = false;

  private constructor(
    private readonly file: string,
    private readonly opts: { keepHost: boolean; log: Logger },
    private readonly parts: ServiceParts,
    readonly router: ServiceRouter,
    private cfg: ServiceConfig,
    private readonly statePath: string,
  ) {}

  /** Applies the host part, then starts the router; a failed start leaves the host as it found it. */
  static async start(
    file: string,
    opts: { keepHost: boolean; log: Logger },
    parts: ServiceParts,
  ): Promise<SingleHostService> {
    const { log } = opts;
    const cfg = await parts.loadConfig(file);
    if (!parts.privileged()) {
      throw new InputError(
        "sixbed4 router --config changes the host's addresses and makes a tunnel: run it as root (or with CAP_NET_ADMIN)",
      );
    }
    const statePath = await parts.statePath(cfg);
    const hadState = await parts.exists(statePath);
    const applied = await parts.applyHost(cfg.host, { log, statePath });
    log.info(
      applied.plan.steps.length
        ? `host configured for ${cfg.host.prefix.text} (state before: ${statePath})`
        : `host already configured for ${cfg.host.prefix.text}`,
    );
    const uplink = applied.plan.uplink;
    let router: ServiceRouter;
    try {
      router = await parts.startRouter(
        routerConfig({
          ...cfg.router,
          metrics: cfg.metrics,
          ...(cfg.host.ndpProxy !== 'off'
            ? { ndpProxy: { uplink, mode: cfg.host.ndpProxy, localAddresses: proxiedLocalAddresses(cfg.host) } }
            : {}),
        }),
        log,
      );
    } catch (err) {
      // Nothing half-applied (--keep-host is about a stop, not a failed start): the host goes back, unless it was
      // configured before this run (a state file was there: an earlier run kept it, or crashed).
      if (!hadState)
        await parts
          .revertHost({ log, statePath })
          .catch((e: Error) => log.error(`reverting the host failed: ${e.message}`));
      throw err;
    }
    parts.notify({ READY: 1, STATUS: `forwarding ${cfg.host.prefix.text}`, MAINPID: process.pid }, log);
    return new SingleHostService(file, opts, parts, router, cfg, statePath);
  }

  /** The configuration in force (the last one a reload accepted). */
  get config(): ServiceConfig {
    return this.cfg;
  }

  reload(): Promise<ReloadOutcome> {
    const { log } = this.opts;
    const p = this.chain.then(async (): Promise<ReloadOutcome> => {
      if (this.stopped) return { result: 'refused', error: 'the router is stopping' };
      this.parts.notify({ RELOADING: 1, MONOTONIC_USEC: monotonicUsec() }, log);
      try {
        return await this.reloadNow();
      } finally {
        this.parts.notify({ READY: 1, STATUS: `forwarding ${this.cfg.host.prefix.text}` }, log);
      }
    });
    this.chain = p.catch(() => undefined);
    return p;
  }

  async stop(): Promise<void> {
    const { log } = this.opts;
    if (this.stopped) return;
    this.stopped = true;
    this.parts.notify({ STOPPING: 1 }, log);
    await this.chain;
    await this.router.stop();
    if (this.opts.keepHost) {
      log.info(`host kept as configured (--keep-host); undo with: sixbed4 host revert --state ${this.statePath}`);
      return;
    }
    const { plan } = await this.parts.revertHost({ log, statePath: this.statePath });
    log.info(`host reverted to its state before the router started (${plan.steps.length} step(s))`);
  }

  /** Re-reads the file; applies what may change while forwarding, or nothing at all. */
  private async reloadNow(): Promise<ReloadOutcome> {
    const { log } = this.opts;
    let next: ServiceConfig;
    try {
      next = await this.parts.loadConfig(this.file);
    } catch (err) {
      const error = (err as Error).message;
      log.error(`reload refused, the running configuration stays: ${error}`);
      return { result: 'refused', error };
    }
    const restart = restartNeeded(this.cfg, next);
    if (restart.length) {
      log.warn(
        `reload: ${restart.join('; ')} needs a restart (systemctl restart sixbed4-router); nothing changed, the running configuration stays`,
      );
      return { result: 'restart-needed', fields: restart };
    }
    const changed: string[] = [];
    try {
      await this.reloadHostSide(next, changed);
    } catch (err) {
      const error = (err as Error).message;
      log.error(`reload failed, the running configuration stays: ${error}`);
      return { result: 'refused', error };
    }
    changed.push(...(await this.reloadRouterLive(next)));
    this.cfg = next;
    if (changed.length === 0) {
      log.info('reload: nothing changed');
      return { result: 'unchanged' };
    }
    log.info(`reloaded without stopping the data path: ${changed.join('; ')}`);
    return { result: 'applied', changed };
  }

  /**
   * The metrics address, then the local addresses: the order least likely to fail first; a failure undoes what
   * came before it. Appends what changed.
   */
  private async reloadHostSide(next: ServiceConfig, changed: string[]): Promise<void> {
    const { log } = this.opts;
    const cfg = this.cfg,
      router = this.router;
    const oldMetrics = router.config.metrics ?? null;
    if (cfg.metrics !== next.metrics) {
      await router.reconfigure({ metrics: next.metrics });
      changed.push(`metrics ${cfg.metrics} -> ${next.metrics}`);
    }
    const oldLocals = cfg.host.localAddresses.map((a) => a.text),
      newLocals = next.host.localAddresses.map((a) => a.text);
    if (sameList(oldLocals, newLocals)) return;
    try {
      await this.parts.applyHost(next.host, { log, statePath: this.statePath });
    } catch (err) {
      if (changed.length) await router.reconfigure({ metrics: oldMetrics });
      throw err;
    }
    const gone = oldLocals.filter((a) => !newLocals.includes(a));
    // DummyInterface: the proxy answers for the new ones too (proxiedLocalAddresses). A removed address stays
    // on the host, in its port-0 form and still answered for, until the stop reverts the host exactly: its
    // original /64 form back on the uplink now would route the whole /64 to the uplink instead of the tunnel.
    const added = next.host.localAddresses.filter((a) => !oldLocals.includes(a.text));
    if (router.proxy)
      for (const a of proxiedLocalAddresses({ ...next.host, localAddresses: added })) router.proxy.add(a);
    if (gone.length) {
      log.info(
        `local address(es) ${gone.join(', ')} left the file: they keep their port-0 form until the router stops, when the host is reverted to exactly how it was`,
      );
    }
    changed.push(`localAddresses [${oldLocals.join(', ')}] -> [${newLocals.join(', ')}]`);
  }

  /** Routes and rate limits: the router takes them while forwarding. Returns what changed. */
  private async reloadRouterLive(next: ServiceConfig): Promise<string[]> {
    const cfg = this.cfg,
      router = this.router;
    const changed: string[] = [];
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
    return changed;
  }
}

const sameList = (a: readonly string[], b: readonly string[]) => a.length === b.length && a.every((x, i) => x === b[i]);

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
