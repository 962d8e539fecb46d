// The router's configuration: what the user gives (RouterOptions: flags, a service file, a share), and the checked
// form the router runs on (RouterConfig). Every refusal names the flag and the fix, before anything is made.
import { parseIPv4, parseIPv4Port, parsePrefix, parsePrefix64, type Prefix } from '../../lib/ip.js';
import { InputError } from '../../lib/errors.js';
import { ROUTER_PORT } from '../protocol/constants.js';
import { ndpProxyModeOf } from '../../kube/modes.js';
import type { ResponderMode } from '../ndp/responder.js';
import { DEFAULT_RATE_LIMIT, type RateLimitConfig } from './ratelimit.js';
import { fastPathModeOf, type FastPathMode } from '../bpf/fastpath.js';

/**
 * UDP sockets per worker. The kernel spreads flows over them by hash, so a
 * flooding source shares its socket (and its losses) with about 1/8 of the
 * other peers instead of all of them (measured: bench/flood.ts).
 */
const DEFAULT_SOCKETS = 8;

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
  /**
   * With the fast path: peers' datagrams are decapsulated at the uplink driver's XDP hook, before GRO, where the
   * driver has one (--fast-path-xdp auto); off unless true (at tc only).
   */
  fastPathXdp?: boolean;
  /** The TUN's offload (TSO super-packets cut by the router, UDP_SEGMENT sends): on unless false (--tun-offload off). */
  tunOffload?: boolean;
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
  fastPathXdp: boolean;
  tunOffload: boolean;
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
  const { port, tun, batch, sockets, workers } = sizesOf(o);
  const addresses = addressesOf(o, o.listen, port);
  const ndpProxy = ndpProxyOf(o.ndpProxy);
  return {
    ...(ndpProxy ? { ndpProxy } : {}),
    prefix: parsePrefix64(o.prefix),
    ...addresses,
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
    fastPathXdp: o.fastPathXdp === true,
    tunOffload: o.tunOffload !== false,
    routes: (o.routes ?? []).map((r) => parsePrefix(r, '--route')),
    ...(o.metrics ? { metrics: o.metrics } : {}),
  };
}

/** The port, the tunnel's name and the data path's sizes, with their defaults. */
function sizesOf(o: RouterOptions): Pick<RouterConfig, 'port' | 'tun' | 'batch' | 'sockets' | 'workers'> {
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
  return { port, tun, batch, sockets, workers };
}

/**
 * The router's identity (listenIPv4 and port: the advertised ones when a DNAT is in front) and where it binds
 * (--listen, or --bind behind a 1:1 NAT).
 */
function addressesOf(
  o: RouterOptions,
  listen: string,
  port: number,
): Pick<RouterConfig, 'listenIPv4' | 'bindIPv4' | 'port'> {
  const listenIPv4 = parseIPv4(listen);
  const a = listenIPv4 >>> 24;
  if (a === 0 || a >= 224) throw new InputError(`--listen ${listen} is not a unicast IPv4 address`);
  const bindIPv4 = o.bind === undefined ? listenIPv4 : parseIPv4(o.bind);
  if (bindIPv4 >>> 24 === 0 || bindIPv4 >>> 24 >= 224)
    throw new InputError(`--bind ${o.bind} is not a unicast IPv4 address of this host`);
  // Advertised: peers know the router by this address; it is bound at --listen (or --bind).
  const advertised = o.advertise === undefined ? undefined : parseIPv4Port(o.advertise, '--advertise', port);
  if (advertised && (advertised.ipv4 >>> 24 === 0 || advertised.ipv4 >>> 24 >= 224 || advertised.ipv4 >>> 24 === 127)) {
    throw new InputError(`--advertise ${o.advertise} is not an address peers can reach (a unicast IPv4 address)`);
  }
  return { listenIPv4: advertised?.ipv4 ?? listenIPv4, bindIPv4, port: advertised?.port ?? port };
}

/** Always / WhenOnLink, as in the SixBed4Prefix's ndpProxy; on / auto are the old spellings. */
function ndpProxyOf(p: RouterOptions['ndpProxy']): RouterConfig['ndpProxy'] {
  if (!p) return undefined;
  const mode = ndpProxyModeOf(p.mode ?? 'Always');
  if (mode !== 'on' && mode !== 'auto') throw new InputError(`--ndp-proxy-mode ${p.mode}: use Always or WhenOnLink`);
  if (!/^[A-Za-z0-9_.@-]{1,15}$/.test(p.uplink))
    throw new InputError(`--ndp-proxy '${p.uplink}' is not an interface name`);
  return { uplink: p.uplink, mode, localAddresses: p.localAddresses ?? [] };
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
