// IPv6/UDP packets for the tests that put them on a real or fake wire: built
// with a valid checksum (a real kernel drops anything else), and read back.
import { IPV6_HEADER, NH_UDP } from '../../agent/protocol/constants.js';
import { fillChecksum } from '../../agent/protocol/checksum.js';
import { OFF_DST, OFF_HOP_LIMIT, OFF_SRC, writeHeader } from '../../agent/protocol/ipv6.js';
import { formatIPv6 } from '../../lib/ip.js';

/** An IPv6/UDP packet src:sport → dst:dport carrying payload, with a correct UDP checksum. */
export function udp6(
  src: Uint8Array,
  dst: Uint8Array,
  sport: number,
  dport: number,
  payload: Uint8Array,
  hops = 64,
): Buffer {
  const udpLen = 8 + payload.length;
  const pkt = Buffer.alloc(IPV6_HEADER + udpLen);
  writeHeader(pkt, 0, udpLen, NH_UDP, hops, src, dst);
  pkt.writeUInt16BE(sport, IPV6_HEADER);
  pkt.writeUInt16BE(dport, IPV6_HEADER + 2);
  pkt.writeUInt16BE(udpLen, IPV6_HEADER + 4);
  pkt.set(payload, IPV6_HEADER + 8);
  fillChecksum(pkt, 0, NH_UDP, IPV6_HEADER, udpLen, 6);
  return pkt;
}

export interface Udp6 {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  hops: number;
  payload: Buffer;
}

/** The fields of an IPv6/UDP packet (no extension headers), or null when it is something else. */
export function parseUdp6(p: Uint8Array): Udp6 | null {
  if (p.length < IPV6_HEADER + 8 || p[0]! >> 4 !== 6 || p[6] !== NH_UDP) return null;
  const b = Buffer.from(p.buffer, p.byteOffset, p.length);
  const udpLen = b.readUInt16BE(IPV6_HEADER + 4);
  return {
    src: formatIPv6(b, OFF_SRC),
    dst: formatIPv6(b, OFF_DST),
    hops: b[OFF_HOP_LIMIT]!,
    sport: b.readUInt16BE(IPV6_HEADER),
    dport: b.readUInt16BE(IPV6_HEADER + 2),
    payload: Buffer.from(b.subarray(IPV6_HEADER + 8, IPV6_HEADER + Math.max(8, udpLen))),
  };
}
