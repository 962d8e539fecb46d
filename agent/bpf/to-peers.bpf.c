// SPDX-License-Identifier: BSD-2-Clause
// The 6bed4 router's fast path for packets the kernel routes to peers, on the
// egress of the router's TUN interface (tcx).
//
// An IPv6 packet the TypeScript engine (agent/router/engine.ts, fromKernel)
// would send to the peer whose IPv4:port its destination carries gets that
// hop limit decrement, the outer IPv4 and UDP headers the router's socket
// would give it, and an Ethernet header towards the FIB's next hop, and leaves
// by the uplink at once: no TUN queue, no read by the router, no sendmmsg.
//
// Everything else returns TC_ACT_UNSPEC unchanged and goes into the TUN for
// the router: ND, local (port-0) and refused destinations, sources in the /64
// with a port word, hop limits about to run out (the router answers those),
// extension headers, a next hop that needs a neighbour lookup first.
//
// Merged TCP or UDP (GSO: what the uplink's GRO made of a download, a local
// sender's TSO or UDP_SEGMENT) whose segments each fit the tunnel is encapsulated once, as a
// UDP tunnel GSO packet (bpf_skb_adjust_room's encap flags, with the segment
// size kept: BPF_F_ADJ_ROOM_FIXED_GSO). The uplink (its NIC, or the kernel in
// __skb_udp_tunnel_segment) cuts it into the segments the TUN would have given
// the router, each with a copy of the outer headers: the kernel fills in each
// one's IPv4 length, ID and checksum and UDP length, and copies the outer UDP
// checksum as it is (a BPF program cannot ask for SKB_GSO_UDP_TUNNEL_CSUM). So
// the one written here must be right for every segment: it is derived, as
// below, for a full-size segment, and is right for all of them when they are
// all that size. A merged packet whose last segment is shorter goes out with
// no outer checksum (0, allowed over IPv4: the inner TCP checksum still covers
// the payload end to end) rather than to the router, which would reorder the
// flow. T_FAST counts the segments, T_GSO / T_GSO_UNEVEN again apart. The
// kernel numbers the outer IPv4 IDs of one merged packet's segments 0, 1, 2,
// ... where the router's socket sends 0 (both with DF, where the ID means
// nothing: RFC 6864); every other byte is the router's.
//
// The outer UDP checksum is derived from the inner packet's own checksum
// ("local checksum offload", as the kernel's UDP tunnels do): for TCP, UDP
// and ICMPv6 without extension headers the inner checksum makes the sum over
// the whole inner packet a function of its first 8 bytes alone, so no pass
// over the payload is needed. That holds too for a packet whose inner
// checksum the sender left to the hardware (CHECKSUM_PARTIAL): the device
// that sends it, or the kernel in its stead, completes the inner checksum,
// and the outer one is already right for it.
#include "fastpath.bpf.h"

#define ENCAP (sizeof(struct iphdr) + sizeof(struct udphdr))

static __always_inline int count(struct __sk_buff *skb, __u32 v, __u32 l3)
{
	count_bytes(v, skb->len - l3);
	return TC_ACT_UNSPEC;
}

// The one's complement sum over the whole inner packet (hop limit already decremented), from its header: the
// header's own sum plus the upper layer's, which is minus its pseudo-header's when the inner checksum is right.
static __always_inline __u64 inner_sum(struct ipv6hdr *ip6)
{
	struct {
		struct in6_addr src, dst;
		__be32 len;
		__u8 zero[3], nexthdr;
	} pseudo = { ip6->saddr, ip6->daddr, bpf_htonl(bpf_ntohs(ip6->payload_len)), {}, ip6->nexthdr };
	__u16 upper = ~fold(csum_words(&pseudo, sizeof(pseudo))) & 0xffff;
	return csum_words(ip6, sizeof(*ip6)) + upper;
}

