// A node's failover share checked before anything is made: whether this node can be a member of the group that
// serves the /64 at all, with the reason in the spec's words when not (a setup that cannot fail over is refused,
// never half-served), and the names the member uses on the node. Pure: no I/O.
import type { AgentFailoverConfig, AgentNodeConfig } from '../../kube/api.js';
import { InputError } from '../../lib/errors.js';
import { parseIPv4, parseIPv6 } from '../../lib/ip.js';

/** A refusal the operator shows as the node's Degraded reason. */
export class FailoverRefused extends InputError {
  constructor(
    message: string,
    readonly reason = 'FailoverUnavailable',
  ) {
    super(message);
  }
}

export interface FailoverPlan {
  readonly config: AgentFailoverConfig;
  readonly ipv4: number;
  readonly nextHop?: Uint8Array;
  /** The uplink the moving addresses go on (a macvlan on it carries the virtual MAC). */
  readonly uplink: string;
  /** The macvlan's name: one per virtual router id on a node. */
  readonly macvlan: string;
  /** The nftables tables of the member's fence (netdev) and of the uplink's ARP replies (arp). */
  readonly table: string;
}

/** The member's macvlan on the uplink: `6b4vr<id>`. */
export const macvlanName = (id: number): string => `6b4vr${id}`;

/**
 * Checks the failover block of a node's share. `uplink` is the interface the host plan found (the share's, or the
 * one with the default route): layer 2 to the provider must be there, since the addresses move by ARP and ND.
 */
export function failoverPlan(n: AgentNodeConfig, uplink: string): FailoverPlan {
  const f = n.failover;
  if (!f) throw new Error('failoverPlan: the share has no failover block');
  const refuse = (m: string, reason?: string) => {
    throw new FailoverRefused(`spec.failover: ${m}`, reason);
  };
  let ipv4 = 0;
  try {
    ipv4 = parseIPv4(f.address);
  } catch {
    refuse(`address ${f.address} is not an IPv4 address`);
  }
  if (n.listen.address !== f.address)
    refuse(`the share listens on ${n.listen.address}, not on the floating address ${f.address}`);
  if (n.listen.advertise || n.listen.bind)
    refuse('a floating address behind a NAT (listen.advertise, a 1:1 NAT) cannot move: the NAT points at one node');
  if (!Number.isInteger(f.virtualRouterId) || f.virtualRouterId < 1 || f.virtualRouterId > 255)
    refuse(`virtualRouterId ${f.virtualRouterId}: use 1..255`);
  if (!/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(f.leaseName))
    refuse(`leaseName '${f.leaseName}' is not a Lease name`);
  const { leaseDurationMs: d, renewIntervalMs: r, fenceAfterMs: fence } = f;
  if (![d, r, fence].every((v) => Number.isInteger(v) && v > 0))
    refuse('the Lease timings must be whole milliseconds above 0');
  // The Lease's duration is whole seconds on the wire.
  if (d % 1000 !== 0) refuse(`leaseDurationMs ${d}: a Lease's duration is whole seconds`);
  if (!(r < fence && fence < d))
    refuse(
      `timings: renewIntervalMs ${r} < fenceAfterMs ${fence} < leaseDurationMs ${d} must hold (the active member fences itself before the Lease can expire for another)`,
    );
  let nextHop: Uint8Array | undefined;
  if (f.upstream === 'RoutedNextHop') {
    if (!f.nextHop) refuse('upstream RoutedNextHop needs nextHop, the IPv6 address the provider routes the /64 to');
    try {
      nextHop = parseIPv6(f.nextHop!);
    } catch {
      refuse(`nextHop ${f.nextHop} is not an IPv6 address`);
    }
    if (nextHop![0] === 0xfe && (nextHop![1]! & 0xc0) === 0x80) {
      refuse(
        `nextHop ${f.nextHop} is link-local: a /64 routed to one machine's own link-local address cannot move (an NA cannot move it); route it to a global next hop the group holds`,
        'FailoverUnsupported',
      );
    }
  } else if (f.upstream === 'OnLink') {
    if (n.ndpProxy === 'off')
      refuse(
        'upstream OnLink needs the neighbour proxy (ndpProxy Always or WhenOnLink): the active member answers for the peers',
      );
  } else {
    refuse(`upstream ${String(f.upstream)}: use RoutedNextHop or OnLink`);
  }
  if (!f.members.length) refuse('no members');
  // The host plan puts them on the uplink of every member: the same /128 on several hosts of one segment.
  if (n.localAddresses.length)
    refuse(
      `localAddresses (${n.localAddresses.join(', ')}) live on one host; a failover group has several on one segment: serve them from a pod slice or another /64`,
    );
  return {
    config: f,
    ipv4,
    ...(nextHop ? { nextHop } : {}),
    uplink,
    macvlan: macvlanName(f.virtualRouterId),
    table: `sixbed4_vr${f.virtualRouterId}`,
  };
}

/**
 * Whether the uplink can carry a moving address: an Ethernet link (ARP and ND, a MAC of its own). Point-to-point
 * links, tunnels and links without ARP cannot (a cloud without layer 2): refused with the reason.
 */
export function layer2Refusal(
  uplink: string,
  link: { link_type?: string; flags?: string[] } | undefined,
): string | undefined {
  if (!link) return `the uplink ${uplink} is not there`;
  if (link.link_type !== 'ether')
    return `the uplink ${uplink} is not Ethernet (${link.link_type ?? 'unknown'}): a floating address moves by ARP and neighbour advertisements on a layer-2 segment`;
  if (link.flags?.includes('NOARP'))
    return `the uplink ${uplink} does not do ARP (NOARP): a floating address moves by ARP on a layer-2 segment`;
  return undefined;
}
