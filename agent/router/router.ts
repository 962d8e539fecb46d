// A running 6bed4 router: validates its configuration, opens the UDP socket
// and the tunnel (in that order: the socket is the cheaper thing to undo and
// catches the commonest mistakes), runs the data path, serves metrics, and on
// stop removes everything it made.
import { native } from '../io/native.js';
import { steerGroup } from './steer-ebpf.js';
import {
  formatIPv4,
  formatIPv6,
  parseIPv4,
  parseIPv4Port,
  parsePrefix,
  parsePrefix64,
  type Prefix,
} from '../../lib/ip.js';
import { InputError } from '../../lib/errors.js';
import { ROUTER_PORT } from '../protocol/constants.js';
import { hasNetAdmin, hasNetRaw } from '../host/privilege.js';
import { confValue, readIpv6Conf } from '../host/sysctl.js';
import { ndpProxyModeOf } from '../../kube/modes.js';
import { NdpResponder, type ResponderMode } from '../ndp/responder.js';
import { proxiedPeerAddresses } from '../ndp/policy.js';
import type { LiveChange } from './live.js';
import { startMetricsServer, type MetricsServer } from '../../lib/metrics-server.js';
import type { Logger } from '../../lib/log.js';
import type { EngineConfig } from './engine.js';
import { forwardInline, forwardOnWorkers, type LiveListener } from './workers.js';
import { makeAddress } from '../protocol/address.js';
import { openTunnel, type Tunnel } from './tunnel.js';
import { routerRegistry } from './metrics.js';
import type { Registry } from 'prom-client';
import { Counters, type CountersSnapshot } from './counters.js';
import { readLocalTable, sameRanges } from './localtable.js';
import { DEFAULT_RATE_LIMIT, newRateLimitState, type RateLimitConfig } from './ratelimit.js';
import { type IPv4Range, refusedRanges } from './refused.js';
import { every, TaskFailures } from './periodic.js';
import { fastPathModeOf, prepareFastPath, type FastPath, type FastPathMode } from '../bpf/fastpath.js';

/**
 * UDP sockets per worker. The kernel spreads flows over them by hash, so a
 * flooding source shares its socket (and its losses) with about 1/8 of the
 * other peers instead of all of them (measured: bench/flood.ts).
 */
const DEFAULT_SOCKETS = 8;

/** How often the host's local routing table is read again (addresses come and go with interfaces). */
const LOCAL_TABLE_REFRESH_MS = 5000;

/** RA = 40 + 16 + 32 per prefix option (the peer's /114 and each route) ≤ 1280. */
const MAX_ROUTES = Math.floor((1280 - 40 - 16) / 32) - 1;

export interface RouterOptions {
  prefix: string;
  /** The IPv4 address peers send to: the router's identity (its 6bed4 address embeds it). */
  listen: string;
  /**
   * The local IPv4 address to bind when it is not the listen address: behind a 1:1 NAT (a cloud's public IP in
   * front of the node's private one), peers send to the public address and the router receives on the private one.
   */
  bind?: string;
  /**
   * IPV4[:PORT] peers send to when a DNAT (or a NAT64 box) in front of the router forwards it to the bound address
   * and port: the router's identity (its 6bed4 address, the addresses in its RAs) is built from this one. The same
   * mechanism as bind, with the port free to differ too; the port defaults to `port`.
   */
  advertise?: string;
  port?: number;
  routes?: string[];
  tun?: string;
  metrics?: string;
  batch?: number;
  workers?: number;
  /** Neighbour proxy on the uplink, for upstreams that treat the /64 as on-link. */
  ndpProxy?: { uplink: string; mode?: string; localAddresses?: Uint8Array[] };
  /** How often a statistics line is logged while traffic flows (default 60 s). */
  statsIntervalMs?: number;
  /** Also refuse relays and sends to private IPv4 ranges (refused.ts), for routers on public addresses. */
  refusePrivate?: boolean;
  /** SO_REUSEPORT sockets per worker (fairness under a flood: see datapath.ts). Default 8. */
  sockets?: number;
  /**
   * Restart without a gap: adopt the tunnel and share the UDP port (SO_REUSEPORT) that a previous router of this
   * host holds, and on stop leave both to a successor that claimed them (tunnel.ts).
   */
  handover?: boolean;
  /** Reply rate limits (RA, NA, ICMPv6 errors); default DEFAULT_RATE_LIMIT. */
  rateLimit?: Omit<RateLimitConfig, 'tableSize'>;
  /** The in-kernel fast path (agent/bpf/): auto (the default), on or off. */
  fastPath?: string;
  /**
   * Bind the listen (or bind) address even while it is not on this host (IP_FREEBIND): a failover standby runs
   * ready on the floating address that only the active member holds (agent/failover/).
   */
  freebind?: boolean;
  /** With freebind: the uplink the bound address comes and goes on (its fast path is attached there at once). */
  bindUplink?: string;
  /** With it: peers' packets the kernel would forward go straight to the egress (docs/router.md, --fast-path-direct). */
  fastPathDirect?: boolean;
}

