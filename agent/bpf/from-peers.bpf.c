// SPDX-License-Identifier: BSD-2-Clause
// The 6bed4 router's fast path for peers' datagrams, on the uplink's tc
// ingress (tcx); the same program on the GRO pair's receiving end (handed), and
// its XDP stage (sixbed4_from_peers_xdp) at the uplink driver's hook.
//
// A UDP datagram to the router's address and port that carries an IPv6 packet
// the TypeScript engine (agent/router/engine.ts, the authority) would hand to
// the kernel is decapsulated here, its hop limit decremented as the router
// does, and redirected into the ingress of the router's own TUN interface:
// from there on the kernel sees exactly what a TUN write by the router gives
// it (same input interface, so the same routes, firewall, local delivery and
// ICMPv6 errors), without the trip through the socket, the router process and
// the TUN write. One the engine would relay to another peer gets new outer
// headers, as the router's socket would send it, and goes straight back out.
//
// Everything else returns TC_ACT_UNSPEC unchanged (tcx: "next", so later
// programs still run and the stack delivers it to the router's socket): ND,
// spoofed or port-0 sources, hop limits about to run out, oversize, refused
// relay targets, anything unusual in the outer headers. The tc stage runs
// before ip_rcv() and udp_rcv(), so every check those would make on a
// datagram the router receives (IPv4 and UDP checksums, lengths, fragments,
// martian sources) is made here too, or the packet goes the slow way.
#include "fastpath.bpf.h"

// Header skew (../shared/docs/bpf-facts.md): Debian's linux-libc-dev 6.1 lacks
// this flag of Linux 6.3; the value is the kernel's ABI. On an older kernel
// bpf_skb_adjust_room() refuses it at run time: the loader's self-test sees
// that and keeps the TypeScript path.
#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV6
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)
#endif
// Linux 6.3 too: the FIB's answer without its neighbour (bpf_redirect_neigh() resolves it, as forwarding would).
#ifndef BPF_FIB_LOOKUP_SKIP_NEIGH
#define BPF_FIB_LOOKUP_SKIP_NEIGH (1U << 2)
#endif
#define AF_INET6 10

// --fast-path-direct: where the kernel would forward the decapsulated packet, it is sent to that egress here, without
// the second receive pass through the TUN's ingress: the FIB is asked as for a packet arriving on the TUN (the same
// routes, forwarding switch and MTU), and everything it would not simply forward goes into the TUN as without the
// flag, so the kernel still answers it (local delivery, no route, Packet Too Big, hop limits about to run out, a way
// back into the tunnel). What this skips is the rest of the forward path: netfilter's prerouting and forward hooks
// (and conntrack) for these packets, hence a choice for hosts without a forward firewall. The kernel's hop limit
// decrement is made here too: the router's and the forwarding's, two in all.
//
// The FIB's answers are cached (fastpath.bpf.h, ROUTES_MAX) by what the lookup is given: addresses, flow label and
// next header (policy rules and multipath hashing see those), for one generation of the host's routes. Every
// decapsulated packet fits any IPv6 route (1280 bytes at most, the IPv6 minimum MTU), so one answer serves all.
struct route6_key {
	struct in6_addr dst, src;
	__be32 flowinfo;
	__u32 nexthdr;
};
struct route6 {
	__u32 gen;
	__u32 ifindex; // 0: not straight out (into the TUN)
	__u8 nh[16];
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, ROUTES_MAX);
	__type(key, struct route6_key);
	__type(value, struct route6);
} sixbed4_routes6 SEC(".maps");

// The last answer used on this CPU, before the map: a flow's packets come in runs, and comparing one key costs less
// than hashing it.
struct route6_last {
	struct route6_key key;
	struct route6 r;
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct route6_last);
} sixbed4_routes6_last SEC(".maps");

static __always_inline int same_key(const struct route6_key *a, const struct route6_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;
	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3] && x[4] == y[4];
}

