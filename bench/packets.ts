// The packets the load generators send, built once into reusable batches.
// Everything is a real, checksummed IPv6/UDP packet, so a kernel or router
// that inspected more than it should would still see valid traffic.
//
// The 6→4 generator addresses many peers: for each packet it rewrites the
// low 8 bytes of the destination (the embedded IPv4, port and lanip) and
// patches the UDP checksum from a precomputed partial sum, so that 100,000
// distinct destinations cost the same few operations per packet as one.
import { IPV6_HEADER, NH_UDP } from '../agent/protocol/constants.js';
import { writeAddress } from '../agent/protocol/address.js';
import { fillChecksum, fold, sumWords } from '../agent/protocol/checksum.js';
import { OFF_DST, writeHeader } from '../agent/protocol/ipv6.js';
import type { Batch } from '../agent/io/batch.js';

/** Smallest packet we generate: IPv6 header + UDP header, no payload. */
export const MIN_SIZE = IPV6_HEADER + 8;
/** UDP port used for inner traffic (discard); sinks match on it. */
export const SINK_PORT = 9;

/** Writes a `size`-byte IPv6/UDP packet src → dst (port 9 → 9) at off, with a valid checksum. */
export function writeUdp6(out: Uint8Array, off: number, size: number, src: Uint8Array, dst: Uint8Array, hops = 64): void {
  if (!Number.isInteger(size) || size < MIN_SIZE || size > 65535) throw new RangeError(`packet size ${size}: use ${MIN_SIZE}..65535`);
  const udpLen = size - IPV6_HEADER;
  writeHeader(out, off, udpLen, NH_UDP, hops, src, dst);
  const u = off + IPV6_HEADER;
  out[u] = 0; out[u + 1] = SINK_PORT; out[u + 2] = 0; out[u + 3] = SINK_PORT;
  out[u + 4] = udpLen >>> 8; out[u + 5] = udpLen & 0xff;
  // A recognisable, non-zero payload (so nothing could mistake it for padding).
  for (let i = 8; i < udpLen; i++) out[u + i] = (i * 7) & 0xff;
  fillChecksum(out, off, NH_UDP, u, udpLen, 6);
}

/** Fills every entry of b with the same packet (entry i at i * b.slot). */
export function fillBatch(b: Batch, size: number, src: Uint8Array, dst: Uint8Array): void {
  if (size > b.slot) throw new RangeError(`packet size ${size} exceeds the batch slot ${b.slot}`);
  for (let i = 0; i < b.cap; i++) {
    b.off[i] = i * b.slot;
    b.len[i] = size;
    writeUdp6(b.data, b.off[i]!, size, src, dst);
  }
}

/** Peer k of n: IPv4 first + ⌊k / portsPerIP⌋, port 1024 + k mod portsPerIP. */
export interface PeerPlan { firstIPv4: number; count: number; portsPerIP: number; }

export const FIRST_PEER_PORT = 1024;
const MAX_PORTS_PER_IP = 50_000;

/** Spreads `count` peers over as few IPv4 addresses as the port range allows. */
export function peerPlan(firstIPv4: number, count: number): PeerPlan {
  if (!Number.isInteger(count) || count < 1) throw new RangeError(`peer count ${count}: use a positive integer`);
  const portsPerIP = Math.min(count, MAX_PORTS_PER_IP);
  return { firstIPv4, count, portsPerIP };
}

/** Number of distinct IPv4 addresses a plan uses. */
export function planIPv4s(p: PeerPlan): number {
  return Math.ceil(p.count / p.portsPerIP);
}

export function peerOf(p: PeerPlan, k: number): { ipv4: number; port: number } {
  return { ipv4: (p.firstIPv4 + Math.floor(k / p.portsPerIP)) >>> 0, port: FIRST_PEER_PORT + (k % p.portsPerIP) };
}

/**
 * Rewrites the destinations of a batch filled by fillBatch, cycling through
 * the peers of a plan (6bed4 addresses under prefix8). Keeps checksums valid.
 */
export class PeerCycler {
  private k = 0;
  private readonly base: number;
  private readonly prefix8: Uint8Array;

  constructor(private readonly b: Batch, prefix8: Uint8Array, private readonly plan: PeerPlan) {
    this.prefix8 = prefix8.subarray(0, 8);
    // Partial checksum sum of the packet with dst[8..16) and the checksum
    // field taken out: the same for every entry (same size, source, payload).
    const d = b.data, off = b.off[0]!, len = b.len[0]!;
    const u = off + IPV6_HEADER, udpLen = len - IPV6_HEADER;
    let acc = sumWords(d, off + 8, 24); // source + first half of destination
    acc += udpLen + NH_UDP;
    acc += sumWords(d, u, 6); // ports and length
    acc += sumWords(d, u + 8, udpLen - 8); // payload
    this.base = acc;
  }

  /** Gives entries [0, n) the next n peers. */
  next(n: number): void {
    const d = this.b.data, plan = this.plan;
    let k = this.k;
    for (let i = 0; i < n; i++) {
      const off = this.b.off[i]!;
      const ipv4 = (plan.firstIPv4 + Math.floor(k / plan.portsPerIP)) >>> 0;
      writeAddress(d, off + OFF_DST, this.prefix8, ipv4, FIRST_PEER_PORT + (k % plan.portsPerIP), 1);
      const a = off + OFF_DST + 8;
      const acc = this.base + ((d[a]! << 8) | d[a + 1]!) + ((d[a + 2]! << 8) | d[a + 3]!) +
        ((d[a + 4]! << 8) | d[a + 5]!) + ((d[a + 6]! << 8) | d[a + 7]!);
      let c = ~fold(acc) & 0xffff;
      if (c === 0) c = 0xffff;
      const u = off + IPV6_HEADER;
      d[u + 6] = c >>> 8; d[u + 7] = c & 0xff;
      if (++k === plan.count) k = 0;
    }
    this.k = k;
  }
}
