// Packet counters of the forwarding engine. Plain numbers bumped on the hot
// path (a Prometheus client call per packet would cost more than forwarding);
// the metrics endpoint reads them when scraped.

/** Every reason the router drops a packet; each is a label value in metrics. */
export const DROP_REASONS = [
  'source_port_zero', // datagram from UDP port 0: never a 6bed4 peer (port-0 addresses are local and slices)
  'short', // datagram shorter than an IPv6 header
  'oversize', // IPv6 packet longer than the 1280-byte tunnel MTU
  'not_ipv6', // first nibble is not 6
  'bad_length', // IPv6 payload length disagrees with the datagram
  'nd_invalid', // ND message with wrong hop limit, code, length or checksum
  'nd_unexpected', // RA, NA or Redirect from a peer; ND from the kernel side
  'ns_foreign_target', // NS for an address that is not the router's
  'multicast', // multicast destination
  'spoofed', // source fails the originator check
  'spoofed_from_kernel', // from the kernel: source is a peer's address in the /64 (port word set), or the
  // router's own address on anything but ICMPv6
  'hop_limit', // hop limit ran out
  'outside_prefix', // from the kernel: destination outside the served /64
  'not_a_peer', // destination in the /64 with port word 0 (local use, never a peer)
  'bad_destination', // relay, kernel→peer or reply target refused: loopback, multicast, broadcast, 169.254/16,
  // an address of this host (its local routing table), a private range (--refuse-private)
  'rate_limited', // a reply (RA, NA, ICMPv6 error) suppressed by the limiter
  'error_for_error', // no ICMPv6 error about an ICMPv6 error (or a packet whose header chain hides its upper layer)
  'icmp4_unmatched', // an ICMPv4 error about a datagram the router did not send that way, or not Destination Unreachable
  'reply_refused', // a reply not sent: its destination (the datagram's source) is refused, as above
  'tx_dropped', // the kernel refused or had no room for the packet
] as const;
export type DropReason = (typeof DROP_REASONS)[number];

export class Counters {
  /** Packets/bytes from peers (UDP) handed to the kernel (TUN). */
  udpToTunPackets = 0;
  udpToTunBytes = 0;
  /** Packets/bytes from the kernel (TUN) sent to peers (UDP). */
  tunToUdpPackets = 0;
  tunToUdpBytes = 0;
  /** Peer-to-peer packets relayed UDP→UDP without touching the kernel. */
  relayPackets = 0;
  relayBytes = 0;
  udpRxPackets = 0;
  udpRxBytes = 0;
  tunRxPackets = 0;
  tunRxBytes = 0;
  keepalives = 0;
  /** Peers seen within the liveness TTL at the last sweep (a gauge: summed across workers). */
  livePeers = 0;
  /** Packets from peers not tracked live (table full, their IPv4's share used, too many new at once). */
  liveUntracked = 0;
  routerSolicits = 0;
  neighborSolicits = 0;
  routerAdverts = 0;
  neighborAdverts = 0;
  icmpErrors = 0;
  /** ICMPv4 errors received about datagrams the router sent (translated to ICMPv6 when they qualify). */
  icmp4Errors = 0;
  /**
   * The TUN's offload (datapath.ts): super-packets read and the segments cut from them (each also counts in
   * tunRxPackets), checksums the kernel left partial completed, super-packets that could not be cut (handed to the engine whole, which drops them);
   * UDP_SEGMENT sends to peers and the datagrams they carried, and refusals of one (the sends went on without).
   */
  tunGsoPackets = 0;
  tunGsoSegments = 0;
  tunChecksumsCompleted = 0;
  tunGsoBad = 0;
  udpGsoSends = 0;
  udpGsoDatagrams = 0;
  udpGsoRefused = 0;
  /**
   * TCP segments from peers merged into the TUN's writes (agent/native/coalesce.c): super-packets written, the
   * segments in them (each also counts in udpToTunPackets), super-packets the kernel refused (written one by one).
   */
  tunCoalescePackets = 0;
  tunCoalesceSegments = 0;
  tunCoalesceRefused = 0;
  /** UDP_GRO on the router's sockets (without the fast path): buffers that held several datagrams, the datagrams. */
  udpGroBuffers = 0;
  udpGroDatagrams = 0;
  readonly drops: Record<DropReason, number> = Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<
    DropReason,
    number
  >;

  /** Adds another engine's counters (worker threads report theirs). */
  add(o: CountersSnapshot): void {
    for (const k of NUMERIC_FIELDS) this[k] += o[k];
    for (const r of DROP_REASONS) this.drops[r] += o.drops[r];
  }

  snapshot(): CountersSnapshot {
    const s = {} as Record<string, unknown>;
    for (const k of NUMERIC_FIELDS) s[k] = this[k];
    s.drops = { ...this.drops };
    return s as unknown as CountersSnapshot;
  }
}

const NUMERIC_FIELDS = [
  'udpToTunPackets',
  'udpToTunBytes',
  'tunToUdpPackets',
  'tunToUdpBytes',
  'relayPackets',
  'relayBytes',
  'udpRxPackets',
  'udpRxBytes',
  'tunRxPackets',
  'tunRxBytes',
  'keepalives',
  'livePeers',
  'liveUntracked',
  'routerSolicits',
  'neighborSolicits',
  'routerAdverts',
  'neighborAdverts',
  'icmpErrors',
  'icmp4Errors',
  'tunGsoPackets',
  'tunGsoSegments',
  'tunChecksumsCompleted',
  'tunGsoBad',
  'udpGsoSends',
  'udpGsoDatagrams',
  'udpGsoRefused',
  'tunCoalescePackets',
  'tunCoalesceSegments',
  'tunCoalesceRefused',
  'udpGroBuffers',
  'udpGroDatagrams',
] as const;
type NumericField = (typeof NUMERIC_FIELDS)[number];
export type CountersSnapshot = Record<NumericField, number> & { drops: Record<DropReason, number> };