// spent: the hop limit decrements already made (the router's, by the XDP stage).
static __always_inline __u32 direct_egress(struct __sk_buff *skb, struct config *cfg, struct ipv6hdr *ip6,
					   struct bpf_redir_neigh *nh, const int spent)
{
	if (!(cfg->flags & F_DIRECT) || (cfg->flags & F_TEST_RUN) || ip6->hop_limit <= 2 - spent)
		return 0;
	struct route6_key key = { ip6->daddr, ip6->saddr, *(__be32 *)ip6 & bpf_htonl(0x0fffffff), ip6->nexthdr };
	__u32 zero = 0;
	struct route6_last *last = bpf_map_lookup_elem(&sixbed4_routes6_last, &zero);
	struct route6 *r;
	// A flag, not a comparison of pointers: without CAP_PERFMON the verifier refuses those.
	int hit = last && last->r.gen == cfg->gen && same_key(&last->key, &key);
	if (hit)
		r = &last->r;
	else
		r = bpf_map_lookup_elem(&sixbed4_routes6, &key);
	struct route6 n = { .gen = cfg->gen };
	if (!r || r->gen != cfg->gen) {
		count_n(V_ROUTE_LOOKUPS, 1, 0);
		struct bpf_fib_lookup fib = {};
		fib.family = AF_INET6;
		fib.l4_protocol = ip6->nexthdr;
		fib.tot_len = TUNNEL_MTU;
		fib.ifindex = cfg->tun_ifindex;
		fib.flowinfo = key.flowinfo;
		__builtin_memcpy(fib.ipv6_src, &ip6->saddr, 16);
		__builtin_memcpy(fib.ipv6_dst, &ip6->daddr, 16);
		if (bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH) == BPF_FIB_LKUP_RET_SUCCESS &&
		    fib.ifindex != cfg->tun_ifindex) {
			n.ifindex = fib.ifindex;
			__builtin_memcpy(n.nh, fib.ipv6_dst, 16); // the gateway, or the destination itself when on-link
		}
		bpf_map_update_elem(&sixbed4_routes6, &key, &n, BPF_ANY);
		r = &n;
	}
	if (last && !hit) {
		last->key = key;
		last->r = *r;
	}
	if (!r->ifindex)
		return 0;
	nh->nh_family = AF_INET6;
	__builtin_memcpy(nh->ipv6_nh, r->nh, 16);
	return r->ifindex;
}

#define CSUM_CHUNK 512 // bpf_csum_diff() takes at most 512 bytes a call
struct scratch {
	__u8 b[CSUM_CHUNK];
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} sixbed4_scratch SEC(".maps");

// The headers, read with bpf_skb_load_bytes() (the packet may be non-linear
// past its first bytes). The pad puts the IPv4 header on a 4-byte boundary:
// the verifier refuses misaligned stack access.
struct headers {
	__u16 pad;
	struct ethhdr eth;
	struct iphdr ip;
	struct udphdr udp;
	struct ipv6hdr ip6;
};

#define L2 sizeof(struct ethhdr)
#define L4 (L2 + sizeof(struct iphdr))
#define L7 (L4 + sizeof(struct udphdr))

static __always_inline int count(struct __sk_buff *skb, __u32 v)
{
	count_bytes(v, skb->len - L2);
	return TC_ACT_UNSPEC;
}

// Reads bytes of the packet in either stage: xdp is a constant where this is inlined, so each program calls only
// the helper its type has.
static __always_inline long load(void *ctx, const int xdp, __u32 off, void *to, __u32 len)
{
	return xdp ? bpf_xdp_load_bytes(ctx, off, to, len) : bpf_skb_load_bytes(ctx, off, to, len);
}

