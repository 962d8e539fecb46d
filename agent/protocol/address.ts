// The 6bed4 address: /64 prefix, then the peer's public IPv4 and UDP port as
// the router saw them, then a 14-bit lanip. The two low bits of the first IPv4
// byte would land on the U/L and I/G bits of the interface identifier, so they
// move to the top of byte 14 (exactly as the stock C code does).
//
//  bytes 0..7  prefix | 8..11 IPv4 (byte 8 & 0xfc) | 12..13 port | 14: moved bits<<6 | lanip>>8 | 15: lanip & 0xff
//
// All functions work on a byte array and an offset, so the packet path can use
// them on addresses in place without allocating.

/** Writes the 6bed4 address for ipv4:port/lanip under the /64 in prefix[0..8). */
export function writeAddress(
  out: Uint8Array,
  off: number,
  prefix: Uint8Array,
  ipv4: number,
  port: number,
  lanip: number,
): void {
  for (let i = 0; i < 8; i++) out[off + i] = prefix[i]!;
  const b0 = ipv4 >>> 24;
  out[off + 8] = b0 & 0xfc;
  out[off + 9] = (ipv4 >>> 16) & 0xff;
  out[off + 10] = (ipv4 >>> 8) & 0xff;
  out[off + 11] = ipv4 & 0xff;
  out[off + 12] = port >>> 8;
  out[off + 13] = port & 0xff;
  out[off + 14] = ((b0 & 0x03) << 6) | ((lanip >>> 8) & 0x3f);
  out[off + 15] = lanip & 0xff;
}

export function makeAddress(prefix: Uint8Array, ipv4: number, port: number, lanip: number): Uint8Array {
  const out = new Uint8Array(16);
  writeAddress(out, 0, prefix, ipv4, port, lanip);
  return out;
}

/** The IPv4 address embedded in the address at off (uint32, host order). */
export function addressIPv4(b: Uint8Array, off: number): number {
  return (
    (((b[off + 8]! & 0xfc) | (b[off + 14]! >>> 6)) * 0x1000000 +
      ((b[off + 9]! << 16) | (b[off + 10]! << 8) | b[off + 11]!)) >>>
    0
  );
}

/** The UDP port word embedded in the address at off; 0 means "not a peer". */
export function addressPort(b: Uint8Array, off: number): number {
  return (b[off + 12]! << 8) | b[off + 13]!;
}

export function addressLanip(b: Uint8Array, off: number): number {
  return ((b[off + 14]! & 0x3f) << 8) | b[off + 15]!;
}

/**
 * The 6-byte link-layer form used in ND options: port little-endian, then the
 * IPv4 bytes (router 25790 on 145.136.0.1 → be:64:91:88:00:01).
 */
export function writeLinkLayer(out: Uint8Array, off: number, ipv4: number, port: number): void {
  out[off] = port & 0xff;
  out[off + 1] = port >>> 8;
  out[off + 2] = ipv4 >>> 24;
  out[off + 3] = (ipv4 >>> 16) & 0xff;
  out[off + 4] = (ipv4 >>> 8) & 0xff;
  out[off + 5] = ipv4 & 0xff;
}

export function linkLayer(ipv4: number, port: number): Uint8Array {
  const out = new Uint8Array(6);
  writeLinkLayer(out, 0, ipv4, port);
  return out;
}
