// The router's in-kernel fast path: where it attaches, whether this kernel
// runs it right, and taking it down again.
//
// from-peers goes on the ingress of the interface that holds the router's bind
// address, to-peers on the egress of the router's TUN, through tcx links
// (Linux 6.6+): the attachment is the link fd this process holds, so the
// kernel detaches both when the router stops or dies, however it dies; no tc
// filter can be left behind to forward (or, with the TUN gone, to swallow)
// packets without a router. Kernels without tcx keep the TypeScript path.
// from-peers runs on the ingress of the router's GRO pair too (gro.ts), and,
// when asked for, as an XDP stage at the uplink driver's hook (an XDP link:
// the same lifetime).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { native, txChecksum } from '../io/native.js';
import { ipJson } from '../host/ip.js';
import { InputError } from '../../lib/errors.js';
import { formatIPv4 } from '../../lib/ip.js';
import { makeAddress } from '../protocol/address.js';
import { writeHeader } from '../protocol/ipv6.js';
import { fillChecksum, fold, sumWords } from '../protocol/checksum.js';
import type { IPv4Range } from '../router/refused.js';
import type { Logger } from '../../lib/log.js';
import { hostBypassed, type Bypassed } from './bypass.js';
import { watchRoutes } from './routes.js';
import { makeGroPair, type GroPair } from './gro.js';
import { linkMac } from './link.js';
import { FastPathPrograms, TC_ACT_REDIRECT, type FastPathCounters, type ProgramsConfig } from './programs.js';

export type FastPathMode = 'auto' | 'on' | 'off';

/** `--fast-path on` where the fast path cannot run: bad input for the router (exit 2), with the reason apart. */
export class FastPathUnavailable extends InputError {
  override name = 'FastPathUnavailable';
  constructor(readonly why: string) {
    super(`--fast-path on: ${why}`);
  }
}

/**
 * The default mode: auto. The fast path runs wherever the kernel and the capabilities allow and forwards exactly
 * what the router would (the differential tests hold it to that); where it cannot, the router says why once and
 * runs as before. What it bypasses on the host (docs/router.md) the router says at start.
 */
export const DEFAULT_FAST_PATH: FastPathMode = 'auto';

export function fastPathModeOf(text: string | undefined): FastPathMode {
  const m = text ?? DEFAULT_FAST_PATH;
  if (m === 'auto' || m === 'on' || m === 'off') return m;
  throw new InputError(`--fast-path ${text}: use auto, on or off`);
}

export interface FastPathConfig {
  bindIPv4: number;
  bindPort: number;
  /** The router's own 6bed4 address's IPv4 and port (--advertise, else the bind address and port). */
  ownIPv4: number;
  ownPort: number;
  prefix: Uint8Array;
  /** The destinations the router refuses to send to (refused.ts), as the engine has them now. */
  refused: readonly IPv4Range[];
  /**
   * The uplink, when the bound address is not (yet) on one: a failover standby binds the floating address, which only
   * the active member holds (on a macvlan of this uplink). Otherwise the interface that holds the bound address.
   */
  uplink?: string;
  /** from-peers sends what the FIB would forward straight to its egress (from-peers.bpf.c, direct_egress). */
  direct?: boolean;
  /**
   * Whether from-peers decapsulates before GRO too, in an XDP stage on the uplink's driver (default false), where the
   * driver has its own XDP hook: GRO then merges peers' TCP as it merges native TCP (from-peers.bpf.c).
   */
  xdp?: boolean;
  /** Whether from-peers sends decapsulated TCP through a GRO pair to be merged (default true; gro.ts). */
  gro?: boolean;
}

export interface FastPath {
  /** The interface whose ingress from-peers is on (and that to-peers sends by). */
  readonly uplink: string;
  counters(): FastPathCounters;
  /**
   * Peers whose packets the programs forwarded since the last call (the router tracks them live), taking at most
   * about budgetMs: the rest waits for the next call.
   */
  takeSeen(budgetMs?: number): { ipv4: number; port: number }[];
  /** The engine's refused destinations changed (the host's local table did): the programs follow. */
  setRefused(ranges: readonly IPv4Range[]): void;
  /** Detaches the program and releases it. Idempotent. */
  stop(): void;
}

/** A program loaded and tested, not attached yet: attach() once the router's TUN exists. */
export interface PreparedFastPath {
  /** Points the program at tun and attaches it; 'on' throws when it cannot, 'auto' logs why and returns undefined. */
  attach(tun: string): FastPath | undefined;
  /** Releases the program without attaching it (the router failed to start). Idempotent. */
  close(): void;
}