// The UDP checksum over the pseudo-header and ulen bytes from L4, as udp_rcv()
// would check it: true when it sums to all ones.
static __always_inline int udp_checksum_ok(void *ctx, const int xdp, struct headers *h, __u32 ulen)
{
	__u32 key = 0;
	struct scratch *buf = bpf_map_lookup_elem(&sixbed4_scratch, &key);
	if (!buf)
		return 0;
	struct {
		__be32 saddr, daddr;
		__u8 zero, proto;
		__be16 len;
	} pseudo = { h->ip.saddr, h->ip.daddr, 0, IPPROTO_UDP, h->udp.len };
	__s64 sum = fold(csum_words(&pseudo, sizeof(pseudo)));
#pragma unroll
	for (int i = 0; i < 3; i++) { // 3 * 512 >= 8 + 1280
		__u32 off = i * CSUM_CHUNK;
		if (off >= ulen)
			break;
		__u32 n = ulen - off;
		if (n > CSUM_CHUNK)
			n = CSUM_CHUNK;
		if (n < 1)
			return 0;
		if (load(ctx, xdp, L4 + off, buf->b, n) < 0)
			return 0;
		__u32 whole = n & ~3u;
		if (whole) {
			sum = bpf_csum_diff(0, 0, (__be32 *)buf->b, whole & (CSUM_CHUNK * 2 - 1), (__u32)sum);
			if (sum < 0)
				return 0;
		}
		if (n != whole) {
			// The last 1..3 bytes, padded with zeros to a word (the chunk starts word-aligned).
			__u8 tail[4] = {};
			__u32 t = whole & (CSUM_CHUNK - 1);
			tail[0] = buf->b[t];
			if (n - whole > 1)
				tail[1] = buf->b[(t + 1) & (CSUM_CHUNK - 1)];
			if (n - whole > 2)
				tail[2] = buf->b[(t + 2) & (CSUM_CHUNK - 1)];
			sum = bpf_csum_diff(0, 0, (__be32 *)tail, 4, (__u32)sum);
			if (sum < 0)
				return 0;
		}
	}
	return fold((__u32)sum) == 0xffff;
}

// Relays the datagram in h (checked, unchanged so far) to the peer v4:port as the router's socket would send it:
// from the router's bind address and port, with its TTL, DF and ID 0, the inner hop limit one lower and the UDP
// checksum updated for what changed. Leaves it to the slow path when the FIB has no ready next hop on the uplink.
static __always_inline int relay(struct __sk_buff *skb, struct config *cfg, struct headers *h, __be32 v4, __be16 port,
				 __u32 dlen, struct hop4 *hop)
{
	__u16 ip_len = bpf_ntohs(h->ip.tot_len);
	struct wire w = {};
	if (!next_hop(skb, cfg, v4, ip_len, hop, &w.eth, V_ROUTE_LOOKUPS))
		return count(skb, V_NO_ROUTE);
	// What changes under the UDP checksum: the pseudo-header's addresses, the ports, the hop limit's word.
	__builtin_memcpy(w.ip6, &h->ip6, sizeof(w.ip6));
	w.ip6[offsetof(struct ipv6hdr, hop_limit)]--;
	__be32 from[4] = { h->ip.saddr, h->ip.daddr, 0, 0 }, to[4] = { cfg->bind_ipv4, v4, 0, 0 };
	__builtin_memcpy(&from[2], &h->udp.source, 4);
	w.udp.source = cfg->bind_port;
	w.udp.dest = port;
	w.udp.len = h->udp.len;
	__builtin_memcpy(&to[2], &w.udp.source, 4);
	__u8 *f = (__u8 *)&from[3], *t = (__u8 *)&to[3];
	f[0] = t[0] = h->ip6.nexthdr;
	f[1] = h->ip6.hop_limit;
	t[1] = h->ip6.hop_limit - 1;
	// RFC 1624: the new sum is the old one minus what left plus what came (one's complement: minus is plus ~).
	__u32 nfrom[4] = { ~from[0], ~from[1], ~from[2], ~from[3] };
	__u16 check = ~fold((~h->udp.check & 0xffff) + csum_words(nfrom, sizeof(nfrom)) + csum_words(to, sizeof(to))) & 0xffff;
	w.udp.check = check ? check : 0xffff; // 0 means "no checksum" over IPv4
	outer_ipv4(&w.ip, cfg, v4, ip_len);
	// The Ethernet header is not under the checksum the NIC may have given (CHECKSUM_COMPLETE); the rest is.
	if (bpf_skb_store_bytes(skb, 0, &w.eth, sizeof(w.eth), 0) < 0 ||
	    bpf_skb_store_bytes(skb, L2, &w.ip, WIRE_LEN - sizeof(w.eth), BPF_F_RECOMPUTE_CSUM) < 0) {
		count_bytes(V_DECAP_FAILED, dlen);
		return TC_ACT_SHOT; // half rewritten: nothing can forward it as it came
	}
	count_bytes(V_RELAY, dlen);
	return bpf_redirect(skb->ifindex, 0);
}

