// How the stock 6bed4peer reads a Router Advertisement: a line-by-line port of handle_4to6_nd's RA branch in
// test/stock/6bed4/src/6bed4peer.c, quirks included, so that unit tests can put every RA our router sends through
// the rules the peers in the field apply. What the C code does, kept here:
//  - ICMPv6 code 0 and a right checksum; a payload of at least 4 + 16 bytes;
//  - `icmpdata[1] & 0x80 != 0x00` is `icmpdata[1] & 1` in C: the flags byte's lowest (reserved) bit must be clear;
//  - the source must be fe80:: exactly, the destination fe80::/64 (any interface id) or ff02::1;
//  - options from RA body offset 12 while rdofs + 4 < payload length; an option of length 0 drops the whole RA;
//  - a prefix option of a length other than 4, or running past payload length + 4, drops the whole RA;
//  - a prefix option without both L and A is a routable prefix (lengths 16..128, the first 10 kept);
//  - one with L and A of a length other than /114 drops the whole RA; with /114 it is taken, the LAST one winning,
//    whatever its lifetimes: the peer's address is that /114 with lanip 1.
import { upperChecksum } from '../../agent/protocol/checksum.js';

const MAX_ROUTABLE_PREFIXES = 10;

export type StockRead =
  | { taken: true; prefix114: Uint8Array; address: Uint8Array; routes: { prefix: Uint8Array; length: number }[] }
  | { taken: false; why: string };

/** packet: one IPv6 packet (as the router sends it inside a datagram). */
export function stockPeerReadsRA(packet: Uint8Array): StockRead {
  const drop = (why: string): StockRead => ({ taken: false, why });
  if (packet.length < 40 + 4) return drop('shorter than IPv6 + ICMPv6 headers');
  const plen = (packet[4]! << 8) | packet[5]!;
  if (packet[6] !== 58) return drop('not ICMPv6');
  const icmp = packet.subarray(40),
    data = packet.subarray(44);
  if (icmp[0] !== 134) return drop('not a Router Advertisement');
  if (icmp[1] !== 0) return drop('ICMPv6 code not 0');
  if (upperChecksum(packet, 0, 58, 40, plen) !== 0) return drop('bad checksum');
  if (plen < 4 + 16) return drop('strange length');
  if (data[1]! & 1) return drop('flags byte bit 0 set (the C test of the M flag)');
  const src = packet.subarray(8, 24),
    dst = packet.subarray(24, 40);
  if (src[0] !== 0xfe || src[1] !== 0x80 || src.subarray(2).some((b) => b !== 0)) return drop('not from fe80::');
  const llDst = dst[0] === 0xfe && dst[1] === 0x80 && dst.subarray(2, 8).every((b) => b === 0);
  const allNodes = dst[0] === 0xff && dst[1] === 0x02 && dst.subarray(2, 15).every((b) => b === 0) && dst[15] === 1;
  if (!llDst && !allNodes) return drop('destination neither fe80::/64 nor ff02::1');
  let rdofs = 12;
  let dest: Uint8Array | null = null;
  const routes: { prefix: Uint8Array; length: number }[] = [];
  while (rdofs + 4 < plen) {
    const type = data[rdofs]!,
      len = data[rdofs + 1]!;
    if (len === 0) return drop(`zero-length option at ${rdofs}`);
    if (type !== 3) {
      // skipped
    } else if (len !== 4) {
      return drop(`prefix option of length ${len}`);
    } else if (rdofs + (len << 3) > plen + 4) {
      return drop('prefix option past the payload');
    } else if ((data[rdofs + 3]! & 0xc0) !== 0xc0) {
      const pl = data[rdofs + 2]!;
      if (routes.length < MAX_ROUTABLE_PREFIXES && pl <= 128 && pl >= 16)
        routes.push({ prefix: Uint8Array.from(data.subarray(rdofs + 16, rdofs + 32)), length: pl });
    } else if (data[rdofs + 2] !== 114) {
      return drop(`on-link autonomous prefix of length ${data[rdofs + 2]}, not /114`);
    } else {
      dest = data.subarray(rdofs + 16, rdofs + 32);
    }
    rdofs += len << 3;
  }
  if (!dest) return drop('no /114 taken');
  const address = Uint8Array.from(dest);
  address[14] = address[14]! & 0xc0;
  address[15] = 0x01;
  return { taken: true, prefix114: Uint8Array.from(dest), address, routes };
}
