// Text forms of addresses and prefixes, for configuration and logs only:
// the packet path works on bytes and never calls these.
import ipaddr from 'ipaddr.js';
import { InputError } from './errors.js';

/** Parses dotted-quad IPv4 into a uint32 (host order). */
export function parseIPv4(text: string): number {
  if (!ipaddr.IPv4.isValidFourPartDecimal(text)) {
    throw new InputError(`'${text}' is not an IPv4 address (expected four decimal parts, like 198.51.100.1)`);
  }
  const b = ipaddr.IPv4.parse(text).octets;
  return ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;
}

/**
 * Parses IPV4[:PORT] (a router to use, an address to advertise). The port
 * defaults to defaultPort; flag names the option in errors.
 */
export function parseIPv4Port(text: string, flag: string, defaultPort: number): { ipv4: number; port: number } {
  const m = /^([^:]+)(?::(\d+))?$/.exec(text);
  if (!m) throw new InputError(`${flag} '${text}' is not IPV4[:PORT]`);
  const port = m[2] === undefined ? defaultPort : Number(m[2]);
  if (port < 1 || port > 65535) throw new InputError(`${flag} port ${m[2]} is not a UDP port (1..65535)`);
  return { ipv4: parseIPv4(m[1]!), port };
}

export function formatIPv4(v: number): string {
  return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
}

/** Parses an IPv6 address (no prefix length, no zone) into 16 bytes. */
export function parseIPv6(text: string): Uint8Array {
  if (!ipaddr.IPv6.isValid(text) || text.includes('%') || text.includes('/')) {
    throw new InputError(`'${text}' is not an IPv6 address`);
  }
  return Uint8Array.from(ipaddr.IPv6.parse(text).toByteArray());
}

/** RFC 5952 text form of 16 address bytes found at off. */
export function formatIPv6(b: Uint8Array, off = 0): string {
  return ipaddr.fromByteArray(Array.from(b.subarray(off, off + 16))).toString();
}

export interface Prefix {
  readonly bytes: Uint8Array; // 16 bytes, host bits zero
  readonly length: number;
  readonly text: string; // canonical, e.g. 2001:db8:9:10::/64
}

/**
 * Parses `addr/len`. Host bits must be zero: a prefix written with host bits is
 * almost always a typo (an address pasted where the prefix was meant), so it is
 * refused rather than silently masked.
 */
export function parsePrefix(text: string, what = 'prefix'): Prefix {
  const slash = text.indexOf('/');
  if (slash < 0) throw new InputError(`${what} '${text}' has no length: write it like 2001:db8:9:10::/64`);
  const addrText = text.slice(0, slash);
  const lenText = text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(lenText) || Number(lenText) > 128) {
    throw new InputError(`${what} '${text}' has a bad length '${lenText}' (0..128)`);
  }
  const length = Number(lenText);
  const bytes = parseIPv6(addrText);
  for (let bit = length; bit < 128; bit++) {
    if (bytes[bit >> 3]! & (0x80 >> (bit & 7))) {
      const masked = maskBytes(bytes, length);
      throw new InputError(
        `${what} '${text}' has host bits set after /${length}; did you mean ${formatIPv6(masked)}/${length}?`,
      );
    }
  }
  return { bytes, length, text: `${formatIPv6(bytes)}/${length}` };
}

/** A prefix that must be exactly a /64 (what a 6bed4 router serves). */
export function parsePrefix64(text: string): Prefix {
  const p = parsePrefix(text);
  if (p.length !== 64) {
    throw new InputError(`prefix '${text}' is a /${p.length}; a 6bed4 router serves exactly one /64`);
  }
  return p;
}

export function maskBytes(bytes: Uint8Array, length: number): Uint8Array {
  const out = Uint8Array.from(bytes);
  for (let bit = length; bit < 128; bit++) out[bit >> 3]! &= ~(0x80 >> (bit & 7));
  return out;
}

/** True when the 16 bytes at off lie inside prefix. */
export function inPrefix(p: Prefix, b: Uint8Array, off = 0): boolean {
  const full = p.length >> 3;
  for (let i = 0; i < full; i++) if (b[off + i] !== p.bytes[i]) return false;
  const rest = p.length & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (b[off + full]! & mask) === p.bytes[full];
}