// Where a peer's datagram goes, by the engine's rules: FORWARD (into the kernel, or relayed when j->port is set), or
// the verdict it takes the slow way with. h->eth, h->ip and h->udp are read already and name a datagram to the
// router's address and port (checked by the caller); len is the frame's length.
#define FORWARD -1
struct judged {
	__be32 v4;      // a relay's target
	__be16 port;    // nonzero: a relay to v4:port
	struct hop4 *hop;
	__u32 dlen;     // the IPv6 packet's length
};
static __always_inline int judge(void *ctx, const int xdp, struct config *cfg, struct headers *h, __u32 len,
				 struct judged *j)
{
	if (h->ip.ihl != 5)
		return V_IPV4_UNUSUAL;
	// What ip_rcv() and the input route would refuse, or treat specially, goes to them.
	__u32 ipv4_len = bpf_ntohs(h->ip.tot_len);
	__u8 s0 = ((const __u8 *)&h->ip.saddr)[0];
	if ((h->ip.frag_off & bpf_htons(0x3fff)) || ipv4_len != len - L2 || s0 == 0 || s0 == 127 || s0 >= 224 ||
	    h->ip.saddr == cfg->bind_ipv4 || fold(csum_words(&h->ip, sizeof(h->ip))) != 0xffff)
		return V_IPV4_UNUSUAL;
	__u32 ulen = bpf_ntohs(h->udp.len);
	if (ulen != ipv4_len - sizeof(struct iphdr))
		return V_IPV4_UNUSUAL;

	// From here on, the engine's order of rules (fromPeers, admit).
	if (h->udp.source == 0)
		return V_SOURCE_PORT_ZERO;
	__u32 dlen = ulen - sizeof(struct udphdr);
	if (dlen == 0)
		return V_KEEPALIVE;
	if (dlen > TUNNEL_MTU)
		return V_OVERSIZE;
	if (dlen < sizeof(struct ipv6hdr))
		return V_SHORT;
	if (load(ctx, xdp, L7, &h->ip6, sizeof(h->ip6)) < 0)
		return V_SHORT;
	if (h->ip6.version != 6)
		return V_NOT_IPV6;
	// The engine forwards only the payload length's worth; a datagram with trailing bytes goes to it.
	if (sizeof(struct ipv6hdr) + bpf_ntohs(h->ip6.payload_len) != dlen)
		return V_BAD_LENGTH;
	if (h->ip6.nexthdr == NH_ICMPV6 && dlen > sizeof(struct ipv6hdr)) {
		__u8 type;
		if (load(ctx, xdp, L7 + sizeof(struct ipv6hdr), &type, 1) < 0)
			return V_SHORT;
		if (type >= ND_FIRST && type <= ND_LAST)
			return V_ND;
	}
	const __u8 *dst = h->ip6.daddr.s6_addr, *src = h->ip6.saddr.s6_addr;
	if (dst[0] == 0xff)
		return V_MULTICAST;
	// The originator check: the source is the address of this datagram's IPv4:port (6bed4-wire.md).
	if (!in_prefix(src, cfg->prefix) || address_port(src) != h->udp.source || address_ipv4(src) != h->ip.saddr)
		return V_SPOOFED;
	if (h->ip6.hop_limit <= 1)
		return V_HOP_LIMIT;
	// Peer to peer: a destination in the /64 with a port word. Port 0 is local (the kernel's, below), and so is the
	// router's own 6bed4 address; any other port on the router's IPv4 is refused, as are refused IPv4s.
	j->port = 0;
	j->hop = NULL;
	if (in_prefix(dst, cfg->prefix) && (j->port = address_port(dst)) != 0) {
		j->v4 = address_ipv4(dst);
		if (j->v4 == cfg->own_ipv4) {
			if (j->port != cfg->own_port)
				return V_BAD_DESTINATION;
			j->port = 0;
		} else if (!(cfg->flags & F_RELAY)) {
			return V_NO_ROUTE;
		} else if (refused_cached(cfg, j->v4, j->hop = hop_cached(cfg, j->v4))) {
			return V_BAD_DESTINATION;
		} else if (!h->udp.check) {
			return V_RELAY_UNCHECKED;
		}
	}
	// Last, the costliest check. Trusted when the NIC (or the stack) verified it (the tc stage can ask; the XDP stage
	// cannot); 0 means none was sent.
	if (h->udp.check && (xdp || bpf_csum_level(ctx, BPF_CSUM_LEVEL_QUERY) < 0) && !udp_checksum_ok(ctx, xdp, h, ulen))
		return V_UDP_CHECKSUM;
	j->dlen = dlen;
	return FORWARD;
}

