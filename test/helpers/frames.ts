// Ethernet frames carrying UDP/IPv4 datagrams, as a peer's datagram arrives on
// the router's uplink: input for BPF_PROG_TEST_RUN of the fast path. The
// destination MAC is all zeros, the test device's own (the kernel marks the
// frame PACKET_HOST, as a frame addressed to the router's uplink would be).
import { fold, sumWords } from '../../agent/protocol/checksum.js';

export const ETH = 14;
export const IPV4 = 20;
export const UDP = 8;

export interface FrameOptions {
  /** 'good' (default), 'bad' (off by one) or 'zero' (none sent, allowed over IPv4). */
  udpChecksum?: 'good' | 'bad' | 'zero';
  badIpChecksum?: boolean;
  /** IPv4 flags and fragment offset word (default 0x4000: DF). */
  fragWord?: number;
  /** IPv4 options bytes (a multiple of 4). */
  ipOptions?: number;
  /** Extra bytes after the IPv4 packet (an Ethernet trailer the IPv4 length does not cover). */
  trailer?: number;
  protocol?: number;
  /** IPv4 identification (default 0x1234) and TTL (default 64). */
  id?: number;
  ttl?: number;
  /** Ethernet destination and source (default all zeros, the test device's own, and 02:00:00:00:00:01). */
  dmac?: Uint8Array;
  smac?: Uint8Array;
}

/** An Ethernet frame with an IPv4/UDP datagram src:sport → dst:dport carrying payload. */
export function frame(
  src: number,
  sport: number,
  dst: number,
  dport: number,
  payload: Uint8Array,
  o: FrameOptions = {},
): Uint8Array {
  const opt = o.ipOptions ?? 0,
    ihl = IPV4 + opt;
  const ipLen = ihl + UDP + payload.length;
  const f = new Uint8Array(ETH + ipLen + (o.trailer ?? 0));
  const v = new DataView(f.buffer);
  if (o.smac) f.set(o.smac.subarray(0, 6), 6);
  else {
    v.setUint32(6, 0x02000000);
    v.setUint16(10, 0x0001);
  } // source MAC 02:00:00:00:00:01
  if (o.dmac) f.set(o.dmac.subarray(0, 6), 0);
  v.setUint16(12, 0x0800);
  const ip = ETH;
  f[ip] = 0x40 | (ihl / 4);
  v.setUint16(ip + 2, ipLen);
  v.setUint16(ip + 4, o.id ?? 0x1234);
  v.setUint16(ip + 6, o.fragWord ?? 0x4000);
  f[ip + 8] = o.ttl ?? 64;
  f[ip + 9] = o.protocol ?? 17;
  v.setUint32(ip + 12, src >>> 0);
  v.setUint32(ip + 16, dst >>> 0);
  for (let i = 0; i < opt; i++) f[ip + IPV4 + i] = 1; // NOP options
  let c = ~fold(sumWords(f, ip, ihl)) & 0xffff;
  if (o.badIpChecksum) c ^= 1;
  v.setUint16(ip + 10, c);
  const u = ip + ihl;
  v.setUint16(u, sport);
  v.setUint16(u + 2, dport);
  v.setUint16(u + 4, UDP + payload.length);
  f.set(payload, u + UDP);
  const mode = o.udpChecksum ?? 'good';
  if (mode !== 'zero') {
    // Pseudo-header: source, destination, protocol 17, UDP length.
    let acc = sumWords(f, ip + 12, 8) + 17 + UDP + payload.length;
    acc = sumWords(f, u, UDP + payload.length, acc);
    let uc = ~fold(acc) & 0xffff;
    if (uc === 0) uc = 0xffff;
    if (mode === 'bad') uc = uc === 1 ? 2 : uc ^ 1;
    v.setUint16(u + 6, uc);
  }
  return f;
}
