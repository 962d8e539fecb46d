// The fast path's programs (from-peers.bpf.c on the uplink's ingress, the GRO
// pair's too, and its XDP stage at the uplink driver's hook; to-peers.bpf.c on
// the TUN's egress; `npm run build:bpf` compiles them next to this module in
// dist/) and the maps they share (fastpath.bpf.h): their configuration, the
// refused destinations, counters, test runs and attaching.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { bpfSyscalls, native } from '../io/native.js';
import { mergeRanges, type IPv4Range } from '../router/refused.js';
import {
  BPF_F_NO_PREALLOC,
  BPF_MAP_TYPE_ARRAY,
  BPF_MAP_TYPE_LPM_TRIE,
  BPF_MAP_TYPE_LRU_HASH,
  BPF_MAP_TYPE_PERCPU_ARRAY,
  BPF_PROG_TYPE_SCHED_CLS,
  loadProgram,
  MapSet,
} from './object.js';

/** Where the build puts the objects (next to this module in dist/). */
export const FROM_PEERS_OBJECT = fileURLToPath(new URL('./from-peers.bpf.o', import.meta.url));
export const TO_PEERS_OBJECT = fileURLToPath(new URL('./to-peers.bpf.o', import.meta.url));

/**
 * Counter slots, in the order of enum verdict in fastpath.bpf.h: first the from-peers program's, then the to-peers
 * program's. Names follow the engine's drop reasons where they match.
 */
export const FROM_PEERS_VERDICTS = [
  'fast', // decapsulated and handed to the kernel by the program
  'relay', // relayed to another peer by the program
  'not_6bed4', // not a UDP/IPv4 datagram to the router's address and port
  'ipv4_unusual', // IP options, fragments, bad IPv4 checksum or length, GSO, martian source
  'udp_checksum', // UDP checksum not verified by the program
  'source_port_zero',
  'keepalive',
  'short',
  'oversize',
  'not_ipv6',
  'bad_length', // payload length does not match the datagram exactly
  'nd',
  'multicast',
  'spoofed',
  'hop_limit',
  'bad_destination', // a relay to a refused IPv4, or to the router's IPv4 on another port
  'relay_unchecked', // a relay whose datagram came without a UDP checksum
  'no_route', // a relay whose next hop is not ready on the uplink (neighbour unresolved, another interface, MTU), or relays off
  'decap_failed', // the kernel refused a helper's request
  'gro', // datagrams the uplink merged (UDP GRO, fraglist GRO): whole to the router's socket
  'direct', // not a verdict (FROM_PEERS_TALLIES): of 'fast', those sent straight to the FIB's egress (direct)
  'route_lookups', // not a verdict: FIB lookups made for answers not cached (relays' next hops, direct's egress)
  'xdp', // not a verdict: of 'fast', those decapsulated by the XDP stage, before GRO
  'xdp_handed', // not a verdict: what the tc stage handed on of those, after GRO (a merged packet once)
  'gro_sent', // not a verdict: of 'fast', TCP sent through the GRO pair to be merged
  'gro_handed', // not a verdict: what came out of the GRO pair and was handed on (a merged packet once)
] as const;
export const TO_PEERS_VERDICTS = [
  'fast', // encapsulated and sent to the peer by the program (a merged packet: its segments)
  'not_ipv6',
  'oversize', // over the tunnel MTU, or merged into segments that would be (or merging not allowed)
  'bad_length',
  'nd',
  'multicast',
  'outside_prefix',
  'not_a_peer', // a port-0 (local) destination
  'bad_destination', // a refused IPv4, or the router's own
  'source_in_prefix', // a source in the /64 with a port word: the router decides
  'hop_limit',
  'no_shortcut', // extension headers or another upper layer: the outer checksum would need the whole payload
  'no_route', // as for relays
  'encap_failed',
  'gso_other', // merged packets of another protocol than TCP or UDP: the router gets their segments
  'gso_refused', // the kernel refused to encapsulate a merged packet (the router then turns to-peers off)
  // Not verdicts (TO_PEERS_TALLIES): segments of merged packets sent by the program, also counted in 'fast'.
  'gso', // all segments of the packet the same size: the outer UDP checksum is right for each
  'gso_uneven', // the last one shorter: sent without an outer UDP checksum (see to-peers.bpf.c)
  'route_lookups', // not a verdict: FIB lookups made for next hops not cached
] as const;
/** Counter slots that tally part of 'fast' again rather than name a verdict. */
export const FROM_PEERS_TALLIES: readonly FromPeersVerdict[] = [
  'direct',
  'route_lookups',
  'xdp',
  'xdp_handed',
  'gro_sent',
  'gro_handed',
];
export const TO_PEERS_TALLIES: readonly ToPeersVerdict[] = ['gso', 'gso_uneven', 'route_lookups'];
export type FromPeersVerdict = (typeof FROM_PEERS_VERDICTS)[number];
export type ToPeersVerdict = (typeof TO_PEERS_VERDICTS)[number];
type Counts = { packets: number; bytes: number };
export interface FastPathCounters {
  fromPeers: Record<FromPeersVerdict, Counts>;
  toPeers: Record<ToPeersVerdict, Counts>;
  /** Generations of the host's routes started since loading (routesChanged): each drops every cached FIB answer. */
  routeGenerations: number;
}

