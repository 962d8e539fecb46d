// A running 6bed4 router: opens the UDP sockets and the tunnel (in that order: the socket is the cheaper thing to
// undo and catches the commonest mistakes), runs the data path, serves metrics, and on stop removes everything it
// made. Its parts (parts.ts: the I/O backend, `ip`, the privileged kernel pieces) are handed in, so a test without
// root runs the same router on FakeIO.
import type { Registry } from 'prom-client';
import { native } from '../io/native.js';
import { formatIPv4, formatIPv6 } from '../../lib/ip.js';
import { InputError } from '../../lib/errors.js';
import type { Logger } from '../../lib/log.js';
import { startMetricsServer, type MetricsServer } from '../../lib/metrics-server.js';
import type { NdpResponder } from '../ndp/responder.js';
import { proxiedPeerAddresses } from '../ndp/policy.js';
import { makeAddress } from '../protocol/address.js';
import type { FastPath, PreparedFastPath } from '../bpf/fastpath.js';
import type { LiveReconfig, RouterConfig } from './config.js';
import { Counters, type CountersSnapshot } from './counters.js';
import type { EngineConfig } from './engine.js';
import { localTable, warnIfNotForwarding } from './hostinfo.js';
import type { LiveChange } from './live.js';
import { sameRanges } from './localtable.js';
import { routerRegistry } from './metrics.js';
import type { RouterParts } from './parts.js';
import { every, TaskFailures } from './periodic.js';
import { DEFAULT_RATE_LIMIT, newRateLimitState } from './ratelimit.js';
import { refusedRanges, type IPv4Range } from './refused.js';
import { openRouterSockets, steerSockets } from './sockets.js';
import { logStopped, reportStats } from './stats.js';
import { openTunnel, type Tunnel } from './tunnel.js';
import { Undo } from './undo.js';
import { forwardInline, forwardOnWorkers, type Forwarding, type LiveListener } from './workers.js';

export interface RunningRouter {
  /** The configuration as started, with what reconfigure() changed since. */
  readonly config: RouterConfig;
  readonly tunnel: Tunnel;
  /** The metrics server now (reconfigure may replace it). */
  readonly metrics?: MetricsServer;
  /** The neighbour proxy, when one runs (slices on this node add their addresses to it). */
  readonly proxy?: NdpResponder;
  /** The in-kernel fast path, when it runs. */
  readonly fastPath?: FastPath;
  /** Its metrics (served on --metrics when set; the node agent serves every prefix's router's with a prefix label). */
  readonly registry: Registry;
  counters(): Promise<CountersSnapshot>;
  /**
   * Changes routes, rate limits or the metrics address while peers keep forwarding (a reload). A new metrics
   * server is started before the old one closes; if it cannot start, the old one stays and this throws.
   */
  reconfigure(change: LiveReconfig): Promise<void>;
  /**
   * Stops forwarding. With handover and waitForSuccessorMs, first waits (up to that long) for a successor router
   * to claim the tunnel, and then leaves it the tunnel and its route; without a successor the tunnel goes.
   */
  stop(opts?: { waitForSuccessorMs?: number }): Promise<void>;
}

/** How often the host's local routing table is read again (addresses come and go with interfaces). */
const LOCAL_TABLE_REFRESH_MS = 5000;
/** How often peers the fast path forwarded for are handed to the live table: well within its two-minute expiry. */
const FAST_PATH_SEEN_MS = 1000;
/**
 * The most of each of those seconds the drain may take from the data path (the event loop's) when a flood of new
 * sources fills the seen map faster than that: the rest waits in the map for the next tick.
 */
const FAST_PATH_SEEN_BUDGET_MS = 20;
/** How often a stopping router with handover looks whether its successor has claimed the tunnel. */
const SUCCESSOR_POLL_MS = 100;

/**
 * One router, made by Router.start(): the fields below are set by the start steps, in their order, and a Router is
 * never handed out before all of them ran.
 */
export class Router implements RunningRouter {
  /** Periodic tasks' failures: logged once each, counted, never the end of the process (periodic.ts). */
  private readonly failures: TaskFailures;
  private readonly undo = new Undo();
  private current: RouterConfig;
  private stopped = false;
  /** The host's local addresses as last read: relays and sends to them are refused. */
  private local: IPv4Range[] = [];
  /** With several workers, each gets its own SO_REUSEPORT sockets and TUN queue: the kernel spreads flows. */
  private udpFds: number[] = [];
  private tun!: Tunnel;
  private proxied: NdpResponder | undefined;
  private fast: FastPath | undefined;
  private forwarding!: Forwarding;
  private metricsRegistry!: Registry;
  private metricsServer: MetricsServer | undefined;

