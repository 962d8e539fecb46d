// Internet checksum (RFC 1071) with the IPv6 pseudo-header (RFC 8200 §8.1),
// for ICMPv6 and UDP over IPv6. Sums are carried in a plain number and folded
// at the end: 32-bit overflow cannot happen below ~2^37 bytes.
import { OFF_SRC } from './ipv6.js';

/** One's-complement sum of len bytes at off, as 16-bit big-endian words. */
export function sumWords(b: Uint8Array, off: number, len: number, acc = 0): number {
  let i = 0;
  for (; i + 1 < len; i += 2) acc += (b[off + i]! << 8) | b[off + i + 1]!;
  if (i < len) acc += b[off + i]! << 8;
  return acc;
}

export function fold(acc: number): number {
  while (acc > 0xffff) acc = (acc & 0xffff) + Math.floor(acc / 0x10000);
  return acc;
}

/**
 * Checksum of the upper-layer message of length len at upperOff, whose IPv6
 * header is at ipOff. With the checksum field zeroed the result is the value
 * to store; over a message with its checksum in place a correct one gives 0.
 */
export function upperChecksum(b: Uint8Array, ipOff: number, nh: number, upperOff: number, len: number): number {
  let acc = sumWords(b, ipOff + OFF_SRC, 32);
  acc += Math.floor(len / 0x10000) + (len & 0xffff) + nh;
  acc = sumWords(b, upperOff, len, acc);
  return ~fold(acc) & 0xffff;
}

/** Computes and stores the checksum at upperOff+csumAt (2 for ICMPv6, 6 for UDP). */
export function fillChecksum(
  b: Uint8Array,
  ipOff: number,
  nh: number,
  upperOff: number,
  len: number,
  csumAt: number,
): void {
  b[upperOff + csumAt] = 0;
  b[upperOff + csumAt + 1] = 0;
  let c = upperChecksum(b, ipOff, nh, upperOff, len);
  if (c === 0 && nh === 17) c = 0xffff; // UDP: zero means "no checksum", so send its other form
  b[upperOff + csumAt] = c >>> 8;
  b[upperOff + csumAt + 1] = c & 0xff;
}