/** Why the fast path fell back (each said once in the log when it happened), as sixbed4_router_fast_path_fallbacks_total counts them. */
export const FALLBACKS = [
  'unavailable',
  'send_off',
  'to_peers_off',
  'gso_refused',
  'uplink_merges',
  'no_xdp',
  'no_gro',
] as const;
export type Fallback = (typeof FALLBACKS)[number];
const fallbackCounts = new Map<Fallback, number>(FALLBACKS.map((f) => [f, 0]));
const fellBack = (f: Fallback) => fallbackCounts.set(f, fallbackCounts.get(f)! + 1);
/** The fallbacks of this process so far: unavailable (auto without the fast path), send_off (relays and to-peers with the router: no IPv4 forwarding), to_peers_off (an uplink that leaves checksums to the next hop), gso_refused, uplink_merges (GRO of peers' datagrams), no_xdp (the XDP stage asked for, not attached), no_gro (no GRO pair: peers' TCP forwarded segment by segment). */
export function fastPathFallbacks(): ReadonlyMap<Fallback, number> {
  return fallbackCounts;
}

/**
 * Loads and tests the fast path as mode says, before the router makes anything, so a refusal leaves nothing to
 * undo: 'off' does nothing; 'on' throws when it cannot run; 'auto' logs why once and returns undefined, leaving
 * every packet to the TypeScript router.
 */
export async function prepareFastPath(
  mode: FastPathMode,
  cfg: FastPathConfig,
  log: Logger,
): Promise<PreparedFastPath | undefined> {
  if (mode === 'off') return undefined;
  const refuse = (why: string): undefined => {
    if (mode === 'on') throw new FastPathUnavailable(why);
    fellBack('unavailable');
    log.warn(`fast path unavailable, every packet takes the TypeScript path: ${why}`);
    return undefined;
  };
  let uplink: string, prog: FastPathPrograms;
  try {
    uplink = cfg.uplink ?? (await uplinkOf(cfg.bindIPv4));
    prog = load(cfg);
  } catch (err) {
    return refuse((err as Error).message);
  }
  const bypassed = await hostBypassed();
  const xdp = cfg.xdp ? await xdpDeviceOf(uplink) : undefined;
  let pair: GroPair | undefined;
  return {
    close: () => {
      prog.close();
      pair?.remove();
    },
    attach(tun) {
      let toPeersWhy: string | undefined, sendWhy: string | undefined, config: ProgramsConfig;
      let unwatchRoutes: () => void;
      try {
        const uplinkIndex = native.ifIndex(uplink),
          tunIndex = native.ifIndex(tun);
        if (!uplinkIndex || !tunIndex) throw new Error(`interface ${uplinkIndex ? tun : uplink} vanished`);
        sendWhy = whyNotSend(uplink);
        toPeersWhy = sendWhy ?? whyNotToPeers(uplink);
        config = { ...programsConfig(cfg, tunIndex, uplinkIndex), toPeers: !toPeersWhy, relay: !sendWhy };
        prog.configure(config);
        // Watching before attaching: no cached answer can predate the watch.
        unwatchRoutes = watchRoutes(prog, uplinkIndex, log);
        try {
          attach(prog, uplinkIndex, tunIndex, uplink);
          if (cfg.gro !== false) pair = attachGro(prog, log);
        } catch (err) {
          unwatchRoutes();
          throw err;
        }
      } catch (err) {
        prog.close();
        pair?.remove();
        return refuse((err as Error).message);
      }
      const unwatchXdp = xdp ? attachXdp(prog, uplink, xdp, log) : () => undefined;
      if (sendWhy) {
        fellBack('send_off');
        log.warn(`fast path: relays and packets from the kernel to peers stay with the router: ${sendWhy}`);
      } else if (toPeersWhy) {
        fellBack('to_peers_off');
        log.warn(`fast path: packets from the kernel to peers stay with the router: ${toPeersWhy}`);
      }
      const what = sendWhy
        ? 'peers -> kernel'
        : toPeersWhy
          ? 'peers -> kernel and relays'
          : 'peers <-> kernel and relays';
      log.info(`fast path on: ${what} forwarded in the kernel`, { uplink, tun });
      sayBypassed(bypassed, !sendWhy, !!cfg.direct, log);
      const unwatch = watchMerged(prog, config.toPeers !== false, uplink, log);
      return {
        uplink,
        counters: () => prog.counters(),
        takeSeen: (budgetMs) => prog.takeSeen(budgetMs),
        setRefused: (r) => prog.setRefused(r),
        stop: () => {
          unwatch();
          unwatchXdp();
          unwatchRoutes();
          prog.close();
          pair?.remove();
        },
      };
    },
  };
}

