// A running 6bed4 peer: solicits the router until it learns its /114, puts
// its address on a TUN interface, keeps the NAT mapping alive, follows the
// router when an RA brings a new /114 (the NAT mapping changed), and removes
// its interface on stop.
import { native, type NativeIO, type PollHandle } from '../io/native.js';
import { newBatch } from '../io/batch.js';
import { DEFAULT_PEER_LANIP, KEEPALIVE_SECONDS, MAX_LANIP, ROUTER_PORT, TUNNEL_MTU } from '../protocol/constants.js';
import { equal16 } from '../protocol/ipv6.js';
import { ROUTER_LINK_LOCAL, writeNeighborSolicit, writeRouterSolicit } from '../protocol/nd.js';
import { formatIPv4, formatIPv6, parseIPv4, parseIPv4Port, parseIPv6 } from '../../lib/ip.js';
import { InputError } from '../../lib/errors.js';
import { hasNetAdmin } from '../host/privilege.js';
import { ip } from '../host/ip.js';
import type { Logger } from '../../lib/log.js';
import { PeerEngine } from './engine.js';
import type { RouterAdvert } from '../protocol/nd.js';
import { addressIPv4, addressPort } from '../protocol/address.js';
import { checkHook, HookRunner } from './hooks.js';
import { DirectPaths, FIRST_PROBE_TTL, type PathWhy } from './direct.js';
import { checkLanInterface, LanSide } from './lan.js';

export interface PeerOptions {
  router: string; // IPV4[:PORT]
  listen?: string; // local IPv4 to bind, default any
  /** Fixed local UDP port (behind a port forward, a stable address); default a random even one. */
  port?: number;
  lanip?: number;
  tun?: string;
  defaultRoute?: boolean;
  keepalive?: number; // seconds
  /** A script run when the address or a route comes or goes (hooks.ts says how). */
  hook?: string;
  hookTimeout?: number; // seconds
  /** Probe other peers of the /64 and send straight to those that answer (default true). */
  direct?: boolean;
  /** An interface to serve the /114's other lanips on, with Router Advertisements (lan.ts). */
  lan?: string;
}

export interface PeerConfig {
  routerV4: number;
  routerPort: number;
  listen: string;
  lanip: number;
  tun: string;
  defaultRoute: boolean;
  keepaliveMs: number;
  /** 0: a random even port */
  port: number;
  /** absolute path of the hook script, when there is one */
  hook?: string;
  hookTimeoutMs: number;
  direct: boolean;
  lan?: string;
}

/** Long enough for a DNS update over a slow link; short enough that a stuck hook is noticed. */
const DEFAULT_HOOK_TIMEOUT_S = 10;

export function peerConfig(o: PeerOptions): PeerConfig {
  if (!o.router)
    throw new InputError(
      "--router is required: the 6bed4 router's IPv4 address, e.g. --router 198.51.100.1 or 198.51.100.1:25790",
    );
  const { ipv4: routerV4, port: routerPort } = parseIPv4Port(o.router, '--router', ROUTER_PORT);
  const lanip = o.lanip ?? DEFAULT_PEER_LANIP;
  if (!Number.isInteger(lanip) || lanip < 1 || lanip > MAX_LANIP) {
    throw new InputError(`--lanip ${o.lanip}: use 1..${MAX_LANIP} (0 is the router side of the /114)`);
  }
  const keepalive = o.keepalive ?? KEEPALIVE_SECONDS;
  if (!(keepalive > 0 && keepalive <= 3600))
    throw new InputError(`--keepalive ${o.keepalive}: use seconds in (0, 3600]`);
  const tun = o.tun ?? '6bed4peer';
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(tun)) throw new InputError(`--tun '${tun}' is not a usable interface name`);
  const listen = o.listen ?? '0.0.0.0';
  parseIPv4(listen);
  const port = o.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535 || (o.port !== undefined && port === 0)) {
    throw new InputError(`--port ${o.port} is not a UDP port: use 1..65535 (or leave it out for a random even port)`);
  }
  const hookTimeout = o.hookTimeout ?? DEFAULT_HOOK_TIMEOUT_S;
  if (!(hookTimeout > 0 && hookTimeout <= 3600))
    throw new InputError(`--hook-timeout ${o.hookTimeout}: use seconds in (0, 3600]`);
  if (o.hookTimeout !== undefined && !o.hook) throw new InputError('--hook-timeout needs --hook SCRIPT');
  if (o.lan !== undefined && !/^[A-Za-z0-9_.-]{1,15}$/.test(o.lan))
    throw new InputError(`--lan '${o.lan}' is not a usable interface name`);
  return {
    routerV4,
    routerPort,
    listen,
    port,
    lanip,
    tun,
    defaultRoute: !!o.defaultRoute,
    keepaliveMs: keepalive * 1000,
    ...(o.hook !== undefined ? { hook: checkHook(o.hook) } : {}),
    hookTimeoutMs: hookTimeout * 1000,
    direct: o.direct ?? true,
    ...(o.lan !== undefined ? { lan: o.lan } : {}),
  };
}