SEC("tc")
int sixbed4_to_peers(struct __sk_buff *skb)
{
	struct config *cfg = config_of();
	if (!cfg || !cfg->tun_ifindex || !(cfg->flags & F_TO_PEERS))
		return TC_ACT_UNSPEC;
	__u32 l3 = cfg->flags & F_TEST_RUN ? sizeof(struct ethhdr) : 0;
	if (skb->protocol != bpf_htons(ETH_P_IPV6))
		return count(skb, T_NOT_IPV6, l3);
	__u32 len = skb->len - l3;
	// A merged packet (GSO) is segmented after this point, into packets of at most gso_size bytes after the
	// headers: those must fit the tunnel (the TUN's MTU is the tunnel's, so a local sender's do).
	__u32 gso = skb->gso_size, segs = 1;
	if (gso) {
		if (!(cfg->flags & F_GSO))
			return count(skb, T_OVERSIZE, l3);
		segs = skb->gso_segs;
	} else if (len > TUNNEL_MTU) {
		return count(skb, T_OVERSIZE, l3);
	}
	struct ipv6hdr ip6;
	if (len < sizeof(ip6) || bpf_skb_load_bytes(skb, l3, &ip6, sizeof(ip6)) < 0 || ip6.version != 6)
		return count(skb, T_NOT_IPV6, l3);
	if (sizeof(ip6) + bpf_ntohs(ip6.payload_len) != len)
		return count(skb, T_BAD_LENGTH, l3);
	// The engine's order (fromKernel).
	__u8 l4[8] = {};
	if (len >= sizeof(ip6) + sizeof(l4) && bpf_skb_load_bytes(skb, l3 + sizeof(ip6), l4, sizeof(l4)) < 0)
		return count(skb, T_NOT_IPV6, l3);
	if (ip6.nexthdr == NH_ICMPV6 && len > sizeof(ip6)) {
		if (len < sizeof(ip6) + sizeof(l4) && bpf_skb_load_bytes(skb, l3 + sizeof(ip6), l4, 1) < 0)
			return count(skb, T_NOT_IPV6, l3);
		if (l4[0] >= ND_FIRST && l4[0] <= ND_LAST)
			return count(skb, T_ND, l3);
	}
	const __u8 *dst = ip6.daddr.s6_addr, *src = ip6.saddr.s6_addr;
	if (dst[0] == 0xff)
		return count(skb, T_MULTICAST, l3);
	if (!in_prefix(dst, cfg->prefix))
		return count(skb, T_OUTSIDE_PREFIX, l3);
	__be16 port = address_port(dst);
	if (!port)
		return count(skb, T_NOT_A_PEER, l3);
	__be32 v4 = address_ipv4(dst);
	struct hop4 *hop = hop_cached(cfg, v4);
	if (v4 == cfg->own_ipv4 || refused_cached(cfg, v4, hop))
		return count(skb, T_BAD_DESTINATION, l3);
	// The router lets only its own ICMPv6 out with such a source; it decides.
	if (in_prefix(src, cfg->prefix) && address_port(src))
		return count(skb, T_SOURCE_IN_PREFIX, l3);
	if (ip6.hop_limit <= 1)
		return count(skb, T_HOP_LIMIT, l3);
	// The outer checksum from the inner one: only for upper layers whose checksum covers the IPv6 pseudo-header
	// and follows the fixed header at once. A UDP checksum of 0 is not valid over IPv6 and proves nothing.
	if (!(ip6.nexthdr == NH_TCP && len >= sizeof(ip6) + 20) && !(ip6.nexthdr == NH_ICMPV6 && len >= sizeof(ip6) + 4) &&
	    !(ip6.nexthdr == NH_UDP && len >= sizeof(ip6) + 8 && (l4[6] | l4[7])))
		return count(skb, T_NO_SHORTCUT, l3);

	// The length of one segment on the tunnel: the whole packet, or for a merged one a full-size segment.
	__u32 seg = len, uneven = 0, hdrs = 0;
	if (gso) {
		// TCP (TSO/GRO) or UDP (UDP_SEGMENT) right after the header: the two the kernel segments by gso_size.
		if (ip6.nexthdr == NH_TCP) {
			__u8 doff;
			if (bpf_skb_load_bytes(skb, l3 + sizeof(ip6) + 12, &doff, 1) < 0)
				return count(skb, T_NO_SHORTCUT, l3);
			hdrs = sizeof(ip6) + (doff >> 4) * 4;
			if (hdrs < sizeof(ip6) + 20 || len < hdrs)
				return count(skb, T_NO_SHORTCUT, l3);
		} else if (ip6.nexthdr == NH_UDP) {
			hdrs = sizeof(ip6) + 8;
		} else {
			return count(skb, T_GSO_OTHER, l3);
		}
		if (gso > TUNNEL_MTU)
			return count(skb, T_OVERSIZE, l3);
		__u32 data = len - hdrs;
		seg = hdrs + gso;
		if (seg > TUNNEL_MTU)
			return count(skb, T_OVERSIZE, l3);
		if (data <= gso) // one segment: the packet itself, whose checksum is derived as ever
			seg = len;
		else
			uneven = data % gso;
		if (!segs)
			segs = data > gso ? (data + gso - 1) / gso : 1;
	}

	__u16 ip_len = ENCAP + seg;
	struct wire w = {};
	if (!next_hop(skb, cfg, v4, ip_len, hop, &w.eth, T_ROUTE_LOOKUPS))
		return count(skb, T_NO_ROUTE, l3);
	ip6.hop_limit--;
	__builtin_memcpy(w.ip6, &ip6, sizeof(w.ip6));
	// A merged packet's outer lengths are rewritten for each segment by the kernel; these are a full segment's.
	outer_ipv4(&w.ip, cfg, v4, ip_len);
	w.udp.source = cfg->bind_port;
	w.udp.dest = port;
	w.udp.len = bpf_htons(ip_len - sizeof(w.ip));
	if (!uneven) {
		struct {
			__be32 saddr, daddr;
			__u8 zero, proto;
			__be16 len;
		} pseudo = { w.ip.saddr, w.ip.daddr, 0, IPPROTO_UDP, w.udp.len };
		__u64 sum = csum_words(&pseudo, sizeof(pseudo)) + inner_sum(&ip6);
		__u16 check = ~fold(csum_words(&w.udp, sizeof(w.udp)) + sum) & 0xffff;
		w.udp.check = check ? check : 0xffff; // 0 means "no checksum" over IPv4
	}

	// Room for the outer headers in front (protocol becomes IPv4); nothing has changed if the kernel refuses. A
	// merged packet keeps its segment size (the inner segments are what the tunnel carries) and becomes a UDP
	// tunnel GSO packet.
	__u64 flags = BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP | (gso ? BPF_F_ADJ_ROOM_FIXED_GSO : 0);
	if (bpf_skb_adjust_room(skb, ENCAP, BPF_ADJ_ROOM_MAC, flags) < 0)
		return count(skb, gso ? T_GSO_REFUSED : T_ENCAP_FAILED, l3);
	// The TUN gives no link-layer header; the uplink needs one.
	if ((!l3 && bpf_skb_change_head(skb, sizeof(struct ethhdr), 0) < 0) ||
	    bpf_skb_store_bytes(skb, 0, WIRE(&w), WIRE_LEN, 0) < 0) {
		count_bytes(T_ENCAP_FAILED, len);
		return TC_ACT_SHOT; // half rewritten: nothing can forward it as it came
	}
	// As the router would count the segments: each with its own headers.
	count_n(T_FAST, segs, len + (segs - 1) * hdrs);
	if (gso)
		count_n(uneven ? T_GSO_UNEVEN : T_GSO, segs, 0);
	return bpf_redirect(cfg->uplink_ifindex, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
