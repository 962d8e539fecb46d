// SPDX-License-Identifier: BSD-2-Clause
// What the two fast-path programs share: their configuration, counters and
// the refused destinations (maps the loader creates once and hands to both,
// by name: agent/bpf/programs.ts), checksum folding, the originator and
// prefix arithmetic of 6bed4 addresses, and the next hop towards a peer.
//
// The TypeScript engine (agent/router/engine.ts) stays the authority: a
// program forwards a packet only when the engine would forward exactly that
// packet to exactly that place, and otherwise returns it unchanged
// (TC_ACT_UNSPEC) for the slow path. Every "not here" below is such a return.
#ifndef SIXBED4_FASTPATH_BPF_H
#define SIXBED4_FASTPATH_BPF_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define TUNNEL_MTU 1280
#define ND_FIRST 133 // Router Solicitation
#define ND_LAST 137  // Redirect
#define NH_TCP 6
#define NH_UDP 17
#define NH_ICMPV6 58
#define AF_INET 2

// config.flags
#define F_RELAY 1     // relays in the kernel (the refused table is complete)
#define F_TO_PEERS 2  // kernel -> peers in the kernel
#define F_GSO 8       // to-peers takes merged (GSO) TCP and UDP whose segments fit the tunnel
#define F_DIRECT 16   // from-peers sends what the FIB forwards straight to its egress (--fast-path-direct)
#define F_XDP 32      // from-peers' XDP stage is attached (config.uplink_mac: the frames it takes)
#define F_TEST_RUN 4  // BPF_PROG_TEST_RUN: nothing is sent, the next hop is hop_* below, and to-peers frames come with an
                      // Ethernet header (a test run always gives one; the TUN never does)

// Filled by the loader (agent/bpf/programs.ts writes the same layout, 80 bytes).
struct config {
	__be32 bind_ipv4;  // where peers' datagrams arrive: the router's bind address, also the source of what it sends
	__be16 bind_port;  // the router's bound UDP port, also the source port of what it sends
	__u8 ttl;          // the IPv4 TTL the router's socket sends with (net.ipv4.ip_default_ttl)
	__u8 pad;
	__u8 prefix[8];    // the served /64
	__u32 tun_ifindex; // the router's TUN: 0 means the fast path is off
	__u32 uplink_ifindex; // where the programs send: a next hop elsewhere is the slow path's
	__be32 own_ipv4;   // the router's own 6bed4 address's IPv4 and port (--advertise, else the bind address)
	__be16 own_port;
	__u16 flags;
	__u8 hop_dmac[6];  // F_TEST_RUN only
	__u8 hop_smac[6];
	__u32 gen;         // the generation of the host's routes: the router adds one whenever they may have changed
	__u8 uplink_mac[6]; // the uplink's MAC: what from-peers' XDP stage takes frames for (PACKET_HOST)
	__u8 xdp_mark[6];  // the source MAC from-peers marks its decapsulations with (XDP stage, GRO pair)
	__u32 pad3;
	__u32 gro_ifindex; // not 0: the GRO pair's sending end, where from-peers sends decapsulated TCP to be merged
	__u32 gro_rx_ifindex; // the GRO pair's receiving end (GRO on), whose ingress from-peers also runs on
	__u8 gro_mac[6];   // the receiving end's MAC, so that its stack takes the frames as its own (PACKET_HOST)
	__u16 pad4;
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

// Counter slots of both programs, one map; agent/bpf/programs.ts names them in the same order.
enum verdict {
	// From peers (uplink ingress, from-peers.bpf.c).
	V_FAST = 0,        // decapsulated and handed to the kernel here
	V_RELAY,           // relayed to another peer here
	V_NOT_6BED4,       // not a UDP/IPv4 datagram to the router's address and port
	V_IPV4_UNUSUAL,    // IP options, fragments, bad IPv4 checksum or length, martian source
	V_UDP_CHECKSUM,    // UDP checksum not verified here (wrong, or the NIC's state unknown)
	V_SOURCE_PORT_ZERO,
	V_KEEPALIVE,       // empty datagram
	V_SHORT,
	V_OVERSIZE,
	V_NOT_IPV6,
	V_BAD_LENGTH,      // payload length does not match the datagram exactly
	V_ND,
	V_MULTICAST,
	V_SPOOFED,
	V_HOP_LIMIT,
	V_BAD_DESTINATION, // a relay to a refused IPv4 (or to the router's IPv4 on another port)
	V_RELAY_UNCHECKED, // a relay whose datagram had no UDP checksum to update (the router sends one)
	V_NO_ROUTE,        // a relay whose next hop the FIB does not give here (no neighbour yet, another interface, MTU), or relays off
	V_DECAP_FAILED,    // a helper refused (an older kernel): the packet is untouched
	V_GRO,             // datagrams the uplink merged (UDP GRO, fraglist GRO): whole to the router's socket
	V_DIRECT,          // not a verdict: of V_FAST, those sent straight to the FIB's egress (F_DIRECT)
	V_ROUTE_LOOKUPS,   // not a verdict: FIB lookups made, for answers not cached (relays' next hops, F_DIRECT)
	V_XDP,             // not a verdict: of V_FAST, those decapsulated in the XDP stage (before GRO)
	V_XDP_HANDED,      // not a verdict: what the tc stage handed on of those, after GRO (a merged packet counts once)
	V_GRO_SENT,        // not a verdict: of V_FAST, TCP sent through the GRO pair to be merged
	V_GRO_HANDED,      // not a verdict: what came out of the GRO pair and was handed on (a merged packet counts once)
	// To peers (the TUN's egress, to-peers.bpf.c).
	T_FAST,            // encapsulated and sent to the peer here (a merged packet counts its segments)
	T_NOT_IPV6,        // not an IPv6 packet, shorter than its header or its version not 6
	T_OVERSIZE,        // over the tunnel MTU, or merged (GSO) into segments that would be
	T_BAD_LENGTH,      // payload length does not match the packet exactly
	T_ND,
	T_MULTICAST,
	T_OUTSIDE_PREFIX,
	T_NOT_A_PEER,      // a port-0 (local) destination
	T_BAD_DESTINATION, // the IPv4 inside is refused, or the router's own
	T_SOURCE_IN_PREFIX, // a source in the /64 with a port word: the router decides
	T_HOP_LIMIT,
	T_NO_SHORTCUT,     // the outer checksum cannot be derived from the inner one (extension headers, other protocols)
	T_NO_ROUTE,        // as V_NO_ROUTE
	T_ENCAP_FAILED,
	T_GSO_OTHER,       // a merged packet of another protocol than TCP or UDP: the router gets its segments
	T_GSO_REFUSED,     // the kernel refused to encapsulate a merged packet (the router turns to-peers off)
	// Not verdicts: the segments of merged packets sent here (also in T_FAST), whose segments were all the same size
	// (outer checksum right for each), or whose last one was shorter (sent without an outer checksum).
	T_GSO,
	T_GSO_UNEVEN,
	T_ROUTE_LOOKUPS,   // not a verdict: FIB lookups made, for next hops not cached
	V_COUNT,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} sixbed4_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, V_COUNT);
	__type(key, __u32);
	__type(value, struct counter);
} sixbed4_counts SEC(".maps");

