// ICMPv6 error messages (RFC 4443) the router sends where the stock router
// stays silent: Time Exceeded when the hop limit runs out, so traceroute
// through a 6bed4 router shows it and senders learn why packets vanish.
import { IPV6_HEADER, NH_ICMPV6, TUNNEL_MTU } from './constants.js';
import { fillChecksum } from './checksum.js';
import { OFF_SRC, writeHeader } from './ipv6.js';

/**
 * Writes an ICMPv6 error about the packet at invOff (length invLen) in inv,
 * from src back to that packet's source, quoting as much of it as fits in the
 * tunnel MTU. Returns the total length.
 */
export function writeIcmpError(
  out: Uint8Array,
  off: number,
  type: number,
  code: number,
  param: number,
  src: Uint8Array,
  inv: Uint8Array,
  invOff: number,
  invLen: number,
): number {
  const quote = Math.min(invLen, TUNNEL_MTU - IPV6_HEADER - 8);
  const icmp = off + IPV6_HEADER;
  const icmpLen = 8 + quote;
  // out must not overlap inv: replies are built in their own buffer while the
  // invoking packet still sits in the receive batch.
  out.set(inv.subarray(invOff, invOff + quote), icmp + 8);
  const dst = inv.subarray(invOff + OFF_SRC, invOff + OFF_SRC + 16);
  writeHeader(out, off, icmpLen, NH_ICMPV6, 255, src, dst);
  out[icmp] = type;
  out[icmp + 1] = code;
  out[icmp + 4] = param >>> 24;
  out[icmp + 5] = (param >>> 16) & 0xff;
  out[icmp + 6] = (param >>> 8) & 0xff;
  out[icmp + 7] = param & 0xff;
  fillChecksum(out, off, NH_ICMPV6, icmp, icmpLen, 2);
  return IPV6_HEADER + icmpLen;
}