  private constructor(
    private readonly cfg: RouterConfig,
    private readonly log: Logger,
    private readonly parts: RouterParts,
  ) {
    this.current = cfg;
    this.failures = new TaskFailures(log);
  }

  /** Starts a router on its parts; a start that fails removes what it made and throws. */
  static async start(cfg: RouterConfig, log: Logger, parts: RouterParts): Promise<Router> {
    const r = new Router(cfg, log, parts);
    await r.open();
    return r;
  }

  get config(): RouterConfig {
    return this.current;
  }
  get tunnel(): Tunnel {
    return this.tun;
  }
  get metrics(): MetricsServer | undefined {
    return this.metricsServer;
  }
  get proxy(): NdpResponder | undefined {
    return this.proxied;
  }
  get fastPath(): FastPath | undefined {
    return this.fast;
  }
  get registry(): Registry {
    return this.metricsRegistry;
  }

  counters(): Promise<CountersSnapshot> {
    return this.forwarding.counters();
  }

  async reconfigure(change: LiveReconfig): Promise<void> {
    if (change.metrics !== undefined && change.metrics !== (this.current.metrics ?? null))
      await this.moveMetrics(change.metrics);
    if (change.routes || change.rateLimit) {
      const live = {
        ...(change.routes ? { routes: change.routes } : {}),
        ...(change.rateLimit ? { rateLimit: change.rateLimit } : {}),
      };
      this.forwarding.setLive(live);
      this.current = { ...this.current, ...live };
    }
  }