// The IPv4 destinations the router never sends to (agent/router/refused.ts), as
// prefixes: one lookup answers, whatever their number (a search over ranges
// would branch per step, and the verifier walks every branch). The loader adds
// a new set's prefixes before it removes the old set's, so no packet meets a
// table missing any refused address. More prefixes than the trie holds: the
// loader puts 0.0.0.0/0 in, and every relay and send goes the slow way.
#define REFUSED_MAX 4096
struct refused_key {
	__u32 prefixlen;
	__be32 addr;
};
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, REFUSED_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct refused_key);
	__type(value, __u32);
} sixbed4_refused SEC(".maps");

// Peers whose packets the programs forwarded since the router last looked: it
// drains this map every few seconds into its own table of live peers (which
// the neighbour proxy and the live-peers gauge read). Key: the peer's IPv4
// and port as in the packet; present means seen. A peer already in costs one
// lookup a packet; LRU, so a flood of new sources cannot make it refuse one.
#define SEEN_MAX 65536
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SEEN_MAX);
	__type(key, __u64);
	__type(value, __u8);
} sixbed4_seen SEC(".maps");

// The last peer noted on this CPU: a flow of packets from one peer costs an array read, not a hash lookup, per
// packet. The router clears it after each drain, so a drained peer is noted again by its next packet.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sixbed4_seen_last SEC(".maps");

static __always_inline void seen(__be32 v4, __be16 port)
{
	__u64 key = ((__u64)v4 << 16) | port;
	__u32 zero = 0;
	__u64 *last = bpf_map_lookup_elem(&sixbed4_seen_last, &zero);
	if (last && *last == key)
		return;
	if (!bpf_map_lookup_elem(&sixbed4_seen, &key)) {
		__u8 one = 1;
		bpf_map_update_elem(&sixbed4_seen, &key, &one, BPF_ANY);
	}
	if (last)
		*last = key;
}