/**
 * Binds a random even port in 49152..65534, as the stock peer does (it
 * refuses odd ports and warns when its router reports an odd one), so both
 * kinds of peer look alike to routers and firewalls.
 */
function openEvenPort(listen: string, io: NativeIO): number {
  for (let attempt = 0; attempt < 64; attempt++) {
    const port = 49152 + 2 * Math.floor(Math.random() * 8192);
    try {
      return io.udpOpen(listen, port, false).fd;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') {
        throw new InputError(`cannot open a UDP socket on ${listen}: ${(err as Error).message}`);
      }
    }
  }
  throw new InputError(`no free even UDP port in 49152..65534 on ${listen}`);
}

/**
 * Binds the --port the user chose: behind a port forward on the NAT that port
 * is the public one too, so the 6bed4 address stays the same across restarts.
 */
function openFixedPort(listen: string, port: number, io: NativeIO): number {
  try {
    return io.udpOpen(listen, port, false).fd;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'EADDRINUSE')
      throw new InputError(
        `UDP port ${port} on ${listen} is in use: is another peer running? Stop it or choose another --port`,
      );
    if (e.code === 'EADDRNOTAVAIL')
      throw new InputError(`--listen ${listen} is not an address of this host (see 'ip -4 addr')`);
    if (e.code === 'EACCES') throw new InputError(`no permission to bind UDP port ${port} on ${listen}`);
    throw new InputError(`cannot open UDP ${listen}:${port}: ${e.message}`);
  }
}

export interface RunningPeer {
  /** Resolves with the first address the router gave us. */
  readonly ready: Promise<string>;
  address(): string | null;
  readonly engine: PeerEngine;
  stop(): Promise<void>;
}

const FIRST_SOLICIT_MS = 1000;
const MAX_SOLICIT_MS = 30_000;
/** Re-solicit every this many keepalives, so a silently changed NAT mapping is noticed. */
const SOLICIT_EVERY_KEEPALIVES = 10;
/** What the log says when a direct path goes back to the router. */
const GONE_WHY: Record<PathWhy, string> = {
  answered: 'answered',
  quiet: 'our probes went unanswered',
  'via-router': 'its data came through the router again',
  forgotten: 'forgotten',
  moved: 'our address moved',
};