static __always_inline int same_mac(const __u8 *a, const __u8 *b)
{
	const __u16 *x = (const __u16 *)a, *y = (const __u16 *)b; // 2-byte aligned everywhere this is used
	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2];
}

// A packet the XDP stage decapsulated, or that came out of the GRO pair (GRO may since have merged it with others of
// its flow): on into the TUN, or straight to its egress (F_DIRECT), as the tc stage does with what it decapsulates
// itself. Anything else IPv6 on the uplink is the kernel's.
static __always_inline int handed(struct __sk_buff *skb, struct config *cfg, __u32 tally)
{
	__u32 segs = skb->gso_segs ? skb->gso_segs : 1, bytes = skb->len - L2;
	count_n(tally, 1, bytes);
	struct ipv6hdr ip6;
	if (!(cfg->flags & F_DIRECT) || bpf_skb_load_bytes(skb, L2, &ip6, sizeof(ip6)) < 0)
		return bpf_redirect(cfg->tun_ifindex, BPF_F_INGRESS);
	// The router's hop limit decrement was made in the XDP stage; the forwarding's is made here.
	struct bpf_redir_neigh nh = {};
	__u32 egress = direct_egress(skb, cfg, &ip6, &nh, 1);
	__u8 hops = ip6.hop_limit - 1;
	if (!egress || bpf_skb_store_bytes(skb, L2 + offsetof(struct ipv6hdr, hop_limit), &hops, 1, 0) < 0)
		return bpf_redirect(cfg->tun_ifindex, BPF_F_INGRESS);
	count_n(V_DIRECT, segs, bytes);
	return bpf_redirect_neigh(egress, &nh, sizeof(nh), 0);
}

// Whether the frame carries the router's mark as its source MAC.
static __always_inline int marked(struct __sk_buff *skb, struct config *cfg)
{
	__u16 mac[3];
	return bpf_skb_load_bytes(skb, ETH_ALEN, mac, ETH_ALEN) == 0 && same_mac((__u8 *)mac, cfg->xdp_mark);
}

static __always_inline int from_xdp(struct __sk_buff *skb, struct config *cfg)
{
	if (!marked(skb, cfg))
		return count(skb, V_NOT_6BED4);
	return handed(skb, cfg, V_XDP_HANDED);
}