static __always_inline struct config *config_of(void)
{
	__u32 key = 0;
	return bpf_map_lookup_elem(&sixbed4_config, &key);
}

// Bytes: of the IPv4 packet for packets left to the slow path, of the IPv6 packet for forwarded ones (as the engine counts).
static __always_inline void count_n(__u32 v, __u32 packets, __u32 bytes)
{
	struct counter *c = bpf_map_lookup_elem(&sixbed4_counts, &v);
	if (c) {
		c->packets += packets;
		c->bytes += bytes;
	}
}
static __always_inline void count_bytes(__u32 v, __u32 bytes)
{
	count_n(v, 1, bytes);
}

static __always_inline __u16 fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

// The ones'-complement sum (unfolded) of a fixed-size, 4-byte-aligned block on the stack, in C: for headers this
// costs less than a bpf_csum_diff() call, and folds (fold) to the same 16 bits.
// may_alias: the block is a struct of other types, read as words (without it the compiler may read before the stores).
// A macro, so that the bound is a constant where the loop is: unrolled, it indexes the stack with constants only
// (a variable offset into the stack needs CAP_PERFMON).
typedef __u32 __attribute__((may_alias)) word_alias;
#define csum_words(p, bytes)                                                                                           \
	({                                                                                                             \
		const word_alias *w_ = (const word_alias *)(p);                                                        \
		__u64 s_ = 0;                                                                                          \
		_Pragma("unroll") for (int i_ = 0; i_ < (int)((bytes) / 4); i_++) s_ += w_[i_];                        \
		s_;                                                                                                    \
	})

static __always_inline int in_prefix(const __u8 *a, const __u8 *p)
{
	return ((const __u32 *)a)[0] == ((const __u32 *)p)[0] && ((const __u32 *)a)[1] == ((const __u32 *)p)[1];
}

// The IPv4 (network order) and port (network order) inside a 6bed4 address (6bed4-wire.md).
static __always_inline __be32 address_ipv4(const __u8 *a)
{
	__u8 b[4] = { (__u8)((a[8] & 0xfc) | (a[14] >> 6)), a[9], a[10], a[11] };
	return *(__be32 *)b;
}
static __always_inline __be16 address_port(const __u8 *a)
{
	return *(const __be16 *)&a[12];
}


// The FIB's answer for sending from src to dst by the uplink, as the router's socket would get it: the Ethernet
// header towards the next hop in eth. BPF_FIB_LKUP_RET_SUCCESS, the helper's refusal, or -1 for a next hop on
// another interface (the slow path's). The helper answers only where IPv4 forwarding is on for the uplink, even for
// an egress lookup: the loader turns relays and to-peers off where it is not (fastpath.ts).
static __always_inline int fib4(struct __sk_buff *skb, struct config *cfg, __be32 src, __be32 dst, __u16 ip_len, struct ethhdr *eth)
{
	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET;
	fib.l4_protocol = IPPROTO_UDP;
	fib.tot_len = ip_len;
	fib.ifindex = cfg->uplink_ifindex;
	fib.ipv4_src = src;
	fib.ipv4_dst = dst;
	int rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_OUTPUT);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return rc;
	if (fib.ifindex != cfg->uplink_ifindex)
		return -1;
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IP);
	return rc;
}

// A FIB lookup costs more than the rest of a program together (about 0.4 µs of the 0.6 µs it adds per packet,
// measured on a 2-CPU VM): its answers are kept per destination, each for one generation of the host's routes. The
// router adds one to the generation (config.gen) on every rtnetlink notification that may change an answer (routes,
// rules, addresses, links, the uplink's IPv4 neighbours, forwarding switches, nexthop objects: agent/bpf/routes.ts),
// so a cached answer outlives the change that made it wrong by the time the router takes to read that notification.
#define ROUTES_MAX 16384
// The longest datagram the programs send (an IPv4 and UDP header on a tunnel-MTU packet): an answer for it serves
// every shorter one.
#define WIRE_MAX (sizeof(struct iphdr) + sizeof(struct udphdr) + TUNNEL_MTU)

// Towards a peer's IPv4: refused (the engine never sends there), or the next hop's Ethernet addresses.
#define HOP_REFUSED 1
#define HOP_READY 2
struct hop4 {
	__u32 gen;
	__u8 state;
	__u8 pad;
	__u8 dmac[ETH_ALEN];
	__u8 smac[ETH_ALEN];
	__u16 pad2;
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, ROUTES_MAX);
	__type(key, __be32);
	__type(value, struct hop4);
} sixbed4_hops4 SEC(".maps");

