// IPv4 destinations the router never sends to, whatever a peer's relay or a
// packet from the kernel asks for. The router sends with its host's own
// source address, so a datagram to another local address of the host (a
// second NIC, a bridge, a container network) or to the link-local range
// (169.254/16: cloud metadata services) would reach services that trust their
// host. The set is a sorted list of disjoint intervals searched in O(log n)
// without allocation; the router rebuilds it when the host's local routing
// table changes (localtable.ts).

/** An inclusive range of IPv4 addresses, host order. */
export interface IPv4Range {
  readonly start: number;
  readonly end: number;
}

const cidr = (a: number, b: number, c: number, d: number, len: number): IPv4Range => {
  const start = ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
  return { start, end: (start + 2 ** (32 - len) - 1) >>> 0 };
};

/** Never a relay target: "this network", loopback, link-local, multicast, reserved and broadcast. */
export const ALWAYS_REFUSED: readonly IPv4Range[] = [
  cidr(0, 0, 0, 0, 8),
  cidr(127, 0, 0, 0, 8),
  cidr(169, 254, 0, 0, 16),
  cidr(224, 0, 0, 0, 3),
];

/**
 * Private and special-purpose ranges that peers on the public Internet never
 * have (RFC 1918, shared CGN space, benchmarking, IETF protocol assignments).
 * Refused with --refuse-private, for routers whose host has a leg in such a
 * network that is not in its local routing table (a neighbour subnet behind a
 * gateway, another tenant's VPC range).
 */
export const PRIVATE_RANGES: readonly IPv4Range[] = [
  cidr(10, 0, 0, 0, 8),
  cidr(100, 64, 0, 0, 10),
  cidr(172, 16, 0, 0, 12),
  cidr(192, 0, 0, 0, 24),
  cidr(192, 168, 0, 0, 16),
  cidr(198, 18, 0, 0, 15),
];

/** The ranges sorted, overlapping and adjacent ones merged: the form the engine and the fast path search. */
export function mergeRanges(ranges: readonly IPv4Range[]): IPv4Range[] {
  const merged: { start: number; end: number }[] = [];
  for (const r of [...ranges].sort((x, y) => x.start - y.start)) {
    const last = merged[merged.length - 1];
    if (last && r.start <= last.end + 1) last.end = Math.max(last.end, r.end);
    else merged.push({ start: r.start, end: r.end });
  }
  return merged;
}

export class RefusedIPv4 {
  private readonly starts: Float64Array;
  private readonly ends: Float64Array;

  constructor(ranges: readonly IPv4Range[]) {
    const merged = mergeRanges(ranges);
    this.starts = Float64Array.from(merged, (r) => r.start);
    this.ends = Float64Array.from(merged, (r) => r.end);
  }

  get size(): number {
    return this.starts.length;
  }

  has(v4: number): boolean {
    const s = this.starts;
    let lo = 0,
      hi = s.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (s[mid]! <= v4) lo = mid + 1;
      else hi = mid - 1;
    }
    return hi >= 0 && v4 <= this.ends[hi]!;
  }
}

/** The ranges to refuse: always the fixed ones, the host's local table, and private ranges if asked. */
export function refusedRanges(local: readonly IPv4Range[], refusePrivate: boolean): IPv4Range[] {
  return [...ALWAYS_REFUSED, ...local, ...(refusePrivate ? PRIVATE_RANGES : [])];
}