/** tc return codes (linux/pkt_cls.h). UNSPEC: tcx goes on to the next program, then the stack. */
export const TC_ACT_UNSPEC = -1;
export const TC_ACT_SHOT = 2;
export const TC_ACT_REDIRECT = 7;
/** enum bpf_attach_type BPF_TCX_INGRESS/EGRESS (Linux 6.6): newer than Debian's linux-libc-dev 6.1 headers, so defined here. */
export const BPF_TCX_INGRESS = 46;
export const BPF_TCX_EGRESS = 47;
/** BPF_XDP (enum bpf_attach_type) and XDP_FLAGS_DRV_MODE (linux/if_link.h): the driver's own hook, or a refusal. */
export const BPF_XDP = 37;
export const XDP_FLAGS_DRV_MODE = 4;
export const XDP_PASS = 2;
const BPF_PROG_TYPE_XDP = 6;

// config.flags (fastpath.bpf.h)
const F_RELAY = 1,
  F_TO_PEERS = 2,
  F_TEST_RUN = 4,
  F_GSO = 8,
  F_DIRECT = 16,
  F_XDP = 32;

export interface ProgramsConfig {
  /** The address and port the router's sockets are bound to: where peers' datagrams arrive, and what it sends from. */
  bindIPv4: number;
  bindPort: number;
  /** The router's own 6bed4 address's IPv4 and port (--advertise, else the bind address and port). */
  ownIPv4: number;
  ownPort: number;
  /** The served /64 (16 bytes; the first 8 are used). */
  prefix: Uint8Array;
  /** The IPv4 TTL of what the router's socket sends (net.ipv4.ip_default_ttl). */
  ttl: number;
  /** The router's TUN interface; 0 turns both programs off (everything to the slow path, nothing counted). */
  tunIfindex: number;
  /** The interface peers' datagrams arrive on and the programs send by. */
  uplinkIfindex: number;
  /** Whether to-peers sends (default true); false leaves every packet from the kernel to the router. */
  toPeers?: boolean;
  /** Whether from-peers relays (default true); false leaves relays to the router. */
  relay?: boolean;
  /** Whether to-peers takes merged (GSO) TCP (default true); false leaves it to the router, in segments. */
  gso?: boolean;
  /** from-peers sends what the FIB would forward straight to its egress (--fast-path-direct; default false). */
  direct?: boolean;
  /**
   * The uplink's MAC, once from-peers' XDP stage is attached (attachXdp): it decapsulates frames to this MAC before
   * GRO, and the tc stage hands on what it marked. Absent: the XDP stage passes everything, the tc stage does it all.
   */
  xdpMac?: Uint8Array;
  /**
   * The GRO pair (gro.ts): from-peers sends decapsulated TCP by its sending end (ifindex) to be merged at the
   * receiving end (rxIfindex, whose MAC is mac), where from-peers hands what comes out on.
   */
  gro?: { ifindex: number; rxIfindex: number; mac: Uint8Array };
  /**
   * Test runs (BPF_PROG_TEST_RUN) only: nothing is sent, so no FIB lookup is made and the next hop is these MACs;
   * to-peers frames then come with an Ethernet header, as a test run always gives one.
   */
  testRun?: { dmac: Uint8Array; smac: Uint8Array };
}

