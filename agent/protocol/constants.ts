// Wire constants of 6bed4 as the stock implementation speaks it
// (see ../shared/docs/6bed4-wire.md in the workspace).

/** Default UDP port of a 6bed4 router (0x64be). */
export const ROUTER_PORT = 25790;
/** Tunnel MTU: the IPv6 minimum. Longer packets are dropped, never fragmented. */
export const TUNNEL_MTU = 1280;
/** Fixed IPv6 header length. */
export const IPV6_HEADER = 40;
/** Prefix length announced to each peer: its /64 plus 32 bits IPv4 + 16 bits port. */
export const PEER_PREFIX_LEN = 114;
/** lanip stock peers use for themselves; lanip 0 is the router side. */
export const DEFAULT_PEER_LANIP = 1;
/** Largest lanip: 14 bits. */
export const MAX_LANIP = 0x3fff;
/** Keepalive period of stock peers. */
export const KEEPALIVE_SECONDS = 30;

export const NH_ICMPV6 = 58;
export const NH_UDP = 17;

export const ICMP6_DST_UNREACH = 1;
export const ICMP6_PACKET_TOO_BIG = 2;
export const ICMP6_TIME_EXCEEDED = 3;
export const ICMP6_ECHO_REQUEST = 128;
export const ICMP6_ECHO_REPLY = 129;
export const ND_ROUTER_SOLICIT = 133;
export const ND_ROUTER_ADVERT = 134;
export const ND_NEIGHBOR_SOLICIT = 135;
export const ND_NEIGHBOR_ADVERT = 136;
export const ND_REDIRECT = 137;

export const ND_OPT_SOURCE_LLADDR = 1;
export const ND_OPT_TARGET_LLADDR = 2;
export const ND_OPT_PREFIX_INFO = 3;