/**
 * Where the XDP stage goes: the uplink itself, or the device under a macvlan uplink (a failover member's), whose
 * frames for the macvlan's MAC pass it first. Under other stacked uplinks (a VLAN's frames are tagged at the lower
 * device; a bridge would learn the stage's mark as a source MAC) there is none: `{ why }`.
 */
async function xdpDeviceOf(uplink: string): Promise<{ dev: string } | { why: string }> {
  const dev = lowestLink(uplink);
  if (dev === uplink) return { dev };
  let kind: string | undefined;
  try {
    const [link] = await ipJson<{ linkinfo?: { info_kind?: string } }[]>('-d', 'link', 'show', 'dev', uplink);
    kind = link?.linkinfo?.info_kind;
  } catch (err) {
    return { why: `cannot read what kind of interface ${uplink} is (${(err as Error).message})` };
  }
  return kind === 'macvlan' ? { dev } : { why: `${uplink} is a ${kind ?? 'stacked'} interface over ${dev}` };
}

/**
 * Makes the GRO pair and points from-peers at it (gro.ts): a peer's TCP is then merged before the kernel forwards it.
 * Where it cannot be made, TCP is handed on segment by segment, as before: said once, counted (no_gro).
 */
function attachGro(prog: FastPathPrograms, log: Logger): GroPair | undefined {
  let pair: GroPair | undefined;
  try {
    pair = makeGroPair(log);
    prog.attachGroRx(pair.rx.index);
    prog.update({ gro: { ifindex: pair.tx.index, rxIfindex: pair.rx.index, mac: pair.rx.mac } });
    log.info(`fast path: peers' TCP is merged (GRO) through ${pair.tx.name}/${pair.rx.name} before it is forwarded`);
    return pair;
  } catch (err) {
    pair?.remove();
    fellBack('no_gro');
    log.warn(
      `fast path: no GRO pair (${(err as Error).message}): peers' TCP is forwarded segment by segment (docs/router.md)`,
    );
    return undefined;
  }
}

/** How often the router tries the XDP hook again while another program holds it. */
const XDP_RETRY_MS = 1000;

/**
 * Adds the XDP stage where the uplink's driver (or, under a macvlan, its lower device's) has its own XDP hook, and
 * turns it on. Where it has none, from-peers stays at tc alone, as before: said once, counted (no_xdp). Where another
 * program holds the hook (the router this one succeeds, in a handover: its link goes when it exits), it tries again
 * every second, and says when it got it. Returns what stops the retries.
 */
function attachXdp(prog: FastPathPrograms, uplink: string, where: { dev: string } | { why: string }, log: Logger) {
  const dev = 'dev' in where ? where.dev : uplink;
  const fields = { uplink, xdp: dev };
  const tryAttach = (): 'on' | 'busy' | string => {
    try {
      if ('why' in where) return where.why;
      const mac = linkMac(uplink);
      const index = native.ifIndex(dev);
      if (!index) return `interface ${dev} vanished`;
      prog.attachXdp(index);
      prog.update({ xdpMac: mac });
      log.info(`fast path: peers' datagrams are decapsulated at ${dev}'s XDP hook, before GRO`, fields);
      return 'on';
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'EBUSY' || e.code === 'EEXIST') return 'busy';
      return e.code === 'EOPNOTSUPP' || e.code === 'ENOTSUPP'
        ? `${dev}'s driver has no XDP hook of its own (${e.message})`
        : e.message;
    }
  };
  const first = tryAttach();
  if (first === 'on') return () => undefined;
  fellBack('no_xdp');
  const at = `peers' datagrams are decapsulated at tc, after the uplink's GRO (their TCP merged through the GRO pair)`;
  if (first !== 'busy') {
    log.info(`fast path: ${at}: ${first} (docs/router.md)`, fields);
    return () => undefined;
  }
  log.info(`fast path: ${at} while another program holds ${dev}'s XDP hook; trying again every second`, fields);
  const timer = setInterval(() => {
    const r = tryAttach();
    if (r === 'busy') return;
    clearInterval(timer);
    if (r !== 'on') log.info(`fast path: ${at}: ${r} (docs/router.md)`, fields);
  }, XDP_RETRY_MS);
  timer.unref();
  return () => clearInterval(timer);
}