const CONFIG_SIZE = 80;
const COUNTER_SIZE = 16;
const REFUSED_MAX = 4096;
const SEEN_MAX = 65536;
const ROUTES_MAX = 16384;
/** Peers taken out of the seen map per call (8 bytes of key, 1 of value each). */
const SEEN_BATCH = 4096;
const VERDICTS = FROM_PEERS_VERDICTS.length + TO_PEERS_VERDICTS.length;

const MAPS = {
  sixbed4_config: { type: BPF_MAP_TYPE_ARRAY, keySize: 4, valueSize: CONFIG_SIZE, maxEntries: 1 },
  sixbed4_counts: { type: BPF_MAP_TYPE_PERCPU_ARRAY, keySize: 4, valueSize: COUNTER_SIZE, maxEntries: VERDICTS },
  sixbed4_refused: {
    type: BPF_MAP_TYPE_LPM_TRIE,
    keySize: 8,
    valueSize: 4,
    maxEntries: REFUSED_MAX,
    flags: BPF_F_NO_PREALLOC,
  },
  sixbed4_scratch: { type: BPF_MAP_TYPE_PERCPU_ARRAY, keySize: 4, valueSize: 512, maxEntries: 1 },
  sixbed4_seen: { type: BPF_MAP_TYPE_LRU_HASH, keySize: 8, valueSize: 1, maxEntries: SEEN_MAX },
  sixbed4_seen_last: { type: BPF_MAP_TYPE_PERCPU_ARRAY, keySize: 4, valueSize: 8, maxEntries: 1 },
  // The FIB's answers the programs keep, each for one generation of the host's routes (fastpath.bpf.h, routesChanged).
  sixbed4_hops4: { type: BPF_MAP_TYPE_LRU_HASH, keySize: 4, valueSize: 20, maxEntries: ROUTES_MAX },
  sixbed4_routes6: { type: BPF_MAP_TYPE_LRU_HASH, keySize: 40, valueSize: 24, maxEntries: ROUTES_MAX },
  sixbed4_routes6_last: { type: BPF_MAP_TYPE_PERCPU_ARRAY, keySize: 4, valueSize: 64, maxEntries: 1 },
};

export class FastPathPrograms {
  private readonly maps = new MapSet(MAPS);
  readonly fromPeersFd: number;
  readonly toPeersFd: number;
  /** -1 when the kernel refused the XDP stage (xdpRefused says why): the tc stages run alone. */
  readonly fromPeersXdpFd: number;
  private readonly xdpRefused: Error | undefined;
  /**
   * The source MAC from-peers gives a frame it decapsulated in the XDP stage or sent through the GRO pair, which the
   * tc stage looks for (from-peers.bpf.c): a unicast, locally administered address of 46 random bits, new for each
   * load, so that no frame from the wire carries it unless someone guessed it.
   */
  readonly xdpMark = Uint8Array.from(randomBytes(6), (b, i) => (i === 0 ? (b & 0xfc) | 0x02 : b));
  private readonly cpus = possibleCpus();
  private readonly links: number[] = [];
  /** The refused prefixes in the trie now, as 'address/length'. */
  private refusedNow = new Set<string>();
  private closed = false;