/** io: the addon (the default), or a stand-in with its semantics such as FakeIO (agent/io/fake.ts). */
export async function startPeer(cfg: PeerConfig, log: Logger, io: NativeIO = native): Promise<RunningPeer> {
  if (!hasNetAdmin()) throw new InputError('sixbed4 peer needs root (or CAP_NET_ADMIN) to create its tunnel interface');
  const lanIndex = cfg.lan ? await checkLanInterface(cfg.lan, cfg.tun, cfg.routerV4) : 0;
  const udpFd = cfg.port ? openFixedPort(cfg.listen, cfg.port, io) : openEvenPort(cfg.listen, io);
  let tunFd: number;
  try {
    tunFd = io.tunOpen(cfg.tun, false).fd;
  } catch (err) {
    io.close(udpFd);
    const e = err as NodeJS.ErrnoException;
    throw new InputError(
      e.code === 'EBUSY'
        ? `interface ${cfg.tun} is in use: is another peer running? (--tun NAME)`
        : `cannot create TUN interface ${cfg.tun}: ${e.message}`,
    );
  }
  const routerText = `${formatIPv4(cfg.routerV4)}:${cfg.routerPort}`;
  let current: Uint8Array | null = null; // our /114 as the router last announced it
  let addressText: string | null = null;
  let routes: string[] = [];
  let resolveReady!: (a: string) => void;
  const ready = new Promise<string>((r) => {
    resolveReady = r;
  });
  let changing = Promise.resolve();
  let told: { address: string; prefix: string } | null = null; // what the hooks were last told was added
  const hooks = cfg.hook
    ? new HookRunner(
        cfg.hook,
        cfg.hookTimeoutMs,
        { SIXBED4_TUN: cfg.tun, SIXBED4_ROUTER: routerText, SIXBED4_PID: String(process.pid) },
        log,
      )
    : undefined;
  const addressHook = (event: 'add' | 'remove', address: string, prefix: string) => {
    const a = parseIPv6(address);
    void hooks?.run(event, [address, prefix], {
      SIXBED4_ADDRESS: address,
      SIXBED4_PREFIX: prefix,
      SIXBED4_MAPPING: `${formatIPv4(addressIPv4(a, 0))}:${addressPort(a, 0)}`,
    });
  };
  const routeHook = (event: 'route-add' | 'route-remove', route: string) => {
    void hooks?.run(event, [route], { SIXBED4_ROUTE: route });
  };

  const control = newBatch(2, TUNNEL_MTU);
  control.addr.fill(cfg.routerV4);
  control.port.fill(cfg.routerPort);
  const sendSolicit = () => {
    control.len[0] = writeRouterSolicit(control.data, 0);
    io.udpSend(udpFd, control, 1);
  };
  const sendKeepalive = () => {
    control.len[0] = 0;
    io.udpSend(udpFd, control, 1);
  };
  // An NS for the router from our own address: the router tracks a peer as live (its neighbour proxy
  // answers for it) only from a packet that passes its originator check, which an RS from :: cannot.
  let ours: Uint8Array | null = null;
  const sendPresence = () => {
    if (!ours) return;
    control.len[0] = writeNeighborSolicit(control.data, 0, ours, ROUTER_LINK_LOCAL, ROUTER_LINK_LOCAL);
    io.udpSend(udpFd, control, 1);
  };

  const onAdvert = (ra: RouterAdvert) => {
    if (ra.validLifetime === 0) return; // a withdrawal of a prefix we may not even hold
    // `current` is the /114 configured or being configured; a failure clears it so the next RA retries.
    if (current && equal16(current, 0, ra.prefix114, 0)) return;
    const wanted = Uint8Array.from(ra.prefix114);
    current = wanted;
    // Our address is the announced /114 with our lanip in its last 14 bits.
    const addr = Uint8Array.from(ra.prefix114);
    addr[14] = (addr[14]! & 0xc0) | ((cfg.lanip >>> 8) & 0x3f);
    addr[15] = cfg.lanip & 0xff;
    const newText = formatIPv6(addr);
    const announced = ra.routes.map((r) => `${formatIPv6(r.bytes)}/${r.length}`);
    const newPrefix = `${formatIPv6(ra.prefix114)}/114`;
    changing = changing
      .then(async () => {
        const old = addressText;
        // The RA that tells a moved peer its new /114 carries only that (the router keeps answers to unverified
        // sources small): no route options there is no withdrawal of the routes an RS's RA brought.
        const newRoutes = announced.length ? announced : routes;
        // Make before break: the new address is usable before the old one goes.
        await ip('-6', 'addr', 'replace', `${newText}/64`, 'dev', cfg.tun, 'nodad');
        addressText = newText;
        ours = addr;
        engine.setOwn(addr);
        sendPresence();
        if (old && old !== newText) await ip('-6', 'addr', 'del', `${old}/64`, 'dev', cfg.tun).catch(() => undefined);
        await lan?.setAddress(addr);
        if (cfg.defaultRoute) await ip('-6', 'route', 'replace', 'default', 'dev', cfg.tun, 'metric', '1024');
        for (const r of newRoutes) await ip('-6', 'route', 'replace', r, 'dev', cfg.tun);
        for (const r of routes)
          if (!newRoutes.includes(r)) await ip('-6', 'route', 'del', r, 'dev', cfg.tun).catch(() => undefined);
        // The hooks hear of it once the kernel has it: a moved address as remove, then add (so a script that keeps one
        // record ends with the new one), and only the routes that changed.
        if (told?.address !== newText) {
          if (told) addressHook('remove', told.address, told.prefix);
          addressHook('add', newText, newPrefix);
          told = { address: newText, prefix: newPrefix };
        }
        for (const r of routes) if (!newRoutes.includes(r)) routeHook('route-remove', r);
        for (const r of newRoutes) if (!routes.includes(r)) routeHook('route-add', r);
        routes = newRoutes;
        if (old)
          log.warn('router announced a new /114 (NAT mapping changed): address moved', { from: old, to: newText });
        else log.info(`peer address ${newText}`, { router: routerText, tun: cfg.tun });
        resolveReady(newText);
      })
      .catch((err: Error) => {
        log.error(`cannot configure address ${newText} (will retry at the next RA): ${err.message}`);
        if (current === wanted) current = null;
      });
  };

  const direct = cfg.direct
    ? new DirectPaths((v4, port, on, why) => {
        const peer = `${formatIPv4(v4)}:${port}`;
        if (on) log.info(`direct path to ${peer}: it answered from the IPv4:port its address embeds`, { peer });
        else log.info(`direct path to ${peer} gone (${GONE_WHY[why]}): through the router`, { peer, why });
      })
    : undefined;
  const engine = new PeerEngine(cfg.routerV4, cfg.routerPort, onAdvert, 64, direct);
  engine.serveLan = !!cfg.lan;
  const polls: PollHandle[] = [];
  const timers: NodeJS.Timeout[] = [];
  const lan = cfg.lan ? new LanSide(cfg.lan, lanIndex, cfg.tun, log) : undefined;
  try {
    await ip('link', 'set', 'dev', cfg.tun, 'mtu', String(TUNNEL_MTU), 'up');
    await lan?.start();
  } catch (err) {
    io.close(tunFd);
    io.close(udpFd);
    throw err;
  }
  // ICMP errors about what we sent (the router's port closed while it restarts, a host unreachable) land in the
  // socket's error queue (IP_RECVERR), and the socket reports POLLERR until that queue is read: left there, they
  // would stop this poll for good and the peer would never read its router's packets again. Read them first; say so
  // once a minute at most. The address stays: the router's side is stateless, and keepalives go on.
  // First probes go hop-limited (direct.ts, FIRST_PROBE_TTL): the socket's TTL is set for them alone.
  const sendFirstProbes = () => {
    if (!engine.nFirstProbes) return;
    io.udpTtl(udpFd, FIRST_PROBE_TTL);
    try {
      io.udpSend(udpFd, engine.firstProbes, engine.nFirstProbes);
    } finally {
      io.udpTtl(udpFd, -1);
    }
  };
  const errors = newBatch(8, 64);
  const errorInfo = new Uint32Array(8);
  let lastErrorLog = 0;
  polls.push(
    io.poll(udpFd, () => {
      let m: number,
        seen = 0,
        what = 0;
      while ((m = io.udpRecvErrors(udpFd, errors, errorInfo)) > 0) {
        // Errors about probes to other peers are what a NAT not (yet) letting them in says: expected, not worth a line.
        for (let i = 0; i < m; i++)
          if (errors.addr[i] === cfg.routerV4 && errors.port[i] === cfg.routerPort) {
            seen++;
            what = errorInfo[i]!;
          }
        if (m < errors.cap) break;
      }
      if (seen && Date.now() - lastErrorLog > 60_000) {
        lastErrorLog = Date.now();
        log.warn(
          `the router does not answer (ICMP type ${what >> 8} code ${what & 0xff}); keeping the address and sending keepalives`,
          { router: routerText },
        );
      }
      for (let round = 0; round < 16; round++) {
        const n = io.udpRecv(udpFd, engine.udpRx);
        if (n === 0) return;
        engine.fromRouter(n);
        if (engine.nToTun) io.tunWrite(tunFd, engine.toTun, engine.nToTun);
        if (engine.nControl) io.udpSend(udpFd, engine.control, engine.nControl);
        sendFirstProbes();
        if (n < engine.udpRx.cap) return;
      }
    }),
  );
  polls.push(
    io.poll(tunFd, () => {
      for (let round = 0; round < 16; round++) {
        const n = io.tunRead(tunFd, engine.tunRx);
        if (n === 0) return;
        engine.fromKernel(n);
        if (engine.nControl) io.udpSend(udpFd, engine.control, engine.nControl);
        sendFirstProbes();
        if (engine.nToUdp) io.udpSend(udpFd, engine.toUdp, engine.nToUdp);
        if (n < engine.tunRx.cap) return;
      }
    }),
  );

  // Solicit with exponential backoff until the first RA, then keep the NAT mapping alive.
  let delay = FIRST_SOLICIT_MS;
  const solicit = () => {
    if (current) return;
    log.info('sending router solicitation', { router: routerText, nextInMs: delay });
    sendSolicit();
    timers.push(setTimeout(solicit, delay));
    delay = Math.min(delay * 2, MAX_SOLICIT_MS);
  };
  solicit();
  let beats = 0;
  timers.push(
    setInterval(() => {
      if (++beats % SOLICIT_EVERY_KEEPALIVES === 0) {
        sendSolicit();
        sendPresence();
      } else sendKeepalive();
      direct?.sweep(Date.now());
    }, cfg.keepaliveMs),
  );

  let stopped = false;
  return {
    ready,
    engine,
    address: () => addressText,
    async stop() {
      if (stopped) return;
      stopped = true;
      for (const t of timers) clearTimeout(t);
      for (const p of polls) p.close();
      await changing;
      await lan?.stop();
      io.close(tunFd); // removes the interface with its address and routes
      io.close(udpFd);
      // As the stock peer's del-offers at an orderly stop: what the hooks were told of is gone.
      if (told) addressHook('remove', told.address, told.prefix);
      for (const r of routes) routeHook('route-remove', r);
      await hooks?.idle();
      log.info('peer stopped; tunnel removed', { tun: cfg.tun });
    },
  };
}
