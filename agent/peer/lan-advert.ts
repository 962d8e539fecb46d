// The Router Advertisement a peer sends on its LAN interface (`--lan IF`, lan.ts), as an ICMPv6 body for a raw
// socket (the kernel adds the IPv6 header and the checksum). Pure: no I/O.
//
// A /114 cannot be SLAAC (hosts form addresses only from a /64), so the RA carries the peer's /114 as an on-link
// prefix that is NOT autonomous (L=1, A=0): hosts learn the prefix and that its addresses are on the link, the
// default route via the peer's link-local address from the router lifetime, and the tunnel's MTU; they take an
// address from the /114 themselves (docs/router.md, "A LAN behind the peer"). Prefixes of earlier NAT mappings
// follow with zero lifetimes, so hosts drop their on-link routes.
import { ND_OPT_PREFIX_INFO, ND_ROUTER_ADVERT, PEER_PREFIX_LEN, TUNNEL_MTU } from '../protocol/constants.js';

const ND_OPT_MTU = 5;
/** Router lifetime (s): hosts keep the default route this long without hearing from us. */
export const LAN_ROUTER_LIFETIME_S = 1800;
/** Prefix lifetimes (s): a peer that dies without a word leaves stale prefixes on the LAN at most this long. */
export const LAN_PREFIX_VALID_S = 3600;
export const LAN_PREFIX_PREFERRED_S = 1800;

export interface LanAdvert {
  /** The /114 in use now (lanip bits zero), or null when there is none (at stop). */
  current: Uint8Array | null;
  /** /114s of earlier mappings: sent with zero lifetimes. */
  withdrawn: readonly Uint8Array[];
  /** false at stop: router lifetime 0, hosts drop their default route via us. */
  routing: boolean;
}

export function writeLanAdvert(a: LanAdvert): Uint8Array {
  const prefixes = (a.current ? 1 : 0) + a.withdrawn.length;
  const out = new Uint8Array(16 + 8 + 32 * prefixes);
  const v = new DataView(out.buffer);
  out[0] = ND_ROUTER_ADVERT;
  out[1] = 0; // checksum (2..3): the kernel's
  out[4] = 64; // cur hop limit for hosts
  out[5] = 0; // M=0 O=0: no DHCPv6; preference medium
  v.setUint16(6, a.routing && a.current ? LAN_ROUTER_LIFETIME_S : 0);
  // reachable time and retrans timer 0: unspecified, hosts keep their own
  let o = 16;
  out[o] = ND_OPT_MTU;
  out[o + 1] = 1;
  v.setUint32(o + 4, TUNNEL_MTU); // everything beyond us goes through a 1280 tunnel
  o += 8;
  const prefix = (p: Uint8Array, valid: number, preferred: number) => {
    out[o] = ND_OPT_PREFIX_INFO;
    out[o + 1] = 4;
    out[o + 2] = PEER_PREFIX_LEN;
    out[o + 3] = 0x80; // on-link, not autonomous
    v.setUint32(o + 4, valid);
    v.setUint32(o + 8, preferred);
    out.set(p.subarray(0, 16), o + 16);
    out[o + 30] = out[o + 30]! & 0xc0;
    out[o + 31] = 0; // the /114 itself, whatever lanip was given
    o += 32;
  };
  if (a.current) prefix(a.current, a.routing ? LAN_PREFIX_VALID_S : 0, a.routing ? LAN_PREFIX_PREFERRED_S : 0);
  for (const w of a.withdrawn) prefix(w, 0, 0);
  return out;
}
