// Walking the IPv6 extension-header chain, for the one decision that needs
// the upper layer: never answer an ICMPv6 error with an error (RFC 4443
// §2.4 e). Looking only at the first next header let an error behind a
// hop-by-hop or destination-options header draw an error back (two routers,
// or a router and a spoofed peer, could bounce errors between them).
import { IPV6_HEADER, NH_ICMPV6 } from './constants.js';

const NH_HOP_BY_HOP = 0;
const NH_ROUTING = 43;
const NH_FRAGMENT = 44;
const NH_AH = 51;
const NH_DEST_OPTS = 60;
/** Longer chains are not walked (and not answered): no legitimate packet needs that many. */
const MAX_HEADERS = 8;

/**
 * True when the packet at off (length len) must not be answered with an
 * ICMPv6 error: it is an ICMPv6 error message, or its chain cannot be walked
 * to the upper layer (truncated, too long, or a fragment other than the
 * first, whose upper layer is not in this packet). No allocation.
 */
export function noErrorReply(b: Uint8Array, off: number, len: number): boolean {
  let nh = b[off + 6]!;
  let o = off + IPV6_HEADER;
  const end = off + len;
  for (let n = 0; n < MAX_HEADERS; n++) {
    switch (nh) {
      case NH_HOP_BY_HOP:
      case NH_ROUTING:
      case NH_DEST_OPTS: {
        if (o + 8 > end) return true;
        const next = b[o]!;
        o += (b[o + 1]! + 1) * 8;
        nh = next;
        continue;
      }
      case NH_FRAGMENT: {
        if (o + 8 > end) return true;
        // Offset (13 bits) non-zero: not the first fragment, the upper layer is elsewhere.
        if ((((b[o + 2]! << 8) | b[o + 3]!) & 0xfff8) !== 0) return true;
        nh = b[o]!;
        o += 8;
        continue;
      }
      case NH_AH: {
        if (o + 8 > end) return true;
        const next = b[o]!;
        o += (b[o + 1]! + 2) * 4;
        nh = next;
        continue;
      }
      case NH_ICMPV6:
        // Types below 128 are errors; an ICMPv6 header cut off cannot be told apart: no reply.
        return o >= end || b[o]! < 128;
      default:
        return false; // an upper layer that is not ICMPv6 (or ESP, No Next Header): answerable
    }
  }
  return true;
}