/** Says which of the host's nftables chains the router's datagrams pass only on the TypeScript path. */
function sayBypassed(b: Bypassed | undefined, sends: boolean, direct: boolean, log: Logger): void {
  if (direct) {
    log.info(
      "fast path: direct: peers' packets the kernel would forward go straight to its egress, past netfilter's prerouting and forward hooks (docs/router.md)",
    );
    if (b?.forward.length)
      log.warn(
        `fast path: direct: peers' packets it forwards do not pass these nftables chains of the host: ${b.forward.join(', ')}`,
      );
  }
  if (!b) return;
  if (b.receive.length) {
    log.warn(
      `fast path: peers' datagrams it forwards do not pass these nftables chains of the host: ${b.receive.join(', ')} (from-peers runs before them; docs/router.md)`,
    );
  }
  if (sends && b.send.length) {
    log.warn(
      `fast path: datagrams it sends to peers do not pass these nftables chains of the host: ${b.send.join(', ')} (to-peers and relays send past them; docs/router.md)`,
    );
  }
}

/** How often the router looks at what the kernel did with merged packets. */
const MERGED_WATCH_MS = 1000;

/**
 * Watches, once a second, for what only real traffic shows about merged packets, and says each once:
 * - A test run cannot make a merged packet (its GSO type stays 0), so the kernel's answer to encapsulating one comes
 *   with the first real one: refused, it is left unchanged to the router (counted gso_refused). From then on to-peers
 *   sends nothing, so that no flow is split between the two paths (its merged packets through the router, the rest
 *   in the kernel: reordered).
 * - Peers' datagrams the uplink merged (fraglist GRO, `rx-gro-list`; UDP GRO into a socket that asked for it) cannot
 *   be decapsulated as one packet: they go whole to the router's socket, and a peer's flow is split between the two
 *   paths. Only the host's owner can turn that off.
 */
function watchMerged(prog: FastPathPrograms, toPeersOn: boolean, uplink: string, log: Logger): () => void {
  let toPeers = toPeersOn,
    groSaid = false;
  const timer = setInterval(() => {
    let c;
    try {
      c = prog.counters();
    } catch {
      clearInterval(timer); // closed
      return;
    }
    if (toPeers && c.toPeers.gso_refused.packets) {
      toPeers = false;
      fellBack('gso_refused');
      prog.update({ toPeers: false });
      log.warn(
        'fast path: this kernel refused to encapsulate a merged (GSO) packet (bpf_skb_adjust_room with BPF_F_ADJ_ROOM_FIXED_GSO); packets from the kernel to peers stay with the router from now on, so that no flow is split between two paths',
      );
    }
    if (!groSaid && c.fromPeers.gro.packets) {
      groSaid = true;
      fellBack('uplink_merges');
      log.warn(
        `fast path: ${uplink} merges peers' datagrams (GRO of UDP, e.g. rx-gro-list on), which the fast path cannot decapsulate: those take the router, and a peer's flow is split between two paths (reordered); \`ethtool -K ${uplink} rx-gro-list off rx-udp-gro-forwarding off\` keeps them apart`,
      );
    }
    if (!toPeers && groSaid) clearInterval(timer);
  }, MERGED_WATCH_MS);
  timer.unref();
  return () => clearInterval(timer);
}

function programsConfig(cfg: FastPathConfig, tunIfindex: number, uplinkIfindex: number): ProgramsConfig {
  return {
    bindIPv4: cfg.bindIPv4,
    bindPort: cfg.bindPort,
    ownIPv4: cfg.ownIPv4,
    ownPort: cfg.ownPort,
    prefix: cfg.prefix,
    ttl: defaultTtl(),
    tunIfindex,
    uplinkIfindex,
    ...(cfg.direct ? { direct: true } : {}),
  };
}

/**
 * Why the programs must not send at all (relays, to-peers), if they must not. The kernel's route lookup for BPF
 * (bpf_fib_lookup) answers only where IPv4 forwarding is on for the interface, even for the router's own sends;
 * Kubernetes nodes have it on, a plain host often not, and turning it on is the host owner's choice (the host then
 * forwards IPv4 that arrives there), so the router only says so.
 */
