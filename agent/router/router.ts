// A running 6bed4 router: validates its configuration, opens the UDP socket
// and the tunnel (in that order: the socket is the cheaper thing to undo and
// catches the commonest mistakes), runs the data path, serves metrics, and on
// stop removes everything it made.
import { native } from '../io/native.js';
import { formatIPv4, formatIPv6, InputError, parseIPv4, parsePrefix, parsePrefix64, type Prefix } from '../protocol/ip.js';
import { ROUTER_PORT } from '../protocol/constants.js';
import { hasNetAdmin } from '../host/privilege.js';
import { readSysctl } from '../host/ip.js';
import { startMetricsServer, type MetricsServer } from '../metrics.js';
import type { Logger } from '../log.js';
import { Engine } from './engine.js';
import { Datapath } from './datapath.js';
import { openTunnel, type Tunnel } from './tunnel.js';
import { routerRegistry } from './metrics.js';
import type { CountersSnapshot } from './counters.js';

export interface RouterOptions {
  prefix: string;
  listen: string;
  port?: number;
  routes?: string[];
  tun?: string;
  metrics?: string;
  batch?: number;
}

export interface RouterConfig {
  prefix: Prefix;
  listenIPv4: number;
  port: number;
  routes: Prefix[];
  tun: string;
  metrics?: string;
  batch: number;
}

/** Turns user input into a checked configuration; every error names the flag and the fix. */
export function routerConfig(o: RouterOptions): RouterConfig {
  if (!o.prefix) throw new InputError('--prefix is required: the /64 this router serves, e.g. --prefix 2001:db8:9:10::/64');
  if (!o.listen) throw new InputError('--listen is required: this host\'s public IPv4 address, e.g. --listen 198.51.100.1');
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
  const listenIPv4 = parseIPv4(o.listen);
  const a = listenIPv4 >>> 24;
  if (a === 0 || a >= 224) throw new InputError(`--listen ${o.listen} is not a unicast IPv4 address of this host`);
  return {
    prefix: parsePrefix64(o.prefix),
    listenIPv4, port, tun, batch,
    routes: (o.routes ?? []).map((r) => parsePrefix(r, '--route')),
    ...(o.metrics ? { metrics: o.metrics } : {}),
  };
}

export interface RunningRouter {
  readonly config: RouterConfig;
  readonly engine: Engine;
  readonly tunnel: Tunnel;
  readonly metrics?: MetricsServer;
  counters(): CountersSnapshot;
  stop(): Promise<void>;
}

export async function startRouter(cfg: RouterConfig, log: Logger): Promise<RunningRouter> {
  if (!hasNetAdmin()) {
    throw new InputError('sixbed4 router needs root (or CAP_NET_ADMIN) to create its tunnel interface: run it with sudo');
  }
  const listenText = formatIPv4(cfg.listenIPv4);
  let udpFd: number;
  try {
    udpFd = native.udpOpen(listenText, cfg.port, false).fd;
  } catch (err) {
    throw udpOpenError(err as NodeJS.ErrnoException, listenText, cfg.port);
  }
  const undo: (() => void | Promise<void>)[] = [() => native.close(udpFd)];
  const unwind = async () => { for (const u of undo.splice(0).reverse()) await u(); };
  try {
    const engine = new Engine({ prefix: cfg.prefix, listenIPv4: cfg.listenIPv4, port: cfg.port, routes: cfg.routes }, cfg.batch);
    const tunnel = await openTunnel(cfg.tun, 1, engine.routerAddress, cfg.prefix, log);
    undo.push(() => tunnel.close());
    const datapath = new Datapath(engine, udpFd, tunnel.fds[0]!);
    datapath.start();
    undo.push(() => datapath.stop());
    let metrics: MetricsServer | undefined;
    if (cfg.metrics) {
      const server = await startMetricsServer(cfg.metrics, routerRegistry(() => engine.counters.snapshot()), log);
      metrics = server;
      undo.push(() => server.close());
    }
    await warnIfNotForwarding(log);
    log.info('router ready', {
      prefix: cfg.prefix.text, listen: `${listenText}:${cfg.port}`, address: formatIPv6(engine.routerAddress),
      routes: cfg.routes.map((r) => r.text), tun: tunnel.name,
    });
    let stopped = false;
    return {
      config: cfg, engine, tunnel, ...(metrics ? { metrics } : {}),
      counters: () => engine.counters.snapshot(),
      async stop() {
        if (stopped) return;
        stopped = true;
        await unwind();
        const c = engine.counters;
        log.info('router stopped; tunnel removed', {
          udpToTun: c.udpToTunPackets, tunToUdp: c.tunToUdpPackets, relayed: c.relayPackets, dropped: c.totalDrops(),
        });
      },
    };
  } catch (err) {
    await unwind();
    throw err;
  }
}

/** The router works without forwarding, but the native side then never reaches peers: say so once. */
async function warnIfNotForwarding(log: Logger): Promise<void> {
  try {
    if (await readSysctl('net.ipv6.conf.all.forwarding') !== '1') {
      log.warn('IPv6 forwarding is off (net.ipv6.conf.all.forwarding=0): the kernel will not pass traffic between the uplink and the tunnel; run `sixbed4 host apply` or `sysctl -w net.ipv6.conf.all.forwarding=1`');
    }
  } catch { /* no /proc/sys: nothing to say */ }
}

function udpOpenError(err: NodeJS.ErrnoException, addr: string, port: number): Error {
  switch (err.code) {
    case 'EADDRINUSE':
      return new InputError(`UDP port ${port} on ${addr} is in use: is another 6bed4 router running? Stop it or choose --port`);
    case 'EADDRNOTAVAIL':
      return new InputError(`${addr} is not an address of this host: --listen must be one of its IPv4 addresses (see 'ip -4 addr')`);
    case 'EACCES':
      return new InputError(`no permission to bind UDP port ${port} on ${addr}`);
    default:
      return new Error(`cannot open UDP ${addr}:${port}: ${err.message}`);
  }
}
