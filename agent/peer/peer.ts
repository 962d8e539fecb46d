// A running 6bed4 peer: solicits the router until it learns its /114, puts
// its address on a TUN interface, keeps the NAT mapping alive, follows the
// router when an RA brings a new /114 (the NAT mapping changed), and removes
// its interface on stop.
import { native, type NativeIO, type PollHandle } from '../io/native.js';
import { newBatch } from '../io/batch.js';
import { DEFAULT_PEER_LANIP, KEEPALIVE_SECONDS, MAX_LANIP, ROUTER_PORT, TUNNEL_MTU } from '../protocol/constants.js';
import { equal16 } from '../protocol/ipv6.js';
import { ROUTER_LINK_LOCAL, writeNeighborSolicit, writeRouterSolicit } from '../protocol/nd.js';
import { formatIPv4, formatIPv6, InputError, parseIPv4 } from '../protocol/ip.js';
import { hasNetAdmin } from '../host/privilege.js';
import { ip } from '../host/ip.js';
import type { Logger } from '../log.js';
import { PeerEngine } from './engine.js';
import type { RouterAdvert } from '../protocol/nd.js';

export interface PeerOptions {
  router: string;        // IPV4[:PORT]
  listen?: string;       // local IPv4 to bind, default any
  lanip?: number;
  tun?: string;
  defaultRoute?: boolean;
  keepalive?: number;    // seconds
}

export interface PeerConfig {
  routerV4: number; routerPort: number; listen: string; lanip: number; tun: string; defaultRoute: boolean; keepaliveMs: number;
}

export function peerConfig(o: PeerOptions): PeerConfig {
  if (!o.router) throw new InputError('--router is required: the 6bed4 router\'s IPv4 address, e.g. --router 198.51.100.1 or 198.51.100.1:25790');
  const m = /^([^:]+)(?::(\d+))?$/.exec(o.router);
  if (!m) throw new InputError(`--router '${o.router}' is not IPV4[:PORT]`);
  const routerPort = m[2] === undefined ? ROUTER_PORT : Number(m[2]);
  if (routerPort < 1 || routerPort > 65535) throw new InputError(`--router port ${m[2]} is not a UDP port (1..65535)`);
  const lanip = o.lanip ?? DEFAULT_PEER_LANIP;
  if (!Number.isInteger(lanip) || lanip < 1 || lanip > MAX_LANIP) {
    throw new InputError(`--lanip ${o.lanip}: use 1..${MAX_LANIP} (0 is the router side of the /114)`);
  }
  const keepalive = o.keepalive ?? KEEPALIVE_SECONDS;
  if (!(keepalive > 0 && keepalive <= 3600)) throw new InputError(`--keepalive ${o.keepalive}: use seconds in (0, 3600]`);
  const tun = o.tun ?? '6bed4peer';
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(tun)) throw new InputError(`--tun '${tun}' is not a usable interface name`);
  const listen = o.listen ?? '0.0.0.0';
  parseIPv4(listen);
  return { routerV4: parseIPv4(m[1]!), routerPort, listen, lanip, tun, defaultRoute: !!o.defaultRoute, keepaliveMs: keepalive * 1000 };
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

