/**
 * Packet batches: the unit of work between the router and the native I/O
 * addon. One batch is allocated up front and reused for every system call,
 * so the hot path allocates nothing per packet.
 *
 * Entry i describes one packet: its bytes are
 * `data.subarray(off[i], off[i] + len[i])`, and for UDP its peer is
 * `addr[i]:port[i]` (source on receive, destination on send).
 */

/**
 * Largest number of entries the native layer handles in one system call
 * (recvmmsg/sendmmsg arrays live on the C stack). Must match S4_MAX_BATCH in
 * agent/native/common.h. `newBatch` refuses larger capacities so that a
 * receive never silently uses fewer entries than the batch has.
 */
export const MAX_BATCH = 256;

export interface Batch {
  /** Number of entries. */
  readonly cap: number;
  /** Bytes per receive slot: receive i writes at `i * slot`. */
  readonly slot: number;
  /** cap * slot bytes, one allocation reused forever. */
  readonly data: Buffer;
  /** Byte offset of entry i in data. */
  readonly off: Uint32Array;
  /**
   * Length of entry i. After a receive it is the packet's real length, which
   * exceeds `slot` when the packet was truncated (drop it as oversize).
   */
  readonly len: Uint32Array;
  /** IPv4 address of entry i as a host-order uint32 (198.51.100.1 -> 0xc6336401). */
  readonly addr: Uint32Array;
  /** UDP port of entry i. */
  readonly port: Uint16Array;
  /**
   * [0] counts the packets of sends from this batch that the kernel refused
   * one by one (a firewall's EPERM, EACCES, ENETUNREACH, ...): consumed, never
   * delivered. The native layer adds to it; the caller reads and resets it.
   */
  readonly refused: Uint32Array;
}

/** Allocates a zeroed batch of `cap` entries with `slot`-byte receive slots. */
export function newBatch(cap: number, slot: number): Batch {
  if (!Number.isInteger(cap) || cap < 1 || cap > MAX_BATCH) {
    throw new RangeError(`batch cap must be an integer in [1, ${MAX_BATCH}], got ${cap}`);
  }
  if (!Number.isInteger(slot) || slot < 1 || slot > 65536) {
    throw new RangeError(`batch slot must be an integer in [1, 65536], got ${slot}`);
  }
  return {
    cap,
    slot,
    data: Buffer.alloc(cap * slot),
    off: new Uint32Array(cap),
    len: new Uint32Array(cap),
    addr: new Uint32Array(cap),
    port: new Uint16Array(cap),
    refused: new Uint32Array(1),
  };
}

/**
 * An output batch that points into src's buffer: its own offsets, lengths and
 * addresses, the same bytes. Forwarding decisions fill one of these instead of
 * copying packets.
 */
export function sharedBatch(src: Batch): Batch {
  const cap = src.cap;
  return {
    cap,
    slot: src.slot,
    data: src.data,
    off: new Uint32Array(cap),
    len: new Uint32Array(cap),
    addr: new Uint32Array(cap),
    port: new Uint16Array(cap),
    refused: new Uint32Array(1),
  };
}

/**
 * Where the cut of a TUN super-packet stands (agent/native/gso.c): the packet waiting in buf, state[0..7] its cut,
 * state[8..11] counters the addon adds to (super-packets read, segments cut from them, partial checksums completed,
 * super-packets that could not be cut), which the caller takes and zeroes.
 */
export interface TunGso {
  readonly buf: Buffer;
  readonly state: Uint32Array;
}
export const TUN_GSO_PACKETS = 8;
export const TUN_GSO_SEGMENTS = 9;
export const TUN_GSO_CHECKSUMS = 10;
export const TUN_GSO_BAD = 11;

export function newTunGso(): TunGso {
  // More than the largest packet a TUN hands over (64 KiB with its headers): one that fills it was cut off.
  return { buf: Buffer.alloc(65536 + 1024), state: new Uint32Array(16) };
}

/**
 * UDP_SEGMENT sends (agent/native/udp.c): [0] on (1) or off (0: never, or the kernel refused one), [1] sends that
 * carried it, [2] datagrams they carried, [3] times the kernel refused one (grouping went off); the caller takes and
 * zeroes [1..3].
 */
