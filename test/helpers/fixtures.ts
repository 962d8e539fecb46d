// Shared pieces of the end-to-end tests: a reason to skip without root (rootTest), a
// crafted-datagram exchange, and metric reads from a router's endpoint.
import test from 'ava';
import { fileURLToPath } from 'node:url';
import { requireRootReason } from '../../lab/topology.js';
import type { Netns } from '../../lab/netns.js';
import { scrape } from '../../lab/sixbed4.js';

export const skipReason = requireRootReason();
/** Test titles carry the skip reason, so a skipped run says why. */
export const title = (name: string) => (skipReason ? `${name} (skipped: ${skipReason})` : name);
/** A test that needs root: skipped when not root (give it a title() so the run says why). */
export const rootTest = skipReason ? test.skip : test;
/** rootTest for tests that share a lab, one after the other. */
export const rootSerial = skipReason ? test.serial.skip : test.serial;

const EXCHANGE = fileURLToPath(new URL('./udp-exchange.js', import.meta.url));

export interface Exchange {
  local: number;
  replies: { from: string; bytes: Buffer }[];
}

/** Sends raw datagrams from ns to host:port and collects replies for waitMs. */
export async function exchange(
  ns: Netns,
  host: string,
  port: number,
  datagrams: Uint8Array[],
  waitMs = 300,
): Promise<Exchange> {
  const out = await ns.run([
    process.execPath,
    EXCHANGE,
    host,
    String(port),
    String(waitMs),
    ...datagrams.map((d) => Buffer.from(d).toString('hex')),
  ]);
  const r = JSON.parse(out) as { local: number; replies: { from: string; hex: string }[] };
  return { local: r.local, replies: r.replies.map((x) => ({ from: x.from, bytes: Buffer.from(x.hex, 'hex') })) };
}

/** Drop counters by reason, read from the router's metrics endpoint. */
export async function drops(ns: Netns, metrics: string): Promise<Record<string, number>> {
  const m = await scrape(ns, metrics);
  const out: Record<string, number> = {};
  for (const [k, v] of m) {
    const r = /^sixbed4_router_dropped_packets_total\{reason="([^"]+)"\}$/.exec(k);
    if (r) out[r[1]!] = v;
  }
  return out;
}

export function diff(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of Object.keys(after)) if (after[k] !== (before[k] ?? 0)) out[k] = after[k]! - (before[k] ?? 0);
  return out;
}

/**
 * Packets forwarded in direction (udp_to_tun, tun_to_udp or relay), by the router process and the in-kernel fast
 * path together: what the end-to-end assertions count, so that they hold in both of the suite's runs.
 */
export function forwarded(m: Map<string, number>, direction: 'udp_to_tun' | 'tun_to_udp' | 'relay'): number {
  return (['slow', 'fast'] as const).reduce(
    (sum, path) => sum + (m.get(`sixbed4_router_packets_total{direction="${direction}",path="${path}"}`) ?? 0),
    0,
  );
}