  /** Loads both programs (configured off). Throws with the verifier's reason when the kernel refuses one. */
  constructor(objects = { fromPeers: FROM_PEERS_OBJECT, toPeers: TO_PEERS_OBJECT }) {
    const fds: number[] = [];
    try {
      fds.push(loadProgram(objects.fromPeers, 'tc', BPF_PROG_TYPE_SCHED_CLS, 'sixbed4_from_pe', this.maps));
      fds.push(loadProgram(objects.toPeers, 'tc', BPF_PROG_TYPE_SCHED_CLS, 'sixbed4_to_peer', this.maps));
    } catch (err) {
      for (const fd of fds) native.close(fd);
      this.maps.close();
      throw err;
    }
    [this.fromPeersFd, this.toPeersFd] = fds as [number, number];
    // The XDP stage is an addition: a kernel that refuses it leaves the tc stages as they were.
    let xdp = -1;
    try {
      xdp = loadProgram(objects.fromPeers, 'xdp', BPF_PROG_TYPE_XDP, 'sixbed4_from_xd', this.maps);
    } catch (err) {
      this.xdpRefused = err as Error;
    }
    this.fromPeersXdpFd = xdp;
  }

  configure(c: ProgramsConfig): void {
    this.config = c;
    this.writeConfig();
  }

  /** Changes some of the configuration, keeping the rest (configure() first). */
  update(patch: Partial<ProgramsConfig>): void {
    if (!this.config) throw new Error('the fast path is not configured yet');
    this.configure({ ...this.config, ...patch });
  }
  private config: ProgramsConfig | undefined;
  /** The generation of the host's routes the programs' cached FIB answers must carry to be used. */
  private gen = 0;

  /**
   * The host's routes, rules, addresses, links, neighbours or forwarding switches may have changed (routes.ts watches
   * rtnetlink): the programs' cached FIB answers are all dropped at once, by a new generation in their configuration.
   */
  routesChanged(): void {
    this.gen = (this.gen + 1) >>> 0;
    this.writeConfig();
  }

  private writeConfig(): void {
    const c = this.config;
    if (!c) return;
    const v = new Uint8Array(CONFIG_SIZE),
      d = new DataView(v.buffer);
    d.setUint32(0, c.bindIPv4 >>> 0, false); // network order, as in the packet
    d.setUint16(4, c.bindPort, false);
    v[6] = c.ttl;
    v.set(c.prefix.subarray(0, 8), 8);
    d.setUint32(16, c.tunIfindex, true);
    d.setUint32(20, c.uplinkIfindex, true);
    d.setUint32(24, c.ownIPv4 >>> 0, false);
    d.setUint16(28, c.ownPort, false);
    d.setUint16(
      30,
      (c.relay === false ? 0 : F_RELAY) |
        (c.toPeers === false ? 0 : F_TO_PEERS) |
        (c.testRun ? F_TEST_RUN : 0) |
        (c.gso === false ? 0 : F_GSO) |
        (c.direct ? F_DIRECT : 0) |
        (c.xdpMac ? F_XDP : 0),
      true,
    );
    if (c.testRun) {
      v.set(c.testRun.dmac.subarray(0, 6), 32);
      v.set(c.testRun.smac.subarray(0, 6), 38);
    }
    d.setUint32(44, this.gen, true);
    if (c.xdpMac) v.set(c.xdpMac.subarray(0, 6), 48);
    v.set(this.xdpMark, 54);
    if (c.gro) {
      d.setUint32(64, c.gro.ifindex, true);
      d.setUint32(68, c.gro.rxIfindex, true);
      v.set(c.gro.mac.subarray(0, 6), 72);
    }
    bpfSyscalls.mapUpdate(this.maps.fd('sixbed4_config'), new Uint8Array(4), v);
  }

  /**
   * The destinations the engine refuses (refused.ts), as the programs see them: the new set's prefixes go in before
   * the old set's others come out, so no packet meets a table missing any refused address. More prefixes than the
   * trie holds: 0.0.0.0/0 alone, which sends every relay and send the slow way.
   */
  setRefused(ranges: readonly IPv4Range[]): void {
    let next = new Set(
      mergeRanges(ranges)
        .flatMap(rangePrefixes)
        .map(([a, len]) => `${a}/${len}`),
    );
    if (next.size > REFUSED_MAX) next = new Set(['0/0']);
    const fd = this.maps.fd('sixbed4_refused');
    const key = (p: string) => {
      const [a, len] = p.split('/').map(Number) as [number, number];
      const k = new Uint8Array(8),
        v = new DataView(k.buffer);
      v.setUint32(0, len, true);
      v.setUint32(4, a >>> 0, false); // the address in network order
      return k;
    };
    // The programs keep what the table said per destination (fastpath.bpf.h, hop4) for one generation of routes:
    // a new one after the additions (no destination newly refused answers from before them) and after the removals.
    for (const p of next) if (!this.refusedNow.has(p)) bpfSyscalls.mapUpdate(fd, key(p), new Uint8Array(4));
    this.routesChanged();
    for (const p of this.refusedNow) if (!next.has(p)) bpfSyscalls.mapDelete(fd, key(p));
    this.routesChanged();
    this.refusedNow = next;
  }

