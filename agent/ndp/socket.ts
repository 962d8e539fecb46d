// The raw ICMPv6 socket of the neighbour proxy (linux-ipv6-facts.md §6):
// bound to the uplink, hop limits 255 as ND requires, an ICMPv6 filter that
// passes only Neighbour Solicitations, and membership of solicited-node groups
// on demand. Behind an interface so the responder's logic is testable without one.
import { endianness } from 'node:os';
import { createRequire } from 'node:module';
import type RawSocket from 'raw-socket';
import { ND_NEIGHBOR_SOLICIT, NH_ICMPV6 } from '../protocol/constants.js';
import { formatIPv6 } from '../../lib/ip.js';

export interface NdSocket {
  /** Called with each NS body (ICMPv6, no IPv6 header) and its IPv6 source as text. */
  onSolicitation(handler: (body: Uint8Array, source: string) => void): void;
  join(group: Uint8Array): void;
  leave(group: Uint8Array): void;
  send(body: Uint8Array, destination: string): Promise<void>;
  close(): void;
}

const SOL_SOCKET = 1;
const SO_BINDTODEVICE = 25;
const IPPROTO_IPV6 = 41;
const IPV6_UNICAST_HOPS = 16;
const IPV6_MULTICAST_HOPS = 18;
const IPV6_MULTICAST_LOOP = 19;
const IPV6_JOIN_GROUP = 20;
const IPV6_LEAVE_GROUP = 21;
const ICMP6_FILTER = 1;

/** struct ipv6_mreq: the group, then the interface index as a host-order int. */
function mreq(group: Uint8Array, ifindex: number): Buffer {
  const b = Buffer.alloc(20);
  b.set(group, 0);
  if (endianness() === 'LE') b.writeInt32LE(ifindex, 16);
  else b.writeInt32BE(ifindex, 16);
  return b;
}

/** struct icmp6_filter: a set bit blocks that type; everything but `type` is blocked. */
function onlyFilter(type: number): Buffer {
  const words = new Uint32Array(8).fill(0xffffffff);
  words[type >> 5]! &= ~(1 << (type & 31)) >>> 0;
  const b = Buffer.alloc(32);
  for (let i = 0; i < 8; i++) {
    if (endianness() === 'LE') b.writeUInt32LE(words[i]!, i * 4);
    else b.writeUInt32BE(words[i]!, i * 4);
  }
  return b;
}

/**
 * raw-socket, loaded when the first socket opens rather than with the program: its addon is built by its install
 * script, which npm runs only for packages it is told to allow, and a router without --ndp-proxy never needs it.
 */
function rawSocket(): typeof RawSocket {
  try {
    return createRequire(import.meta.url)('raw-socket') as typeof RawSocket;
  } catch (err) {
    throw new Error(
      `the raw-socket module does not load (${(err as Error).message.split('\n')[0]}): its addon is built on ` +
        'install; reinstall sixbed4 with `npm install -g --allow-scripts=$PWD/sixbed4-VERSION.tgz,raw-socket $PWD/sixbed4-VERSION.tgz` (README: Single host), ' +
        'or in a clone `npm rebuild raw-socket`',
    );
  }
}

/**
 * Opens the socket; throws with the reason (no CAP_NET_RAW, no such interface). `accept` is the one ICMPv6 type
 * it receives: NS for the neighbour proxy, RS for a peer's LAN side (agent/peer/lan.ts), which uses the same socket
 * to send its Router Advertisements.
 */
export function openNdSocket(
  ifname: string,
  ifindex: number,
  onError: (err: Error) => void,
  accept = ND_NEIGHBOR_SOLICIT,
): NdSocket {
  const raw = rawSocket();
  const s = raw.createSocket({ protocol: NH_ICMPV6, addressFamily: raw.AddressFamily.IPv6 });
  try {
    const name = Buffer.from(`${ifname}\0`);
    s.setOption(SOL_SOCKET, SO_BINDTODEVICE, name, name.length);
    s.setOption(IPPROTO_IPV6, IPV6_UNICAST_HOPS, 255);
    s.setOption(IPPROTO_IPV6, IPV6_MULTICAST_HOPS, 255);
    s.setOption(IPPROTO_IPV6, IPV6_MULTICAST_LOOP, 0);
    const filter = onlyFilter(accept);
    s.setOption(NH_ICMPV6, ICMP6_FILTER, filter, filter.length);
  } catch (err) {
    s.close();
    throw err;
  }
  s.on('error', onError);
  return {
    onSolicitation(handler) {
      s.on('message', (buf, source) => handler(new Uint8Array(buf.buffer, buf.byteOffset, buf.length), source));
    },
    join(group) {
      const m = mreq(group, ifindex);
      try {
        s.setOption(IPPROTO_IPV6, IPV6_JOIN_GROUP, m, m.length);
      } catch (err) {
        throw new Error(`joining ${formatIPv6(group)} on ${ifname}: ${(err as Error).message}`);
      }
    },
    leave(group) {
      const m = mreq(group, ifindex);
      s.setOption(IPPROTO_IPV6, IPV6_LEAVE_GROUP, m, m.length);
    },
    send(body, destination) {
      // A link-local destination needs its zone; the socket's bound device is that zone.
      const dst =
        /^fe[89ab]/i.test(destination) && !destination.includes('%') ? `${destination}%${ifname}` : destination;
      return new Promise((resolve, reject) => {
        s.send(Buffer.from(body), 0, body.length, dst, (err) => (err ? reject(err) : resolve()));
      });
    },
    close() {
      s.close();
    },
  };
}
