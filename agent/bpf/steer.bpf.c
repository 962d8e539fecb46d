// SPDX-License-Identifier: BSD-2-Clause
// Which of the router's SO_REUSEPORT sockets a datagram lands in: the eBPF twin of the classic program in
// agent/router/steer.ts, for a reuseport group that may also hold another router's sockets (a handover: the new
// router's sockets join the previous one's group). A classic program returns an index into the group's socket
// array, which then holds the predecessor's sockets too, in an order the kernel changes as they close; this one
// picks from a REUSEPORT_SOCKARRAY map in which the router has put its own sockets at known keys (worker by worker,
// as it bound them), with bpf_sk_select_reuseport. Attaching it (SO_ATTACH_REUSEPORT_EBPF) replaces the group's
// program, whoever attached that: from then on every datagram goes to the sockets of the router that attached last.
//
// The split is the classic program's, test for test, and so is the socket a source gets: datagrams whose IPv6 source
// is the 6bed4 address of their own IPv4:port (sane length and hop limit, not multicast, not Neighbour Discovery) go
// to the first `checked` sockets of a worker, the rest to the others; within each half the source's IPv4 and port
// pick the worker and socket.
//
// Context (net/core/filter.c, bpf_init_reuseport_kern; the kernel's selftest test_select_reuseport_kern.c reads it
// so): for UDP, data points at the UDP header and len is the UDP length (header and payload: __udp4_lib_rcv trimmed
// the skb to it before the lookup); the IPv4 header is read relative to the network header. Returning SK_PASS
// without a selection (a key whose socket has closed) leaves the choice to the kernel's hash; the program never
// drops.
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define TUNNEL_MTU 1280
#define NH_ICMPV6 58
#define ND_FIRST 133 // Router Solicitation
#define ND_LAST 137  // Redirect
#define UDP_HLEN 8
#define IPV6_HLEN 40

// Filled by the loader (agent/router/steer-ebpf.ts writes the same layout, 24 bytes).
struct steer_config {
	__u8 prefix[8]; // the served /64
	__u32 workers;
	__u32 sockets; // a worker's
	__u32 checked; // of them, the first ones take checked datagrams (1..sockets-1)
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct steer_config);
} sixbed4_steer_config SEC(".maps");

// Key worker × sockets + socket: the router's own socket (value: its fd on update, its cookie on lookup). The loader
// sizes it workers × sockets; max_entries here only has to declare the map.
struct {
	__uint(type, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sixbed4_steer_sockets SEC(".maps");

// Whether the datagram passes the originator check (steer.ts says why each test is there).
static __always_inline int checked(struct sk_reuseport_md *md, const __u8 *ip4, __u16 sport,
				   const struct steer_config *cfg)
{
	__u8 ip6[IPV6_HLEN];
	__u32 len;

	if (md->len < UDP_HLEN)
		return 0;
	len = md->len - UDP_HLEN; // the IPv6 packet's length
	if (len < IPV6_HLEN || len > TUNNEL_MTU)
		return 0;
	if (bpf_skb_load_bytes(md, UDP_HLEN, ip6, IPV6_HLEN))
		return 0;
	if (((__u32)ip6[4] << 8 | ip6[5]) + IPV6_HLEN != len) // exactly the packet its header says
		return 0;
	if (ip6[7] < 2) // a hop limit the router can forward
		return 0;
	if (ip6[24] == 0xff) // not to multicast
		return 0;
	if (ip6[6] == NH_ICMPV6) { // not Neighbour Discovery (control, answered at a limited rate)
		__u8 type;
		if (len < IPV6_HLEN + 1 || bpf_skb_load_bytes(md, UDP_HLEN + IPV6_HLEN, &type, 1))
			return 0;
		if (type >= ND_FIRST && type <= ND_LAST)
			return 0;
	}
	if (ip4[0] != 0x45) // IPv4 without options, as the classic program needs
		return 0;
	if ((ip6[0] & 0xf0) != 0x60) // IPv6
		return 0;
	for (int i = 0; i < 8; i++) // source in the /64
		if (ip6[8 + i] != cfg->prefix[i])
			return 0;
	// The IPv4 in the interface id (its first byte's two low bits moved to byte 14's top) is the datagram's source,
	// and the port word its source port.
	if ((ip6[16] & 0xfc) != (ip4[12] & 0xfc) || ip6[17] != ip4[13] || ip6[18] != ip4[14] || ip6[19] != ip4[15])
		return 0;
	if ((ip4[12] & 3) != ip6[22] >> 6)
		return 0;
	return ((__u16)ip6[20] << 8 | ip6[21]) == sport;
}

SEC("sk_reuseport")
int sixbed4_steer(struct sk_reuseport_md *md)
{
	__u32 zero = 0, key, n, first, u;
	__u8 ip4[20], udp[4];
	struct steer_config *cfg = bpf_map_lookup_elem(&sixbed4_steer_config, &zero);

	if (!cfg || cfg->workers == 0 || cfg->checked == 0 || cfg->checked >= cfg->sockets)
		return SK_PASS;
	if (md->eth_protocol != bpf_htons(0x0800) || md->ip_protocol != IPPROTO_UDP)
		return SK_PASS;
	if (bpf_skb_load_bytes_relative(md, 0, ip4, sizeof(ip4), BPF_HDR_START_NET) ||
	    bpf_skb_load_bytes(md, 0, udp, sizeof(udp)))
		return SK_PASS;
	__u32 ipv4 = (__u32)ip4[12] << 24 | (__u32)ip4[13] << 16 | (__u32)ip4[14] << 8 | ip4[15];
	__u16 sport = (__u16)udp[0] << 8 | udp[1];
	if (checked(md, ip4, sport, cfg)) {
		n = cfg->checked;
		first = 0;
	} else {
		n = cfg->sockets - cfg->checked;
		first = cfg->checked;
	}
	// h mixes the source's IPv4 and port (ports often share their low bit: peers bind even ones), as the classic
	// program does: u = h mod (workers × n); worker u / n, its socket first + u mod n.
	u = (ipv4 + (ipv4 >> 16) + sport + (sport >> 1)) % (cfg->workers * n);
	key = (u / n) * cfg->sockets + first + u % n;
	bpf_sk_select_reuseport(md, &sixbed4_steer_sockets, &key, 0);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