export interface RouterConfig {
  prefix: Prefix;
  listenIPv4: number;
  /** where the UDP sockets bind (listenIPv4 unless --bind or --advertise) */
  bindIPv4: number;
  /** the port peers send to: the router's identity with listenIPv4 */
  port: number;
  /** the UDP port bound (port unless --advertise names another) */
  bindPort: number;
  routes: Prefix[];
  tun: string;
  metrics?: string;
  batch: number;
  workers: number;
  ndpProxy?: { uplink: string; mode: ResponderMode; localAddresses: Uint8Array[] };
  statsIntervalMs: number;
  refusePrivate: boolean;
  sockets: number;
  handover: boolean;
  rateLimit: Omit<RateLimitConfig, 'tableSize'>;
  fastPath: FastPathMode;
  freebind: boolean;
  bindUplink?: string;
  fastPathDirect: boolean;
}

/** What a reload changes while the data path keeps forwarding (the rest needs a restart). */
export interface LiveReconfig {
  routes?: Prefix[];
  rateLimit?: Omit<RateLimitConfig, 'tableSize'>;
  /** host:port to serve metrics on; null: stop serving them. */
  metrics?: string | null;
}

/** Turns user input into a checked configuration; every error names the flag and the fix. */
export function routerConfig(o: RouterOptions): RouterConfig {
  if (!o.prefix)
    throw new InputError('--prefix is required: the /64 this router serves, e.g. --prefix 2001:db8:9:10::/64');
  if (!o.listen)
    throw new InputError("--listen is required: this host's public IPv4 address, e.g. --listen 198.51.100.1");
  const port = o.port ?? ROUTER_PORT;
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new InputError(`--port ${o.port} is not a UDP port: use 1..65535 (6bed4's default is ${ROUTER_PORT})`);
  }
  const tun = o.tun ?? '6bed4';
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(tun) || tun === '.' || tun === '..') {
    throw new InputError(`--tun '${tun}' is not a usable interface name (1-15 letters, digits, '_', '-', '.')`);
  }
  const batch = o.batch ?? 64;
  if (!Number.isInteger(batch) || batch < 1 || batch > 256) throw new InputError(`--batch ${o.batch}: use 1..256`);
  const sockets = o.sockets ?? DEFAULT_SOCKETS;
  if (!Number.isInteger(sockets) || sockets < 1 || sockets > 64)
    throw new InputError(`--sockets ${o.sockets}: use 1..64`);
  const workers = o.workers ?? 1;
  if (!Number.isInteger(workers) || workers < 1 || workers > 64)
    throw new InputError(`--workers ${o.workers}: use 1..64`);
  // Each route is a 32-byte option in the RA, which must fit the 1280-byte tunnel MTU.
  if ((o.routes ?? []).length > MAX_ROUTES)
    throw new InputError(`${o.routes!.length} --route prefixes: at most ${MAX_ROUTES} fit in a Router Advertisement`);
  const listenIPv4 = parseIPv4(o.listen);
  const a = listenIPv4 >>> 24;
  if (a === 0 || a >= 224) throw new InputError(`--listen ${o.listen} is not a unicast IPv4 address`);
  const bindIPv4 = o.bind === undefined ? listenIPv4 : parseIPv4(o.bind);
  if (bindIPv4 >>> 24 === 0 || bindIPv4 >>> 24 >= 224)
    throw new InputError(`--bind ${o.bind} is not a unicast IPv4 address of this host`);
  // Advertised: peers know the router by this address; it is bound at --listen (or --bind).
  const advertised = o.advertise === undefined ? undefined : parseIPv4Port(o.advertise, '--advertise', port);
  if (advertised && (advertised.ipv4 >>> 24 === 0 || advertised.ipv4 >>> 24 >= 224 || advertised.ipv4 >>> 24 === 127)) {
    throw new InputError(`--advertise ${o.advertise} is not an address peers can reach (a unicast IPv4 address)`);
  }
  let ndpProxy: RouterConfig['ndpProxy'];
  if (o.ndpProxy) {
    // Always / WhenOnLink, as in the SixBed4Prefix's ndpProxy; on / auto are the old spellings.
    const mode = ndpProxyModeOf(o.ndpProxy.mode ?? 'Always');
    if (mode !== 'on' && mode !== 'auto')
      throw new InputError(`--ndp-proxy-mode ${o.ndpProxy.mode}: use Always or WhenOnLink`);
    if (!/^[A-Za-z0-9_.@-]{1,15}$/.test(o.ndpProxy.uplink))
      throw new InputError(`--ndp-proxy '${o.ndpProxy.uplink}' is not an interface name`);
    ndpProxy = { uplink: o.ndpProxy.uplink, mode, localAddresses: o.ndpProxy.localAddresses ?? [] };
  }
  return {
    ...(ndpProxy ? { ndpProxy } : {}),
    prefix: parsePrefix64(o.prefix),
    listenIPv4: advertised?.ipv4 ?? listenIPv4,
    bindIPv4,
    port: advertised?.port ?? port,
    bindPort: port,
    tun,
    batch,
    workers,
    statsIntervalMs: o.statsIntervalMs ?? 60_000,
    refusePrivate: !!o.refusePrivate,
    sockets,
    handover: o.handover === true,
    freebind: o.freebind === true,
    ...(o.bindUplink ? { bindUplink: o.bindUplink } : {}),
    rateLimit: rateLimitOf(o.rateLimit),
    fastPath: fastPathModeOf(o.fastPath),
    fastPathDirect: o.fastPathDirect === true,
    routes: (o.routes ?? []).map((r) => parsePrefix(r, '--route')),
    ...(o.metrics ? { metrics: o.metrics } : {}),
  };
}