SEC("tc")
int sixbed4_from_peers(struct __sk_buff *skb)
{
	struct config *cfg = config_of();
	if (!cfg || !cfg->tun_ifindex)
		return TC_ACT_UNSPEC;
	// The GRO pair's receiving end: what this program sent there, marked; nothing else belongs there.
	if (cfg->gro_rx_ifindex && skb->ifindex == cfg->gro_rx_ifindex)
		return skb->protocol == bpf_htons(ETH_P_IPV6) && marked(skb, cfg) ? handed(skb, cfg, V_GRO_HANDED)
										    : TC_ACT_SHOT;
	if (skb->protocol == bpf_htons(ETH_P_IPV6) && (cfg->flags & F_XDP))
		return from_xdp(skb, cfg);
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return count(skb, V_NOT_6BED4);

	struct headers h;
	// Shorter than an IPv6 header inside: not fast-path material either way.
	if (bpf_skb_load_bytes(skb, 0, &h.eth, sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr)) < 0)
		return count(skb, V_NOT_6BED4);
	if (h.ip.version != 4 || h.ip.protocol != IPPROTO_UDP || h.ip.daddr != cfg->bind_ipv4)
		return count(skb, V_NOT_6BED4);
	// With IP options the UDP header is elsewhere: the router's socket may still be the one it is for.
	if (h.ip.ihl != 5)
		return count(skb, V_IPV4_UNUSUAL);
	if (h.udp.dest != cfg->bind_port)
		return count(skb, V_NOT_6BED4);
	// Datagrams the uplink merged (UDP GRO into the router's socket, fraglist GRO) are many IPv6 packets under one
	// header: decapsulating the first would not reach the others. The socket gets them whole, as ever.
	if (skb->gso_size)
		return count(skb, V_GRO);
	if (skb->pkt_type != 0 /* PACKET_HOST */)
		return count(skb, V_IPV4_UNUSUAL);
	struct judged j;
	int v = judge(skb, 0, cfg, &h, skb->len, &j);
	if (v != FORWARD)
		return count(skb, v);
	// A peer the engine would have tracked (it passed the originator check), about to be forwarded here.
	seen(h.ip.saddr, h.udp.source);
	if (j.port)
		return relay(skb, cfg, &h, j.v4, j.port, j.dlen, j.hop);

	// TCP goes through the GRO pair, to be merged with the rest of its flow; direct sends are decided after it.
	int gro = cfg->gro_ifindex && h.ip6.nexthdr == NH_TCP;
	struct bpf_redir_neigh nh = {};
	__u32 egress = gro ? 0 : direct_egress(skb, cfg, &h.ip6, &nh, 0);

	// Nothing has been changed so far: a refusal below leaves the packet as it came.
	if (bpf_skb_adjust_room(skb, -(__s32)(sizeof(struct iphdr) + sizeof(struct udphdr)), BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_DECAP_L3_IPV6) < 0)
		return count(skb, V_DECAP_FAILED);
	// From here the packet is IPv6: errors can no longer hand it back unchanged, so they drop it (counted). TCP for
	// the GRO pair gets its whole Ethernet header in the same store: to the receiving end's MAC (whose stack then
	// takes the frame as its own), from the mark.
	struct ethhdr eth = { .h_proto = bpf_htons(ETH_P_IPV6) };
	if (gro) {
		__builtin_memcpy(eth.h_dest, cfg->gro_mac, ETH_ALEN);
		__builtin_memcpy(eth.h_source, cfg->xdp_mark, ETH_ALEN);
	}
	// Two calls with constant offsets rather than one with a variable one: a variable stack offset needs CAP_PERFMON.
	long stored = gro ? bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0)
			  : bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_proto), &eth.h_proto, sizeof(eth.h_proto), 0);
	__u8 hops = h.ip6.hop_limit - (egress ? 2 : 1);
	if (stored < 0 ||
	    bpf_skb_store_bytes(skb, L2 + offsetof(struct ipv6hdr, hop_limit), &hops, 1, BPF_F_RECOMPUTE_CSUM) < 0) {
		count_bytes(V_DECAP_FAILED, j.dlen);
		return TC_ACT_SHOT;
	}
	count_bytes(V_FAST, j.dlen);
	if (egress) {
		count_bytes(V_DIRECT, j.dlen);
		return bpf_redirect_neigh(egress, &nh, sizeof(nh), 0);
	}
	if (gro) {
		count_bytes(V_GRO_SENT, j.dlen);
		return bpf_redirect(cfg->gro_ifindex, 0);
	}
	return bpf_redirect(cfg->tun_ifindex, BPF_F_INGRESS);
}

