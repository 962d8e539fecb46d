// The peer's configuration: what the user gives (PeerOptions: flags) and the checked form the peer runs on
// (PeerConfig). Every refusal names the flag and the fix, before anything is opened.
import { DEFAULT_PEER_LANIP, KEEPALIVE_SECONDS, MAX_LANIP, ROUTER_PORT } from '../protocol/constants.js';
import { parseIPv4, parseIPv4Port } from '../../lib/ip.js';
import { InputError } from '../../lib/errors.js';
import { checkHook } from './hooks.js';

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
  /** The TUN's offload (TSO super-packets cut by the peer, UDP_SEGMENT sends): on unless false (--tun-offload off). */
  tunOffload?: boolean;
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
  tunOffload: boolean;
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
    tunOffload: o.tunOffload !== false,
  };
}