function whyNotSend(uplink: string): string | undefined {
  const path = `/proc/sys/net/ipv4/conf/${uplink}/forwarding`;
  let on: string;
  try {
    on = readFileSync(path, 'utf8').trim();
  } catch (err) {
    return `cannot read ${path} (${(err as Error).message})`;
  }
  return on === '1'
    ? undefined
    : `IPv4 forwarding is off on ${uplink}, and the kernel's route lookup for BPF needs it (sysctl -w net.ipv4.conf.${uplink}.forwarding=1, then restart the router)`;
}

/**
 * Why to-peers must not send by uplink, if it must not. A packet whose checksum a local sender (a pod, a service on
 * this host) left to the hardware reaches the TUN unfinished; to-peers keeps it so and sends it by the uplink. A NIC
 * finishes it, and so does the kernel for a device that does not offer to; a virtual device that offers to (a veth)
 * hands it on unfinished, and the peer would get it so.
 */
export function whyNotToPeers(uplink: string): string | undefined {
  // A macvlan (a failover member's) hands its packets to its lower link, whose checksum offload is what counts: the
  // macvlan itself always says tx-checksumming on, fixed, and has no device.
  const lower = lowestLink(uplink);
  if (lower !== uplink) {
    const why = whyNotToPeers(lower);
    return why ? `${uplink} sends through ${lower}: ${why}` : undefined;
  }
  if (existsSync(`/sys/class/net/${uplink}/device`)) return undefined; // hardware
  let offers: boolean;
  try {
    offers = txChecksum(uplink);
  } catch (err) {
    return `cannot read ${uplink}'s checksum offload (${(err as Error).message})`;
  }
  return offers
    ? `${uplink} is a virtual interface that leaves checksums to the next hop (tx-checksumming on), so packets from local senders would reach peers unfinished; \`ethtool -K ${uplink} tx off\` lets the fast path take them`
    : undefined;
}

/** The link under a stacked one (macvlan, vlan: /sys/class/net/DEV/lower_*), down to the bottom; itself otherwise. */
export function lowestLink(dev: string, depth = 0): string {
  let lowers: string[];
  try {
    lowers = readdirSync(`/sys/class/net/${dev}`).filter((n) => n.startsWith('lower_'));
  } catch {
    return dev;
  }
  return lowers.length === 1 && depth < 4 ? lowestLink(lowers[0]!.slice('lower_'.length), depth + 1) : dev;
}

/** The TTL the router's unconnected UDP socket sends with: this network namespace's default. */
function defaultTtl(): number {
  const ttl = Number(readFileSync('/proc/sys/net/ipv4/ip_default_ttl', 'utf8').trim());
  return Number.isInteger(ttl) && ttl > 0 && ttl < 256 ? ttl : 64;
}

/** Loads the programs and runs the self-test, in test-run mode (nothing is redirected or sent). */
function load(cfg: FastPathConfig): FastPathPrograms {
  let prog: FastPathPrograms;
  try {
    prog = new FastPathPrograms();
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new Error(
      e.code === 'ENOENT'
        ? `the fast path's BPF objects are not installed (${e.path ?? e.message}; \`npm run build:bpf\` makes them)`
        : `the kernel refused the BPF programs (needs CAP_BPF and CAP_NET_ADMIN): ${e.message}`,
    );
  }
  try {
    prog.setRefused(cfg.refused);
    prog.configure({ ...programsConfig(cfg, 1, 1), testRun: { dmac: new Uint8Array(6), smac: new Uint8Array(6) } });
    selfTest(prog, cfg);
    // Its packets were no traffic: neither counted nor a peer seen.
    prog.resetCounters();
    prog.takeSeen();
    return prog;
  } catch (err) {
    prog.close();
    throw err;
  }
}

function attach(prog: FastPathPrograms, uplinkIndex: number, tunIndex: number, uplink: string): void {
  try {
    prog.attach(uplinkIndex, tunIndex);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new Error(
      e.code === 'EINVAL' || e.code === 'ENOTSUPP' || e.code === 'EOPNOTSUPP'
        ? `this kernel cannot attach through tcx (Linux 6.6 or later), which the fast path needs so that nothing stays attached without the router (${e.message})`
        : `cannot attach to ${uplink}'s ingress and the tunnel's egress: ${e.message}`,
    );
  }
}

/**
 * One packet each way through the loaded programs (BPF_PROG_TEST_RUN: nothing is sent). A kernel older than the
 * decapsulation flag (Linux 6.3) loads the programs but refuses the flag at run time: this finds out before any
 * peer's packet would.
 */