export const UDP_GSO_ON = 0;
export const UDP_GSO_SENDS = 1;
export const UDP_GSO_DATAGRAMS = 2;
export const UDP_GSO_REFUSED = 3;
export function newUdpGso(on: boolean): Uint32Array {
  const g = new Uint32Array(4);
  g[UDP_GSO_ON] = on ? 1 : 0;
  return g;
}

/**
 * TCP coalescing into the TUN's writes (agent/native/coalesce.c), counters the addon adds to: super-packets written,
 * segments merged into them, super-packets the kernel refused (their segments then written one by one); the caller
 * takes and zeroes them.
 */
export const TUN_COALESCE_PACKETS = 0;
export const TUN_COALESCE_SEGMENTS = 1;
export const TUN_COALESCE_REFUSED = 2;
export function newTunCoalesce(): Uint32Array {
  return new Uint32Array(4);
}

/**
 * UDP_GRO on a router socket (agent/native/udp.c udpRecvGro): the buffers received, merged ones waiting in buf to be
 * cut into the batch's entries, state[0] how many still wait (0: none), state[3..4] counters the addon adds to
 * (buffers that held several datagrams, the datagrams cut from them), which the caller takes and zeroes.
 */
export interface UdpGro {
  readonly buf: Buffer;
  readonly state: Uint32Array;
}
export const UDP_GRO_PENDING = 0;
export const UDP_GRO_MERGED = 3;
export const UDP_GRO_DATAGRAMS = 4;
/** Buffers received per call at most, of 64 KiB each (S4_GRO_MSGS, S4_GRO_BUF in udp.c). */
const UDP_GRO_MSGS = 64;

export function newUdpGro(): UdpGro {
  // Not zeroed: the addon reads only what the kernel wrote, so pages a socket never fills are never touched.
  return { buf: Buffer.allocUnsafeSlow(UDP_GRO_MSGS * 65536), state: new Uint32Array(8 + 4 * UDP_GRO_MSGS) };
}

/**
 * The offload counters a data path keeps (the router's Counters, the peer's PeerCounters): what the take* functions
 * below move out of the addon's arrays, zeroing them.
 */
export interface OffloadCounts {
  tunGsoPackets: number;
  tunGsoSegments: number;
  tunChecksumsCompleted: number;
  tunGsoBad: number;
  udpGsoSends: number;
  udpGsoDatagrams: number;
  udpGsoRefused: number;
  tunCoalescePackets: number;
  tunCoalesceSegments: number;
  tunCoalesceRefused: number;
}

/** A TUN cut's counters (TunGso.state) into c. */
export function takeTunGsoCounts(c: OffloadCounts, gso: TunGso): void {
  const s = gso.state;
  c.tunGsoPackets += s[TUN_GSO_PACKETS]!;
  c.tunGsoSegments += s[TUN_GSO_SEGMENTS]!;
  c.tunChecksumsCompleted += s[TUN_GSO_CHECKSUMS]!;
  c.tunGsoBad += s[TUN_GSO_BAD]!;
  s[TUN_GSO_PACKETS] = s[TUN_GSO_SEGMENTS] = s[TUN_GSO_CHECKSUMS] = s[TUN_GSO_BAD] = 0;
}

/** UDP_SEGMENT's counters (newUdpGso) into c. */
export function takeUdpGsoCounts(c: OffloadCounts, u: Uint32Array): void {
  c.udpGsoSends += u[UDP_GSO_SENDS]!;
  c.udpGsoDatagrams += u[UDP_GSO_DATAGRAMS]!;
  c.udpGsoRefused += u[UDP_GSO_REFUSED]!;
  u[UDP_GSO_SENDS] = u[UDP_GSO_DATAGRAMS] = u[UDP_GSO_REFUSED] = 0;
}

/** Coalescing's counters (newTunCoalesce) into c. */
export function takeCoalesceCounts(c: OffloadCounts, k: Uint32Array): void {
  c.tunCoalescePackets += k[TUN_COALESCE_PACKETS]!;
  c.tunCoalesceSegments += k[TUN_COALESCE_SEGMENTS]!;
  c.tunCoalesceRefused += k[TUN_COALESCE_REFUSED]!;
  k[TUN_COALESCE_PACKETS] = k[TUN_COALESCE_SEGMENTS] = k[TUN_COALESCE_REFUSED] = 0;
}