/** io: the addon (the default), or a stand-in with its semantics such as FakeIO (agent/io/fake.ts). */
export async function startPeer(cfg: PeerConfig, log: Logger, io: NativeIO = native): Promise<RunningPeer> {
  if (!hasNetAdmin()) throw new InputError('sixbed4 peer needs root (or CAP_NET_ADMIN) to create its tunnel interface');
  const udpFd = openEvenPort(cfg.listen, io);
  let tunFd: number;
  try {
    tunFd = io.tunOpen(cfg.tun, false).fd;
  } catch (err) {
    io.close(udpFd);
    const e = err as NodeJS.ErrnoException;
    throw new InputError(e.code === 'EBUSY' ? `interface ${cfg.tun} is in use: is another peer running? (--tun NAME)`
      : `cannot create TUN interface ${cfg.tun}: ${e.message}`);
  }
  const routerText = `${formatIPv4(cfg.routerV4)}:${cfg.routerPort}`;
  let current: Uint8Array | null = null;   // our /114 as the router last announced it
  let addressText: string | null = null;
  let routes: string[] = [];
  let resolveReady!: (a: string) => void;
  const ready = new Promise<string>((r) => { resolveReady = r; });
  let changing = Promise.resolve();

  const control = newBatch(2, TUNNEL_MTU);
  control.addr.fill(cfg.routerV4); control.port.fill(cfg.routerPort);
  const sendSolicit = () => { control.len[0] = writeRouterSolicit(control.data, 0); io.udpSend(udpFd, control, 1); };
  const sendKeepalive = () => { control.len[0] = 0; io.udpSend(udpFd, control, 1); };
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
    const newRoutes = ra.routes.map((r) => `${formatIPv6(r.bytes)}/${r.length}`);
    changing = changing.then(async () => {
      const old = addressText;
      // Make before break: the new address is usable before the old one goes.
      await ip('-6', 'addr', 'replace', `${newText}/64`, 'dev', cfg.tun, 'nodad');
      addressText = newText;
      ours = addr;
      sendPresence();
      if (old && old !== newText) await ip('-6', 'addr', 'del', `${old}/64`, 'dev', cfg.tun).catch(() => undefined);
      if (cfg.defaultRoute) await ip('-6', 'route', 'replace', 'default', 'dev', cfg.tun, 'metric', '1024');
      for (const r of newRoutes) await ip('-6', 'route', 'replace', r, 'dev', cfg.tun);
      for (const r of routes) if (!newRoutes.includes(r)) await ip('-6', 'route', 'del', r, 'dev', cfg.tun).catch(() => undefined);
      routes = newRoutes;
      if (old) log.warn('router announced a new /114 (NAT mapping changed): address moved', { from: old, to: newText });
      else log.info(`peer address ${newText}`, { router: routerText, tun: cfg.tun });
      resolveReady(newText);
    }).catch((err: Error) => {
      log.error(`cannot configure address ${newText} (will retry at the next RA): ${err.message}`);
      if (current === wanted) current = null;
    });
  };

  const engine = new PeerEngine(cfg.routerV4, cfg.routerPort, onAdvert);
  const polls: PollHandle[] = [];
  const timers: NodeJS.Timeout[] = [];
  try {
    await ip('link', 'set', 'dev', cfg.tun, 'mtu', String(TUNNEL_MTU), 'up');
  } catch (err) {
    io.close(tunFd); io.close(udpFd);
    throw err;
  }
  // ICMP errors about what we sent (the router's port closed while it restarts, a host unreachable) land in the
  // socket's error queue (IP_RECVERR), and the socket reports POLLERR until that queue is read: left there, they
  // would stop this poll for good and the peer would never read its router's packets again. Read them first; say so
  // once a minute at most. The address stays: the router's side is stateless, and keepalives go on.
  const errors = newBatch(8, 64);
  const errorInfo = new Uint32Array(8);
  let lastErrorLog = 0;
  polls.push(io.poll(udpFd, () => {
    let m: number, seen = 0, what = 0;
    while ((m = io.udpRecvErrors(udpFd, errors, errorInfo)) > 0) {
      seen += m;
      what = errorInfo[m - 1]!;
      if (m < errors.cap) break;
    }
    if (seen && Date.now() - lastErrorLog > 60_000) {
      lastErrorLog = Date.now();
      log.warn(`the router does not answer (ICMP type ${what >> 8} code ${what & 0xff}); keeping the address and sending keepalives`, { router: routerText });
    }
    for (let round = 0; round < 16; round++) {
      const n = io.udpRecv(udpFd, engine.udpRx);
      if (n === 0) return;
      engine.fromRouter(n);
      if (engine.nToTun) io.tunWrite(tunFd, engine.toTun, engine.nToTun);
      if (n < engine.udpRx.cap) return;
    }
  }));
  polls.push(io.poll(tunFd, () => {
    for (let round = 0; round < 16; round++) {
      const n = io.tunRead(tunFd, engine.tunRx);
      if (n === 0) return;
      engine.fromKernel(n);
      if (engine.nToRouter) io.udpSend(udpFd, engine.toRouter, engine.nToRouter);
      if (n < engine.tunRx.cap) return;
    }
  }));

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
  timers.push(setInterval(() => {
    if (++beats % SOLICIT_EVERY_KEEPALIVES === 0) { sendSolicit(); sendPresence(); } else sendKeepalive();
  }, cfg.keepaliveMs));

  let stopped = false;
  return {
    ready, engine,
    address: () => addressText,
    async stop() {
      if (stopped) return;
      stopped = true;
      for (const t of timers) clearTimeout(t);
      for (const p of polls) p.close();
      await changing;
      io.close(tunFd); // removes the interface with its address and routes
      io.close(udpFd);
      log.info('peer stopped; tunnel removed', { tun: cfg.tun });
    },
  };
}