  /**
   * The peers (IPv4 and port, host order) whose packets from-peers forwarded since the last call, taken out of the
   * map so that the next call sees only what came after. At most budgetMs is spent (a flood of new sources fills the
   * map again within the second): what is left stays in the map for the next call, and the map being LRU, the
   * kernel drops the oldest when it is full, never a new peer. The kernel hands a hash map over bucket by bucket
   * (bpf.c, map_drain): a bucket bigger than the buffers makes them grow, a busy one waits for the next call.
   */
  takeSeen(budgetMs = Infinity): { ipv4: number; port: number }[] {
    const out: { ipv4: number; port: number }[] = [];
    const fd = this.maps.fd('sixbed4_seen');
    const until = performance.now() + budgetMs;
    for (;;) {
      const { count, status } = bpfSyscalls.mapDrain(fd, this.seenKeys, this.seenValues);
      const k = this.seenKeys;
      for (let i = 0, o = 0; i < count; i++, o += 8) {
        // The key is (IPv4 << 16 | port), each as the packet's bytes, in a little-endian u64 (x86, arm64): the
        // port's two bytes first, then the IPv4's four.
        out.push({
          port: (k[o]! << 8) | k[o + 1]!,
          ipv4: ((k[o + 2]! << 24) | (k[o + 3]! << 16) | (k[o + 4]! << 8) | k[o + 5]!) >>> 0,
        });
      }
      if (status === 'end' || status === 'again') break;
      if (status === 'grow') {
        // No bucket holds more than the map: a refusal at that size is not one more entries would cure.
        if (this.seenValues.length >= SEEN_MAX)
          throw new Error(`the seen-peers map has a bucket of more than ${SEEN_MAX} entries`);
        this.seenKeys = new Uint8Array(this.seenKeys.length * 2);
        this.seenValues = new Uint8Array(this.seenValues.length * 2);
        continue;
      }
      if (performance.now() >= until) break;
    }
    // Each CPU's "last peer noted" goes, or its peer would not be noted again after this drain.
    bpfSyscalls.mapUpdate(this.maps.fd('sixbed4_seen_last'), new Uint8Array(4), new Uint8Array(8 * this.cpus));
    return out;
  }
  private seenKeys = new Uint8Array(8 * SEEN_BATCH);
  private seenValues = new Uint8Array(SEEN_BATCH);

  /** Runs a program on one frame in the kernel (BPF_PROG_TEST_RUN): nothing is sent or redirected. */
  run(prog: 'fromPeers' | 'fromPeersXdp' | 'toPeers', frame: Uint8Array): { retval: number; out: Uint8Array } {
    const out = new Uint8Array(frame.length + 64);
    const fd = { fromPeers: this.fromPeersFd, fromPeersXdp: this.fromPeersXdpFd, toPeers: this.toPeersFd }[prog];
    const r = bpfSyscalls.progTestRun(fd, frame, out);
    return { retval: r.retval, out: out.subarray(0, r.size) };
  }

