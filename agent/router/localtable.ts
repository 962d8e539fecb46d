// The host's IPv4 local routing table (`ip -4 route show table local`): every
// address the kernel delivers to this host itself (local) and its broadcast
// addresses. The router refuses to relay or forward to any of them
// (refused.ts): a peer could otherwise make it talk, with the host's own
// source address, to services listening on another interface.
import { ipJson } from '../host/ip.js';
import type { IPv4Range } from './refused.js';

interface LocalRoute {
  type?: string;
  dst?: string;
}

/** Pure: the ranges in `ip -j -4 route show table local` output (local, broadcast, anycast, multicast entries). */
export function parseLocalTable(routes: readonly LocalRoute[]): IPv4Range[] {
  const out: IPv4Range[] = [];
  for (const r of routes) {
    if (!r.dst || !['local', 'broadcast', 'anycast', 'multicast'].includes(r.type ?? 'local')) continue;
    const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\/(\d{1,2}))?$/.exec(r.dst);
    if (!m) continue;
    const b = m.slice(1, 5).map(Number);
    const len = m[5] === undefined ? 32 : Number(m[5]);
    if (b.some((x) => x > 255) || len > 32) continue;
    const addr = ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;
    const size = 2 ** (32 - len);
    const start = Math.floor(addr / size) * size;
    out.push({ start, end: start + size - 1 });
  }
  return out.sort((x, y) => x.start - y.start || x.end - y.end);
}

/** Reads the local table now. */
export async function readLocalTable(): Promise<IPv4Range[]> {
  return parseLocalTable(await ipJson<LocalRoute[]>('-4', 'route', 'show', 'table', 'local'));
}

export function sameRanges(a: readonly IPv4Range[], b: readonly IPv4Range[]): boolean {
  return a.length === b.length && a.every((r, i) => r.start === b[i]!.start && r.end === b[i]!.end);
}
