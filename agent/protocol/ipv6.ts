// IPv6 fixed-header access on a packet at an offset in a larger buffer (the
// receive batch). Only the fixed header is interpreted: 6bed4 peers send no
// extension headers before ICMPv6 ND, and forwarding never looks past it.
import { IPV6_HEADER } from './constants.js';

export const OFF_PAYLOAD_LEN = 4;
export const OFF_HOP_LIMIT = 7;
export const OFF_SRC = 8;
export const OFF_DST = 24;

export function payloadLength(b: Uint8Array, off: number): number {
  return (b[off + OFF_PAYLOAD_LEN]! << 8) | b[off + OFF_PAYLOAD_LEN + 1]!;
}

/** fe80::/64: link-local as 6bed4 uses it (the router's fe80:: and fe80::<iid>). */
export function isLinkLocal64(b: Uint8Array, addrOff: number): boolean {
  return (
    b[addrOff] === 0xfe &&
    b[addrOff + 1] === 0x80 &&
    b[addrOff + 2] === 0 &&
    b[addrOff + 3] === 0 &&
    b[addrOff + 4] === 0 &&
    b[addrOff + 5] === 0 &&
    b[addrOff + 6] === 0 &&
    b[addrOff + 7] === 0
  );
}

export function isUnspecified(b: Uint8Array, addrOff: number): boolean {
  for (let i = 0; i < 16; i++) if (b[addrOff + i] !== 0) return false;
  return true;
}

export function equal16(a: Uint8Array, aOff: number, b: Uint8Array, bOff: number): boolean {
  for (let i = 0; i < 16; i++) if (a[aOff + i] !== b[bOff + i]) return false;
  return true;
}

/**
 * Writes a fixed IPv6 header (traffic class and flow label zero).
 * src/dst are 16-byte arrays copied in.
 */
export function writeHeader(
  out: Uint8Array,
  off: number,
  payloadLen: number,
  nh: number,
  hops: number,
  src: Uint8Array,
  dst: Uint8Array,
): void {
  out[off] = 0x60;
  out[off + 1] = 0;
  out[off + 2] = 0;
  out[off + 3] = 0;
  out[off + 4] = payloadLen >>> 8;
  out[off + 5] = payloadLen & 0xff;
  out[off + 6] = nh;
  out[off + 7] = hops;
  out.set(src.subarray(0, 16), off + OFF_SRC);
  out.set(dst.subarray(0, 16), off + OFF_DST);
}

/**
 * Structural check of a datagram meant to carry one IPv6 packet: version 6,
 * at least a header, and the payload length agrees with the datagram (a
 * shorter datagram is truncated; trailing bytes beyond the payload length are
 * tolerated, as the kernel does, but not forwarded).
 * Returns the packet length to use, or -1.
 */
export function packetLength(b: Uint8Array, off: number, datagramLen: number): number {
  if (datagramLen < IPV6_HEADER || b[off]! >>> 4 !== 6) return -1;
  const total = IPV6_HEADER + payloadLength(b, off);
  return total <= datagramLen ? total : -1;
}

/** Big-endian 32-bit word at o. */
export function readU32(b: Uint8Array, o: number): number {
  return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
}