  /** The counters summed over CPUs. */
  counters(): FastPathCounters {
    const buf = new Uint8Array(COUNTER_SIZE * this.cpus),
      d = new DataView(buf.buffer),
      key = new Uint8Array(4);
    const read = (slot: number): Counts => {
      new DataView(key.buffer).setUint32(0, slot, true);
      bpfSyscalls.mapLookup(this.maps.fd('sixbed4_counts'), key, buf);
      let packets = 0,
        bytes = 0;
      for (let c = 0; c < this.cpus; c++) {
        packets += Number(d.getBigUint64(c * COUNTER_SIZE, true));
        bytes += Number(d.getBigUint64(c * COUNTER_SIZE + 8, true));
      }
      return { packets, bytes };
    };
    const fromPeers = {} as FastPathCounters['fromPeers'],
      toPeers = {} as FastPathCounters['toPeers'];
    FROM_PEERS_VERDICTS.forEach((name, i) => {
      fromPeers[name] = read(i);
    });
    TO_PEERS_VERDICTS.forEach((name, i) => {
      toPeers[name] = read(FROM_PEERS_VERDICTS.length + i);
    });
    return { fromPeers, toPeers, routeGenerations: this.gen };
  }

  /** Zeroes the counters (after the load-time self-test, whose packets are not traffic). */
  resetCounters(): void {
    const zero = new Uint8Array(COUNTER_SIZE * this.cpus),
      key = new Uint8Array(4);
    for (let i = 0; i < VERDICTS; i++) {
      new DataView(key.buffer).setUint32(0, i, true);
      bpfSyscalls.mapUpdate(this.maps.fd('sixbed4_counts'), key, zero);
    }
  }

  /**
   * Attaches from-peers to the uplink's ingress and to-peers to the TUN's egress, through tcx links (Linux 6.6+).
   * A link lives as long as its fd: when this process ends, however it ends, the kernel detaches the programs.
   */
  attach(uplinkIfindex: number, tunIfindex: number): void {
    this.links.push(bpfSyscalls.linkCreate(this.fromPeersFd, uplinkIfindex, BPF_TCX_INGRESS));
    this.links.push(bpfSyscalls.linkCreate(this.toPeersFd, tunIfindex, BPF_TCX_EGRESS));
  }

  /** Attaches from-peers to the ingress of the GRO pair's receiving end too (tcx), where merged TCP comes out. */
  attachGroRx(ifindex: number): void {
    this.links.push(bpfSyscalls.linkCreate(this.fromPeersFd, ifindex, BPF_TCX_INGRESS));
  }

  /**
   * Attaches from-peers' XDP stage to the driver's own XDP hook of ifindex (the uplink, or the device under it), as a
   * link: refused where the driver has none (generic XDP runs after GRO, which is what the stage is for) or another
   * program holds it. It passes everything until configure() gives it the uplink's MAC (xdpMac).
   */
  attachXdp(ifindex: number): void {
    if (this.xdpRefused) throw new Error(`the kernel refused the XDP stage: ${this.xdpRefused.message}`);
    this.links.push(bpfSyscalls.linkCreate(this.fromPeersXdpFd, ifindex, BPF_XDP, XDP_FLAGS_DRV_MODE));
  }

  /** Detaches (closes the links) and releases the programs and their maps. Idempotent. */
  close(): void {
    for (const fd of this.links.splice(0)) native.close(fd);
    if (this.closed) return;
    this.closed = true;
    native.close(this.fromPeersFd);
    if (this.fromPeersXdpFd >= 0) native.close(this.fromPeersXdpFd);
    native.close(this.toPeersFd);
    this.maps.close();
  }
}

/** The fewest prefixes [address, length] that cover exactly the range. */
export function rangePrefixes(r: IPv4Range): [number, number][] {
  const out: [number, number][] = [];
  let start = r.start;
  while (start <= r.end) {
    // The largest block aligned at start that does not pass the end.
    let len = 32;
    while (len > 0) {
      const size = 2 ** (33 - len);
      if (start % size !== 0 || start + size - 1 > r.end) break;
      len--;
    }
    out.push([start, len]);
    start += 2 ** (32 - len);
  }
  return out;
}

/** The number of possible CPUs: per-CPU map values hold one slot for each. */
export function possibleCpus(): number {
  const text = readFileSync('/sys/devices/system/cpu/possible', 'utf8').trim();
  const last = /(\d+)$/.exec(text);
  if (!last) throw new Error(`cannot read the possible CPUs from /sys/devices/system/cpu/possible ('${text}')`);
  return Number(last[1]) + 1;
}