// The XDP stage: where the uplink's driver runs XDP before GRO (a NIC's native XDP, a veth), it decapsulates what
// the tc stage would hand to the kernel, so that GRO then merges a peer's TCP segments as it merges native ones, and
// the kernel forwards one merged packet where it forwarded each segment. Only the first half is done here: the
// engine's checks, the router's hop limit decrement and the decapsulation. The packet goes on through GRO to the
// uplink's tc stage (from_xdp above), which hands it to the TUN as it does its own decapsulations.
//
// What tells the tc stage that an IPv6 frame came from a peer's datagram, checked, is its source MAC: the mark, 46
// random bits the router draws at each start, which no frame from the wire carries unless someone on the link guessed
// them. (The metadata area would be the usual place; this kernel refuses bpf_xdp_adjust_meta(), and drivers without
// metadata are common.) The frame's own source MAC goes nowhere after decapsulation: the TUN has no link layer, and
// a direct send gets the next hop's. GRO compares Ethernet headers, and the mark is the same for every frame.
// Relays and everything the tc stage leaves to the router pass unchanged.
SEC("xdp")
int sixbed4_from_peers_xdp(struct xdp_md *ctx)
{
	struct config *cfg = config_of();
	if (!cfg || !cfg->tun_ifindex || !(cfg->flags & F_XDP))
		return XDP_PASS;
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	// The cheap test first, in place: everything else on the uplink passes at the cost of these reads.
	if (data + L7 + sizeof(struct ipv6hdr) > end)
		return XDP_PASS;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + L2;
	struct udphdr *udp = data + L4;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->version != 4 || ip->protocol != IPPROTO_UDP ||
	    ip->daddr != cfg->bind_ipv4 || udp->dest != cfg->bind_port)
		return XDP_PASS;
	// PACKET_HOST, as the stack would see it on the uplink: addressed to its MAC.
	if (!same_mac(eth->h_dest, cfg->uplink_mac))
		return XDP_PASS;
	// Only TCP gains from GRO: everything else is left to the tc stage, which costs less per packet (it trusts the
	// NIC's UDP checksum verdict, which XDP cannot see; and it runs once per packet either way). A flow is one
	// protocol, so none is split between the stages.
	if (((struct ipv6hdr *)(data + L7))->nexthdr != NH_TCP)
		return XDP_PASS;
	struct headers h;
	__builtin_memcpy(&h.eth, eth, sizeof(struct ethhdr));
	__builtin_memcpy(&h.ip, ip, sizeof(struct iphdr));
	__builtin_memcpy(&h.udp, udp, sizeof(struct udphdr));
	struct judged j;
	if (judge(ctx, 1, cfg, &h, bpf_xdp_get_buff_len(ctx), &j) != FORWARD || j.port)
		return XDP_PASS;
	// The Ethernet header moves to just before the IPv6 one, marked, and the IPv6 header loses the router's hop.
	struct ethhdr *to = data + L7 - L2;
	__builtin_memcpy(to->h_dest, h.eth.h_dest, ETH_ALEN);
	__builtin_memcpy(to->h_source, cfg->xdp_mark, ETH_ALEN);
	to->h_proto = bpf_htons(ETH_P_IPV6);
	((struct ipv6hdr *)(data + L7))->hop_limit = h.ip6.hop_limit - 1;
	if (bpf_xdp_adjust_head(ctx, L7 - L2) < 0) {
		count_bytes(V_DECAP_FAILED, j.dlen);
		return XDP_DROP; // half rewritten
	}
	seen(h.ip.saddr, h.udp.source);
	count_bytes(V_FAST, j.dlen);
	count_bytes(V_XDP, j.dlen);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