// The cached answer towards v4 of this generation, or NULL.
static __always_inline struct hop4 *hop_cached(struct config *cfg, __be32 v4)
{
	if (cfg->flags & F_TEST_RUN)
		return NULL;
	struct hop4 *h = bpf_map_lookup_elem(&sixbed4_hops4, &v4);
	return h && h->gen == cfg->gen ? h : NULL;
}

// True when the engine refuses to send to v4 (network order); h: its cached answer, if any.
static __always_inline int refused_cached(struct config *cfg, __be32 v4, struct hop4 *h)
{
	if (h)
		return h->state == HOP_REFUSED;
	struct refused_key key = { 32, v4 };
	if (!bpf_map_lookup_elem(&sixbed4_refused, &key))
		return 0;
	if (!(cfg->flags & F_TEST_RUN)) {
		struct hop4 n = { .gen = cfg->gen, .state = HOP_REFUSED };
		bpf_map_update_elem(&sixbed4_hops4, &v4, &n, BPF_ANY);
	}
	return 1;
}

// The Ethernet header towards the peer's IPv4 v4 from the router's bind address, for a datagram of ip_len bytes: 0
// when the next hop is not on the uplink, needs a neighbour lookup first, or the datagram would not fit; the slow path
// then sends it (and the kernel resolves the neighbour). h: the cached answer, if any (not refused). tally: the
// counter slot of lookups made.
static __always_inline int next_hop(struct __sk_buff *skb, struct config *cfg, __be32 v4, __u16 ip_len,
				    struct hop4 *h, struct ethhdr *eth, __u32 tally)
{
	if (cfg->flags & F_TEST_RUN) {
		__builtin_memcpy(eth->h_dest, cfg->hop_dmac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, cfg->hop_smac, ETH_ALEN);
		eth->h_proto = bpf_htons(ETH_P_IP);
		return 1;
	}
	if (h && h->state == HOP_READY) {
		__builtin_memcpy(eth->h_dest, h->dmac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, h->smac, ETH_ALEN);
		eth->h_proto = bpf_htons(ETH_P_IP);
		return 1;
	}
	count_n(tally, 1, 0);
	// Asked for the longest datagram, the answer serves them all and is kept. Refused for that length (an uplink
	// MTU under it), it is asked for this datagram's length, each time.
	int rc = fib4(skb, cfg, cfg->bind_ipv4, v4, WIRE_MAX, eth);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		struct hop4 n = { .gen = cfg->gen, .state = HOP_READY };
		__builtin_memcpy(n.dmac, eth->h_dest, ETH_ALEN);
		__builtin_memcpy(n.smac, eth->h_source, ETH_ALEN);
		bpf_map_update_elem(&sixbed4_hops4, &v4, &n, BPF_ANY);
		return 1;
	}
	return rc == BPF_FIB_LKUP_RET_FRAG_NEEDED && ip_len < WIRE_MAX &&
	       fib4(skb, cfg, cfg->bind_ipv4, v4, ip_len, eth) == BPF_FIB_LKUP_RET_SUCCESS;
}

// What the programs write in front of a peer's packet, in one store where the checksum state allows: Ethernet, IPv4,
// UDP and the first 8 bytes of the IPv6 header (its hop limit changes). Each bpf_skb_store_bytes() call costs a
// writability check and a copy: one instead of four. The pad puts the IPv4 header on a 4-byte boundary (the verifier
// refuses misaligned stack access).
struct wire {
	__u16 pad;
	struct ethhdr eth;
	struct iphdr ip;
	struct udphdr udp;
	__u8 ip6[8];
};
#define WIRE_LEN (sizeof(struct wire) - 2)
#define WIRE(w) ((__u8 *)(w) + 2)

// The outer IPv4 header the router's socket sends with: no options, DF (path MTU discovery), ID 0 (an
// unconnected socket's DF datagrams), TOS 0, the host's default TTL.
static __always_inline void outer_ipv4(struct iphdr *ip, struct config *cfg, __be32 dst, __u16 ip_len)
{
	__builtin_memset(ip, 0, sizeof(*ip));
	ip->version = 4;
	ip->ihl = 5;
	ip->tot_len = bpf_htons(ip_len);
	ip->frag_off = bpf_htons(0x4000);
	ip->ttl = cfg->ttl;
	ip->protocol = IPPROTO_UDP;
	ip->saddr = cfg->bind_ipv4;
	ip->daddr = dst;
	ip->check = ~fold(csum_words(ip, sizeof(*ip))) & 0xffff;
}

#endif