function selfTest(prog: FastPathPrograms, cfg: FastPathConfig): void {
  const peer = selfTestPeer(cfg),
    port = 2;
  const other = Uint8Array.from(cfg.prefix);
  other[7] = other[7]! ^ 1; // another /64
  const peerAddress = makeAddress(cfg.prefix, peer, port, 1);
  const inner = new Uint8Array(48);
  writeHeader(inner, 0, 8, 59, 64, peerAddress, other);
  const f = new Uint8Array(14 + 28 + inner.length),
    v = new DataView(f.buffer);
  v.setUint16(12, 0x0800);
  f[14] = 0x45;
  v.setUint16(16, 28 + inner.length);
  f[22] = 64;
  f[23] = 17;
  v.setUint32(26, peer);
  v.setUint32(30, cfg.bindIPv4 >>> 0);
  v.setUint16(24, ~fold(sumWords(f, 14, 20)) & 0xffff);
  v.setUint16(34, port);
  v.setUint16(36, cfg.bindPort);
  v.setUint16(38, 8 + inner.length); // UDP checksum 0: none
  f.set(inner, 42);
  const r = prog.run('fromPeers', f);
  if (r.retval !== TC_ACT_REDIRECT || r.out.length !== 14 + inner.length || r.out[14 + 7] !== 63) {
    throw new Error(
      prog.counters().fromPeers.decap_failed.packets
        ? 'this kernel refuses to decapsulate IPv4 into IPv6 in BPF (BPF_F_ADJ_ROOM_DECAP_L3_IPV6 needs Linux 6.3 or later)'
        : `the from-peers self-test gave ${r.retval} and ${r.out.length} bytes instead of a redirect of ${14 + inner.length}`,
    );
  }
  // An echo request from another /64 to the peer, as the kernel routes it into the TUN (with an Ethernet header: a
  // test run always has one).
  const echo = new Uint8Array(14 + 40 + 16);
  new DataView(echo.buffer).setUint16(12, 0x86dd);
  writeHeader(echo, 14, 16, 58, 64, other, peerAddress);
  echo[14 + 40] = 128; // Echo Request
  fillChecksum(echo, 14, 58, 14 + 40, 16, 2);
  const e = prog.run('toPeers', echo);
  if (e.retval !== TC_ACT_REDIRECT || e.out.length !== echo.length + 28) {
    throw new Error(
      prog.counters().toPeers.encap_failed.packets
        ? 'this kernel refuses to encapsulate IPv6 in UDP/IPv4 in BPF (bpf_skb_adjust_room with BPF_F_ADJ_ROOM_ENCAP_L3_IPV4)'
        : `the to-peers self-test gave ${e.retval} and ${e.out.length} bytes instead of a redirect of ${echo.length + 28}`,
    );
  }
}

/**
 * The self-test's made-up peer: a neighbour of the router's address (a unicast source it accepts) that the router
 * does not refuse to send to. The plain neighbour (address ^ 1) may be another address of this host (a failover
 * member's own address beside the floating one): refused, to-peers would return -1 and Auto would fall back for it.
 */
export function selfTestPeer(cfg: Pick<FastPathConfig, 'bindIPv4' | 'refused'>): number {
  const refused = (a: number) => cfg.refused.some((r) => a >= r.start && a <= r.end);
  for (let i = 1; i < 255; i++) {
    const a = (cfg.bindIPv4 ^ i) >>> 0;
    const host = a & 0xff;
    if (host !== 0 && host !== 255 && !refused(a)) return a;
  }
  return (cfg.bindIPv4 ^ 1) >>> 0; // every neighbour refused: the test says so
}

/** The interface holding ipv4: datagrams to it arrive there (a host with several uplinks: the others stay slow). */
async function uplinkOf(ipv4: number): Promise<string> {
  const text = formatIPv4(ipv4);
  const addrs = await ipJson<{ ifname: string; addr_info?: { local: string }[] }[]>('-4', 'addr', 'show');
  const a = addrs.find((x) => x.addr_info?.some((i) => i.local === text));
  if (!a) throw new Error(`no interface holds ${text}`);
  const [link] = await ipJson<{ link_type?: string }[]>('link', 'show', 'dev', a.ifname);
  // The program reads a 14-byte Ethernet header before the IPv4 one.
  if (link?.link_type !== 'ether') {
    throw new Error(
      `${text} is on ${a.ifname}, a ${link?.link_type ?? 'non-Ethernet'} interface: the fast path handles Ethernet uplinks only`,
    );
  }
  return a.ifname;
}