/** Rates and bursts must be positive numbers: a zero would silence every RA, and peers would never get an address. */
function rateLimitOf(r: RouterOptions['rateLimit']): RouterConfig['rateLimit'] {
  const { tableSize: _, ...defaults } = DEFAULT_RATE_LIMIT;
  if (!r) return defaults;
  for (const [k, v] of Object.entries(r)) {
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0)
      throw new InputError(`rate limit ${k} ${String(v)}: use a number above 0`);
  }
  return { ...defaults, ...r };
}

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

/** How often peers the fast path forwarded for are handed to the live table: well within its two-minute expiry. */
const FAST_PATH_SEEN_MS = 1000;
/**
 * The most of each of those seconds the drain may take from the data path (the event loop's) when a flood of new
 * sources fills the seen map faster than that: the rest waits in the map for the next tick.
 */
const FAST_PATH_SEEN_BUDGET_MS = 20;

export async function startRouter(cfg: RouterConfig, log: Logger): Promise<RunningRouter> {
  if (!hasNetAdmin()) {
    throw new InputError(
      'sixbed4 router needs root (or CAP_NET_ADMIN) to create its tunnel interface: run it with sudo',
    );
  }
  const listenText = formatIPv4(cfg.bindIPv4);
  // With several workers, each gets its own SO_REUSEPORT socket and TUN queue: the kernel spreads flows.
  const udpFds: number[] = [];
  const undo: (() => void | Promise<void>)[] = [
    () => {
      for (const fd of udpFds) native.close(fd);
    },
  ];
  const unwind = async () => {
    for (const u of undo.splice(0).reverse()) await u();
  };
  try {
    // A plain bind first: a port held by another router (even one using SO_REUSEPORT) is refused
    // here, instead of our sockets silently joining its reuseport group and sharing its traffic.
    // With handover, joining the previous router's group is the point (tunnel.ts).
    if (!cfg.handover) native.close(native.udpOpen(listenText, cfg.bindPort, false, cfg.freebind).fd);
    for (let i = 0; i < cfg.workers * cfg.sockets; i++) {
      udpFds.push(
        native.udpOpen(listenText, cfg.bindPort, cfg.workers * cfg.sockets > 1 || cfg.handover, cfg.freebind).fd,
      );
    }
  } catch (err) {
    await unwind();
    throw udpOpenError(err as NodeJS.ErrnoException, listenText, cfg.bindPort);
  }
  // Periodic tasks' failures: logged once each, counted, never the end of the process (periodic.ts).
  const failures = new TaskFailures(log);
  try {
    let local = await localTable(log);
    // Loaded and tested before anything is made, so a refusal leaves nothing behind.
    const prepared = await prepareFastPath(
      cfg.fastPath,
      {
        // What arrives on the uplink is addressed to the bound address and port (a DNAT in front, --advertise, has
        // already rewritten it), and what the router sends leaves from them; the advertised ones are its identity.
        bindIPv4: cfg.bindIPv4,
        bindPort: cfg.bindPort,
        ownIPv4: cfg.listenIPv4,
        ownPort: cfg.port,
        prefix: cfg.prefix.bytes,
        refused: refusedRanges(local, cfg.refusePrivate),
        ...(cfg.bindUplink ? { uplink: cfg.bindUplink } : {}),
        direct: cfg.fastPathDirect,
      },
      log,
    );
    if (prepared) undo.push(() => prepared.close());
    const engineCfg: EngineConfig = {
      prefix: cfg.prefix,
      listenIPv4: cfg.listenIPv4,
      port: cfg.port,
      routes: cfg.routes,
      refused: refusedRanges(local, cfg.refusePrivate),
      // One set of reply buckets for all workers: the overall cap stays one cap.
      rateLimitState: newRateLimitState(),
      rateLimit: { ...cfg.rateLimit, tableSize: DEFAULT_RATE_LIMIT.tableSize },
    };
    const routerAddress = makeAddress(cfg.prefix.bytes, cfg.listenIPv4, cfg.port, 0);
    const tunnel = await openTunnel(cfg.tun, cfg.workers, routerAddress, cfg.prefix, log, { handover: cfg.handover });
    undo.push(() => tunnel.close());
    const proxy = cfg.ndpProxy ? await startProxy(cfg, log) : undefined;
    if (proxy) undo.push(() => proxy.stop());
    // Attached after the tunnel is up and detached before it goes: the program never redirects into a TUN that is gone.
    const fastPath = prepared?.attach(tunnel.name);
    if (fastPath) undo.push(() => fastPath.stop());
    const onLive: LiveListener | undefined =
      proxy &&
      ((added, removed) => {
        // Answer for a peer's addresses while it is live (policy.ts says which lanips).
        const addrs = (c: LiveChange) => proxiedPeerAddresses(makeAddress(cfg.prefix.bytes, c.ipv4, c.port, 0));
        for (const c of added) for (const a of addrs(c)) proxy.add(a);
        for (const c of removed) for (const a of addrs(c)) proxy.remove(a);
      });
    const steered = steerSockets(cfg, udpFds, log);
    const forwarding =
      cfg.workers === 1
        ? forwardInline(engineCfg, cfg.batch, udpFds, tunnel.fds[0]!, onLive, native, failures, steered)
        : await forwardOnWorkers(
            engineCfg,
            cfg.batch,
            tunnel.fds.map((_, w) => udpFds.slice(w * cfg.sockets, (w + 1) * cfg.sockets)),
            tunnel.fds,
            onLive,
            (err) => {
              // Stop the way a signal would, so the tunnel and its route go cleanly, and say why.
              log.error(`${err.message}: stopping the router`);
              process.exitCode = 1;
              process.kill(process.pid, 'SIGTERM');
            },
            failures,
            steered,
          );
    undo.push(() => forwarding.stop());
    if (fastPath) {
      // Peers the programs forwarded for, into the live table (the neighbour proxy answers for live peers).
      undo.push(
        every(
          'fast-path-seen',
          FAST_PATH_SEEN_MS,
          () => {
            const seen = fastPath.takeSeen(FAST_PATH_SEEN_BUDGET_MS);
            if (seen.length) forwarding.touchPeers(seen);
          },
          failures,
        ),
      );
    }
    let metrics: MetricsServer | undefined;
    const registry = routerRegistry(
      () => forwarding.counters(),
      proxy && (() => proxy.counters()),
      fastPath && (() => fastPath.counters()),
      failures,
    );
    if (cfg.metrics) metrics = await startMetricsServer(cfg.metrics, registry, log);
    undo.push(() => metrics?.close());
    // Relays and sends to any address of this host stay refused as its addresses change.
    undo.push(
      every(
        'local-table',
        LOCAL_TABLE_REFRESH_MS,
        () =>
          localTable(log).then((now) => {
            if (sameRanges(now, local)) return;
            local = now;
            const ranges = refusedRanges(local, cfg.refusePrivate);
            forwarding.setRefused(ranges);
            fastPath?.setRefused(ranges);
          }),
        failures,
      ),
    );
    await warnIfNotForwarding(log);
    undo.push(reportStats(forwarding.counters, cfg.statsIntervalMs, log, failures));
    log.info('router ready', {
      prefix: cfg.prefix.text,
      listen: `${formatIPv4(cfg.listenIPv4)}:${cfg.port}`,
      ...(cfg.bindIPv4 !== cfg.listenIPv4 || cfg.bindPort !== cfg.port
        ? { bind: `${listenText}:${cfg.bindPort}` }
        : {}),
      address: formatIPv6(routerAddress),
      routes: cfg.routes.map((r) => r.text),
      tun: tunnel.name,
      workers: cfg.workers,
      batch: cfg.batch,
      fastPath: fastPath ? `on (${fastPath.uplink} ingress)` : 'off',
    });
    let stopped = false;
    let current = cfg;
    return {
      get config() {
        return current;
      },
      get metrics() {
        return metrics;
      },
      tunnel,
      ...(proxy ? { proxy } : {}),
      ...(fastPath ? { fastPath } : {}),
      registry,
      counters: () => forwarding.counters(),
      async reconfigure(change) {
        if (change.metrics !== undefined && change.metrics !== (current.metrics ?? null)) {
          // Make before break: the new address first, so a mistake leaves the old one serving. The same port on
          // another address of this host may conflict with the old one: then break first, and restore on failure.
          const old = metrics;
          let next: MetricsServer | undefined;
          if (change.metrics !== null) {
            try {
              next = await startMetricsServer(change.metrics, registry, log);
            } catch (err) {
              if (!old || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
              await old.close();
              metrics = undefined;
              try {
                next = await startMetricsServer(change.metrics, registry, log);
              } catch (again) {
                metrics = await startMetricsServer(current.metrics!, registry, log);
                throw again;
              }
            }
          }
          metrics = next;
          await old?.close().catch(() => undefined); // (closed already when it had to go first: harmless)
          const { metrics: _, ...rest } = current;
          current = { ...rest, ...(change.metrics !== null ? { metrics: change.metrics } : {}) };
        }
        if (change.routes || change.rateLimit) {
          forwarding.setLive({
            ...(change.routes ? { routes: change.routes } : {}),
            ...(change.rateLimit ? { rateLimit: change.rateLimit } : {}),
          });
          current = {
            ...current,
            ...(change.routes ? { routes: change.routes } : {}),
            ...(change.rateLimit ? { rateLimit: change.rateLimit } : {}),
          };
        }
      },
      async stop(opts = {}) {
        if (stopped) return;
        stopped = true;
        let handedOver = await tunnel.claimedByAnother().catch(() => false);
        if (cfg.handover && !handedOver && opts.waitForSuccessorMs) {
          log.info(`waiting up to ${opts.waitForSuccessorMs} ms for the next router to take over ${tunnel.name}`);
          const until = Date.now() + opts.waitForSuccessorMs;
          while (!handedOver && Date.now() < until) {
            await new Promise((r) => setTimeout(r, 100));
            handedOver = await tunnel.claimedByAnother().catch(() => false);
          }
        }
        const c = await forwarding.counters().catch(() => new Counters().snapshot());
        const fast = fastPath?.counters();
        await unwind();
        log.info(
          handedOver
            ? `router stopped; tunnel ${tunnel.name} handed over to the next router`
            : 'router stopped; tunnel removed',
          {
            udpToTun: c.udpToTunPackets,
            tunToUdp: c.tunToUdpPackets,
            relayed: c.relayPackets,
            ...(fast
              ? {
                  udpToTunFast: fast.fromPeers.fast.packets,
                  tunToUdpFast: fast.toPeers.fast.packets,
                  relayedFast: fast.fromPeers.relay.packets,
                }
              : {}),
            dropped: Object.values(c.drops).reduce((a, b) => a + b, 0),
          },
        );
      },
    };
  } catch (err) {
    await unwind();
    throw err;
  }
}

/**
 * A line every interval while traffic flows, so a long-running router shows
 * what it does without a line per packet: rates since the last line, live
 * peers, drops by reason. Silent when nothing moved.
 */
function reportStats(
  read: () => Promise<CountersSnapshot>,
  intervalMs: number,
  log: Logger,
  failures: TaskFailures,
): () => void {
  let last: CountersSnapshot | undefined;
  return every(
    'stats',
    intervalMs,
    () =>
      read().then((c) => {
        const p = last;
        last = c;
        if (!p) return;
        const moved = c.udpRxPackets - p.udpRxPackets + c.tunRxPackets - p.tunRxPackets;
        if (moved === 0) return;
        const per = (a: number, b: number) => Math.round(((a - b) * 1000) / intervalMs);
        const drops = Object.entries(c.drops)
          .filter(([k, v]) => v > p.drops[k as keyof typeof c.drops]!)
          .map(([k, v]) => `${k}=${v - p.drops[k as keyof typeof c.drops]!}`)
          .join(' ');
        log.info('forwarding', {
          peersToKernelPps: per(c.udpToTunPackets, p.udpToTunPackets),
          kernelToPeersPps: per(c.tunToUdpPackets, p.tunToUdpPackets),
          relayPps: per(c.relayPackets, p.relayPackets),
          livePeers: c.livePeers,
          drops: drops || 'none',
        });
      }),
    failures,
  );
}

/**
 * Steers datagrams that pass the originator check to each worker's first sockets, in the kernel (steer-ebpf.ts: the
 * eBPF program, also with handover; else the classic one, which cannot with handover). Whatever the kernel refuses
 * leaves its hash to spread the datagrams, as before, and the log says why.
 */
function steerSockets(cfg: RouterConfig, udpFds: number[], log: Logger): boolean {
  const s = steerGroup(udpFds, {
    prefix: cfg.prefix.bytes,
    workers: cfg.workers,
    sockets: cfg.sockets,
    handover: cfg.handover,
  });
  if (s.program === 'cbpf')
    log.info(`checked peers are steered to their own sockets by a classic BPF program (no eBPF: ${s.ebpfError})`);
  else if (s.program === 'none' && s.ebpfError)
    log.warn(
      `cannot steer checked peers to their own sockets (${s.ebpfError}${s.cbpfError ? `; ${s.cbpfError}` : ''})${
        cfg.handover ? ', which with handover needs eBPF (CAP_BPF)' : ''
      }: the kernel's hash spreads all datagrams`,
    );
  else if (s.cbpfError) log.warn(`cannot replace the socket group's program (${s.cbpfError})`);
  return s.program !== 'none';
}

/** Starts the neighbour proxy, answering at once for the host's own proxied addresses. */
async function startProxy(cfg: RouterConfig, log: Logger): Promise<NdpResponder> {
  const p = cfg.ndpProxy!;
  if (!hasNetRaw()) throw new InputError('--ndp-proxy needs CAP_NET_RAW (or root) for its ICMPv6 socket');
  const proxy = new NdpResponder(p.uplink, log, { mode: p.mode, prefix: cfg.prefix });
  await proxy.start();
  for (const a of p.localAddresses) proxy.add(a);
  return proxy;
}

/** The host's local IPv4 addresses; on failure (no `ip`?) only the fixed ranges are refused, and the log says so. */
let localTableWarned = false;
async function localTable(log: Logger): Promise<IPv4Range[]> {
  try {
    return await readLocalTable();
  } catch (err) {
    if (!localTableWarned)
      log.warn(
        `cannot read the local routing table (${(err as Error).message}): relays to this host's other addresses are not refused`,
      );
    localTableWarned = true;
    return [];
  }
}

/** The router works without forwarding, but the native side then never reaches peers: say so once. */
async function warnIfNotForwarding(log: Logger): Promise<void> {
  try {
    if (confValue(await readIpv6Conf(), { conf: 'all', param: 'forwarding' }) !== '1') {
      log.warn(
        'IPv6 forwarding is off (net.ipv6.conf.all.forwarding=0): the kernel will not pass traffic between the uplink and the tunnel; run `sixbed4 host apply` or `sysctl -w net.ipv6.conf.all.forwarding=1`',
      );
    }
  } catch {
    /* no /proc/sys: nothing to say */
  }
}

/** The listen (or bind) address is not one of this host's: the agent may fall back to the node's own address. */
export class AddressNotLocalError extends InputError {
  constructor(
    message: string,
    readonly address: string,
  ) {
    super(message);
  }
}

function udpOpenError(err: NodeJS.ErrnoException, addr: string, port: number): Error {
  switch (err.code) {
    case 'EADDRINUSE':
      return new InputError(
        `UDP port ${port} on ${addr} is in use: is another 6bed4 router running? Stop it or choose --port`,
      );
    case 'EADDRNOTAVAIL':
      return new AddressNotLocalError(
        `${addr} is not an address of this host: --listen (or --bind, behind a 1:1 NAT) must be one of its IPv4 addresses (see 'ip -4 addr')`,
        addr,
      );
    case 'EACCES':
      return new InputError(`no permission to bind UDP port ${port} on ${addr}`);
    default:
      return new Error(`cannot open UDP ${addr}:${port}: ${err.message}`);
  }
}
