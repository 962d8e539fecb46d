// SPDX-License-Identifier: BSD-2-Clause
// A 6bed4 peer in the kernel, for the bench's bulk rows only (bench/bulk.ts):
// the far end of the tunnel must not be what sets the rate, and the TypeScript
// peer, one process on a shared CPU, is. Two tc programs on the peer
// namespace's uplink, compiled by bench/bulk.ts with the addresses as -D
// defines (each program in an object of its own: -DPEER_IN for the first) and
// attached with iproute2 (the bench's namespace only):
// - ingress: a datagram from the router's address and port to the peer's is
//   decapsulated where it arrives, and the stack delivers the IPv6 packet
//   inside (the peer's 6bed4 address is on the same interface);
// - egress: an IPv6 packet from the peer's 6bed4 address gets the outer
//   IPv4/UDP headers to the router, as one merged packet when it is one (the
//   uplink segments it as UDP tunnel packets). No UDP checksum (0, allowed
//   over IPv4): the router checks none then, the inner TCP's covers the bytes.
// No RS/RA: the address is the peer's IPv4 and port in the router's /64
// (6bed4 is stateless), which bench/bulk.ts computes.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV6
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)
#endif

// -D PEER_V4=0x... PEER_PORT=... ROUTER_V4=0x... ROUTER_PORT=... (host order), ADDR0..ADDR3 (the 6bed4 address,
// host-order words), ROUTER_MAC0..5.
#define ENCAP (sizeof(struct iphdr) + sizeof(struct udphdr))

static __always_inline __attribute__((unused)) __u16 fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

#ifdef PEER_IN
SEC("tc")
int peer_in(struct __sk_buff *skb)
{
	struct {
		__u16 pad; // puts the IPv4 header on a 4-byte boundary (the verifier refuses misaligned stack access)
		struct ethhdr eth;
		struct iphdr ip;
		struct udphdr udp;
	} h;
	if (skb->protocol != bpf_htons(ETH_P_IP) || bpf_skb_load_bytes(skb, 0, &h.eth, sizeof(h) - 2) < 0)
		return TC_ACT_OK;
	if (h.ip.ihl != 5 || h.ip.protocol != IPPROTO_UDP || h.ip.saddr != bpf_htonl(ROUTER_V4) || h.ip.daddr != bpf_htonl(PEER_V4) ||
	    h.udp.source != bpf_htons(ROUTER_PORT) || h.udp.dest != bpf_htons(PEER_PORT) || bpf_ntohs(h.udp.len) < 8 + 40)
		return TC_ACT_OK;
	if (bpf_skb_adjust_room(skb, -(__s32)ENCAP, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_DECAP_L3_IPV6) < 0)
		return TC_ACT_OK;
	__be16 proto = bpf_htons(ETH_P_IPV6);
	bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto), 0);
	return TC_ACT_OK;
}
#else
SEC("tc")
int peer_out(struct __sk_buff *skb)
{
	struct {
		__u16 pad;
		struct ethhdr eth;
		struct ipv6hdr ip6;
	} h;
	if (skb->protocol != bpf_htons(ETH_P_IPV6) || bpf_skb_load_bytes(skb, 0, &h.eth, sizeof(h) - 2) < 0)
		return TC_ACT_OK;
	__u32 *s = (__u32 *)h.ip6.saddr.s6_addr;
	if (s[0] != bpf_htonl(ADDR0) || s[1] != bpf_htonl(ADDR1) || s[2] != bpf_htonl(ADDR2) || s[3] != bpf_htonl(ADDR3))
		return TC_ACT_OK;
	__u32 len = skb->len - sizeof(struct ethhdr), seg = len;
	if (skb->gso_size)
		seg = sizeof(struct ipv6hdr) + 60 + skb->gso_size; // a bound: only for the outer lengths, which the kernel rewrites per segment
	__u64 flags = BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP | (skb->gso_size ? BPF_F_ADJ_ROOM_FIXED_GSO : 0);
	if (bpf_skb_adjust_room(skb, ENCAP, BPF_ADJ_ROOM_MAC, flags) < 0)
		return TC_ACT_SHOT;
	struct {
		__u16 pad;
		struct ethhdr eth;
		struct iphdr ip;
		struct udphdr udp;
	} w = {};
	__u8 mac[6] = { ROUTER_MAC0, ROUTER_MAC1, ROUTER_MAC2, ROUTER_MAC3, ROUTER_MAC4, ROUTER_MAC5 };
	__builtin_memcpy(w.eth.h_dest, mac, 6);
	__builtin_memcpy(w.eth.h_source, h.eth.h_source, 6);
	w.eth.h_proto = bpf_htons(ETH_P_IP);
	__u32 total = ENCAP + (skb->gso_size ? seg : len);
	w.ip.version = 4;
	w.ip.ihl = 5;
	w.ip.tot_len = bpf_htons(total > 0xffff ? 0xffff : total);
	w.ip.frag_off = bpf_htons(0x4000);
	w.ip.ttl = 64;
	w.ip.protocol = IPPROTO_UDP;
	w.ip.saddr = bpf_htonl(PEER_V4);
	w.ip.daddr = bpf_htonl(ROUTER_V4);
	w.ip.check = ~fold(bpf_csum_diff(0, 0, (__be32 *)&w.ip, sizeof(w.ip), 0)) & 0xffff;
	w.udp.source = bpf_htons(PEER_PORT);
	w.udp.dest = bpf_htons(ROUTER_PORT);
	w.udp.len = bpf_htons(total - sizeof(struct iphdr));
	if (bpf_skb_store_bytes(skb, 0, (__u8 *)&w + 2, sizeof(w) - 2, 0) < 0)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}
#endif

char LICENSE[] SEC("license") = "Dual BSD/GPL";