  async stop(opts: { waitForSuccessorMs?: number } = {}): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const handedOver = await this.waitForSuccessor(opts.waitForSuccessorMs);
    const c = await this.forwarding.counters().catch(() => new Counters().snapshot());
    const fast = this.fast?.counters();
    await this.undo.run();
    logStopped(this.log, this.tun.name, handedOver, c, fast);
  }

  // --- start, step by step -------------------------------------------------

  private async open(): Promise<void> {
    if (!this.parts.privileged()) {
      throw new InputError(
        'sixbed4 router needs root (or CAP_NET_ADMIN) to create its tunnel interface: run it with sudo',
      );
    }
    this.udpFds = openRouterSockets(this.cfg, this.parts.io);
    this.undo.push(() => {
      for (const fd of this.udpFds) this.parts.io.close(fd);
    });
    try {
      this.local = await localTable(this.parts, this.log);
      const prepared = await this.prepareFastPath();
      await this.openTunnel();
      await this.startProxy();
      this.attachFastPath(prepared);
      await this.startForwarding();
      await this.serveMetrics();
      this.watchLocalTable();
      await warnIfNotForwarding(this.parts, this.log);
      this.undo.push(reportStats(() => this.forwarding.counters(), this.cfg.statsIntervalMs, this.log, this.failures));
      this.logReady();
    } catch (err) {
      await this.undo.run();
      throw err;
    }
  }

  /** Loaded and tested before anything is made, so a refusal leaves nothing behind. */
  private async prepareFastPath(): Promise<PreparedFastPath | undefined> {
    const { cfg } = this;
    const prepared = await this.parts.prepareFastPath(
      cfg.fastPath,
      {
        // What arrives on the uplink is addressed to the bound address and port (a DNAT in front, --advertise, has
        // already rewritten it), and what the router sends leaves from them; the advertised ones are its identity.
        bindIPv4: cfg.bindIPv4,
        bindPort: cfg.bindPort,
        ownIPv4: cfg.listenIPv4,
        ownPort: cfg.port,
        prefix: cfg.prefix.bytes,
        refused: refusedRanges(this.local, cfg.refusePrivate),
        ...(cfg.bindUplink ? { uplink: cfg.bindUplink } : {}),
        direct: cfg.fastPathDirect,
        xdp: cfg.fastPathXdp,
      },
      this.log,
    );
    if (prepared) this.undo.push(() => prepared.close());
    return prepared;
  }

  /** The router's own 6bed4 address: the /64 with its (advertised) IPv4:port and lanip 0. */
  private get address(): Uint8Array {
    return makeAddress(this.cfg.prefix.bytes, this.cfg.listenIPv4, this.cfg.port, 0);
  }

  private async openTunnel(): Promise<void> {
    const { cfg, parts } = this;
    this.tun = await openTunnel(cfg.tun, cfg.workers, this.address, cfg.prefix, this.log, {
      handover: cfg.handover,
      io: parts.io,
      ip: parts.ip,
      offload: cfg.tunOffload,
    });
    this.undo.push(() => this.tun.close());
  }

  private async startProxy(): Promise<void> {
    if (!this.cfg.ndpProxy) return;
    const proxy = await this.parts.startProxy(this.cfg, this.log);
    this.proxied = proxy;
    this.undo.push(() => proxy.stop());
  }

  /** Attached after the tunnel is up and detached before it goes: the program never redirects into a TUN that is gone. */
  private attachFastPath(prepared: PreparedFastPath | undefined): void {
    const fastPath = prepared?.attach(this.tun.name);
    if (!fastPath) return;
    this.fast = fastPath;
    this.undo.push(() => fastPath.stop());
  }

  /**
   * UDP_GRO on the sockets where the fast path does not run (with the TUN offload, which --tun-offload off turns off
   * with it): the kernel merges a peer's datagrams that come in together, and the data path cuts them again. Never
   * with the fast path: it takes single datagrams at tc ingress, after GRO, and leaves merged ones to the socket,
   * so merging would send the whole upload the slow way. Nor with the sockets steered (steer.ts): the steering
   * program checks each buffer as one datagram, which a merged one is not, and would put a flow's merged buffers in
   * other sockets than its single datagrams, out of order (until it takes merged ones as their first datagram).
   */
  private udpGro(): void {
    const io = this.parts.io;
    if (this.fast || !this.cfg.tunOffload || !io.udpGro) return;
    let on = 0;
    for (const fd of this.udpFds) if (io.udpGro(fd, true)) on++;
    if (on)
      this.log.info(`UDP_GRO on ${on} of ${this.udpFds.length} sockets: the kernel may hand over datagrams merged`);
  }

  private engineConfig(): EngineConfig {
    const { cfg } = this;
    return {
      prefix: cfg.prefix,
      listenIPv4: cfg.listenIPv4,
      port: cfg.port,
      routes: cfg.routes,
      refused: refusedRanges(this.local, cfg.refusePrivate),
      // One set of reply buckets for all workers: the overall cap stays one cap.
      rateLimitState: newRateLimitState(),
      rateLimit: { ...cfg.rateLimit, tableSize: DEFAULT_RATE_LIMIT.tableSize },
    };
  }

  /** The data path: inline on this thread with one worker, else on worker threads (which use the addon). */
  private async startForwarding(): Promise<void> {
    const { cfg, parts, tun, udpFds } = this;
    if (cfg.workers > 1 && parts.io !== native)
      throw new Error(
        'a router on another I/O backend than the addon runs one worker: its sockets live in this thread',
      );
    const steered = steerSockets(cfg, udpFds, parts.steer, this.log);
    if (!steered) this.udpGro();
    const forwarding =
      cfg.workers === 1
        ? forwardInline(
            this.engineConfig(),
            cfg.batch,
            udpFds,
            tun.fds[0]!,
            this.onLive(),
            parts.io,
            this.failures,
            steered,
          )
        : await this.forwardOnWorkers(steered);
    this.forwarding = forwarding;
    this.undo.push(() => forwarding.stop());
    this.watchFastPathSeen();
  }

  /** Each worker thread gets its own sockets and TUN queue; one that fails stops the router as a signal would. */
  private forwardOnWorkers(steered: boolean): Promise<Forwarding> {
    const { cfg, tun, udpFds } = this;
    return forwardOnWorkers(
      this.engineConfig(),
      cfg.batch,
      tun.fds.map((_, w) => udpFds.slice(w * cfg.sockets, (w + 1) * cfg.sockets)),
      tun.fds,
      this.onLive(),
      (err) => {
        // Stop the way a signal would, so the tunnel and its route go cleanly, and say why.
        this.log.error(`${err.message}: stopping the router`);
        process.exitCode = 1;
        process.kill(process.pid, 'SIGTERM');
      },
      this.failures,
      steered,
    );
  }

  /** With the neighbour proxy: it answers for a peer's addresses while the peer is live (policy.ts says which lanips). */
  private onLive(): LiveListener | undefined {
    const proxy = this.proxied;
    if (!proxy) return undefined;
    const addrs = (c: LiveChange) => proxiedPeerAddresses(makeAddress(this.cfg.prefix.bytes, c.ipv4, c.port, 0));
    return (added, removed) => {
      for (const c of added) for (const a of addrs(c)) proxy.add(a);
      for (const c of removed) for (const a of addrs(c)) proxy.remove(a);
    };
  }

  /** Peers the programs forwarded for, into the live table (the neighbour proxy answers for live peers). */
  private watchFastPathSeen(): void {
    const fastPath = this.fast;
    if (!fastPath) return;
    this.undo.push(
      every(
        'fast-path-seen',
        FAST_PATH_SEEN_MS,
        () => {
          const seen = fastPath.takeSeen(FAST_PATH_SEEN_BUDGET_MS);
          if (seen.length) this.forwarding.touchPeers(seen);
        },
        this.failures,
      ),
    );
  }

  private async serveMetrics(): Promise<void> {
    const { proxied: proxy, fast: fastPath } = this;
    this.metricsRegistry = routerRegistry(
      () => this.forwarding.counters(),
      proxy && (() => proxy.counters()),
      fastPath && (() => fastPath.counters()),
      this.failures,
    );
    if (this.cfg.metrics) this.metricsServer = await startMetricsServer(this.cfg.metrics, this.registry, this.log);
    this.undo.push(() => this.metricsServer?.close());
  }

  /** Relays and sends to any address of this host stay refused as its addresses change. */
  private watchLocalTable(): void {
    this.undo.push(
      every(
        'local-table',
        LOCAL_TABLE_REFRESH_MS,
        () =>
          localTable(this.parts, this.log).then((now) => {
            if (sameRanges(now, this.local)) return;
            this.local = now;
            const ranges = refusedRanges(this.local, this.cfg.refusePrivate);
            this.forwarding.setRefused(ranges);
            this.fast?.setRefused(ranges);
          }),
        this.failures,
      ),
    );
  }

  private logReady(): void {
    const { cfg } = this;
    this.log.info('router ready', {
      prefix: cfg.prefix.text,
      listen: `${formatIPv4(cfg.listenIPv4)}:${cfg.port}`,
      ...(cfg.bindIPv4 !== cfg.listenIPv4 || cfg.bindPort !== cfg.port
        ? { bind: `${formatIPv4(cfg.bindIPv4)}:${cfg.bindPort}` }
        : {}),
      address: formatIPv6(this.address),
      routes: cfg.routes.map((r) => r.text),
      tun: this.tun.name,
      workers: cfg.workers,
      batch: cfg.batch,
      fastPath: this.fast ? `on (${this.fast.uplink} ingress)` : 'off',
    });
  }

  // --- reconfigure and stop ------------------------------------------------

  /**
   * Make before break: the new address first, so a mistake leaves the old one serving. The same port on another
   * address of this host may conflict with the old one: then break first, and restore on failure.
   */
  private async moveMetrics(to: string | null): Promise<void> {
    const { log, registry } = this;
    const old = this.metricsServer;
    let next: MetricsServer | undefined;
    if (to !== null) {
      try {
        next = await startMetricsServer(to, registry, log);
      } catch (err) {
        if (!old || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
        await old.close();
        this.metricsServer = undefined;
        try {
          next = await startMetricsServer(to, registry, log);
        } catch (again) {
          this.metricsServer = await startMetricsServer(this.current.metrics!, registry, log);
          throw again;
        }
      }
    }
    this.metricsServer = next;
    await old?.close().catch(() => undefined); // (closed already when it had to go first: harmless)
    const { metrics: _, ...rest } = this.current;
    this.current = { ...rest, ...(to !== null ? { metrics: to } : {}) };
  }

  /**
   * Whether a successor router has claimed the tunnel; with handover and waitMs, waits up to that long for one to.
   * A successor that claimed it keeps it (and its route) when this router closes its queues.
   */
  private async waitForSuccessor(waitMs: number | undefined): Promise<boolean> {
    const claimed = () => this.tun.claimedByAnother().catch(() => false);
    let handedOver = await claimed();
    if (!this.cfg.handover || handedOver || !waitMs) return handedOver;
    this.log.info(`waiting up to ${waitMs} ms for the next router to take over ${this.tun.name}`);
    const until = Date.now() + waitMs;
    while (!handedOver && Date.now() < until) {
      await new Promise((r) => setTimeout(r, SUCCESSOR_POLL_MS));
      handedOver = await claimed();
    }
    return handedOver;
  }
}
