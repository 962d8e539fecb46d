// Neighbour Discovery as seen through a raw ICMPv6 socket: the kernel hands
// over the ICMPv6 message without the IPv6 header, and on sending fills in the
// checksum itself. So these work on ICMPv6 bodies, not whole packets.
import { ND_NEIGHBOR_SOLICIT, ND_OPT_SOURCE_LLADDR, IPV6_HEADER } from '../protocol/constants.js';
import { writeNeighborAdvert, UNSPECIFIED } from '../protocol/nd.js';

export const NA_ROUTER = 0x80;
export const NA_SOLICITED = 0x40;
export const NA_OVERRIDE = 0x20;

/** ff02::1:ffXX:XXXX — the solicited-node multicast group an NS for addr is sent to (RFC 4291 §2.7.1). */
export function solicitedNodeGroup(addr: Uint8Array): Uint8Array {
  const g = Uint8Array.of(0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0);
  g.set(addr.subarray(13, 16), 13);
  return g;
}

export interface Solicitation {
  readonly target: Uint8Array;
  /** The solicitor's link-layer address option, when present. */
  readonly sourceLinkLayer?: Uint8Array;
}

/**
 * A Neighbour Solicitation body (RFC 4861 §7.1.1 checks that can be made
 * without the IPv6 header: type, code, length, target not multicast, options
 * well formed). Returns null for anything else.
 */
export function parseSolicitation(b: Uint8Array): Solicitation | null {
  if (b.length < 24 || b[0] !== ND_NEIGHBOR_SOLICIT || b[1] !== 0) return null;
  const target = b.slice(8, 24);
  if (target[0] === 0xff) return null;
  let sourceLinkLayer: Uint8Array | undefined;
  for (let o = 24; o < b.length;) {
    if (o + 2 > b.length) return null;
    const len = b[o + 1]! * 8;
    if (len === 0 || o + len > b.length) return null;
    if (b[o] === ND_OPT_SOURCE_LLADDR && len >= 8) sourceLinkLayer = b.slice(o + 2, o + 8);
    o += len;
  }
  return sourceLinkLayer ? { target, sourceLinkLayer } : { target };
}

/**
 * A Neighbour Advertisement body for target with a target link-layer address
 * option (32 bytes). nd.ts's builder makes the whole packet; the raw socket
 * wants only the ICMPv6 part, with the checksum left to the kernel.
 */
export function advertisementBody(target: Uint8Array, mac: Uint8Array, flags: number): Uint8Array {
  const packet = new Uint8Array(IPV6_HEADER + 32);
  writeNeighborAdvert(packet, 0, UNSPECIFIED, UNSPECIFIED, target, mac, flags);
  const body = packet.slice(IPV6_HEADER);
  body[2] = 0;
  body[3] = 0;
  return body;
}

export function parseMac(text: string): Uint8Array {
  const parts = text.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p)))
    throw new Error(`'${text}' is not a MAC address`);
  return Uint8Array.from(parts.map((p) => parseInt(p, 16)));
}
