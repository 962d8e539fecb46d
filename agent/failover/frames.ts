// The announcements of a failover member as whole Ethernet frames (sent with AF_PACKET, native packetSend): a
// gratuitous ARP for the floating IPv4 and an unsolicited Neighbour Advertisement for the /64's next hop, both
// from the group's virtual MAC, so that every cache on the segment (switch FDBs, the provider's ARP and neighbour
// tables) points at the member that holds the addresses now. Pure: no I/O.
import { writeNeighborAdvert } from '../protocol/nd.js';
import { NA_OVERRIDE, NA_ROUTER } from '../ndp/messages.js';

const ETH_HEADER = 14;
const BROADCAST = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
/** ff02::1, all nodes, and its Ethernet group 33:33:00:00:00:01. */
const ALL_NODES = new Uint8Array([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
const ALL_NODES_MAC = new Uint8Array([0x33, 0x33, 0, 0, 0, 1]);

/** The VRRP virtual MAC of a virtual router id (RFC 5798: 00:00:5e:00:01:<id>). */
export function virtualMac(id: number): Uint8Array {
  return new Uint8Array([0x00, 0x00, 0x5e, 0x00, 0x01, id & 0xff]);
}

export function formatMac(mac: Uint8Array): string {
  return [...mac].map((b) => b.toString(16).padStart(2, '0')).join(':');
}

function ethernet(out: Uint8Array, dst: Uint8Array, src: Uint8Array, type: number): void {
  out.set(dst, 0);
  out.set(src, 6);
  out[12] = type >>> 8;
  out[13] = type & 0xff;
}

/**
 * A gratuitous ARP (RFC 5227's ARP announcement: a request whose sender and target are the address, broadcast).
 * Requests rather than replies: every Linux neighbour table updates an entry it has from a request (arp_accept 0
 * does not create one from either), and some switches pass only requests on in full.
 */
export function gratuitousArp(ipv4: number, mac: Uint8Array): Uint8Array {
  const f = new Uint8Array(ETH_HEADER + 28);
  ethernet(f, BROADCAST, mac, 0x0806);
  const a = ETH_HEADER;
  f.set([0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01], a); // Ethernet, IPv4, request
  f.set(mac, a + 8);
  writeU32(f, a + 14, ipv4);
  // target hardware address zero, as in a request
  writeU32(f, a + 24, ipv4);
  return f;
}

/**
 * An unsolicited Neighbour Advertisement for address from mac, to all nodes: Override set (replace what is
 * cached: the address moved) and Router set (the next hop of the /64 is a router; a cleared R flag would make the
 * provider drop it from its default-router list, RFC 4861 7.2.5), Solicited clear.
 */
export function unsolicitedAdvert(address: Uint8Array, mac: Uint8Array): Uint8Array {
  const f = new Uint8Array(ETH_HEADER + 40 + 32);
  ethernet(f, ALL_NODES_MAC, mac, 0x86dd);
  writeNeighborAdvert(f, ETH_HEADER, address, ALL_NODES, address, mac, NA_OVERRIDE | NA_ROUTER);
  return f;
}

function writeU32(b: Uint8Array, off: number, v: number): void {
  b[off] = (v >>> 24) & 0xff;
  b[off + 1] = (v >>> 16) & 0xff;
  b[off + 2] = (v >>> 8) & 0xff;
  b[off + 3] = v & 0xff;
}
