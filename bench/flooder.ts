// The flood generator: `node dist/bench/flooder.js '<FloodConfig JSON>'`, run
// in its own namespace. One UDP socket (one datagram source) sends the junk
// catalogue (junk.ts) to the router flat out with sendmmsg until its time or
// packet budget is spent, then prints one JSON line: { sent, elapsedMs, port }.
// With spoof, every datagram whose IPv6 source is in the /64 gets a fresh
// 6bed4 source (an IPv4 of 100.64.0.0/10 and a port) before each send; an nft
// rule of the flooder's namespace copies that IPv4 and port into
// the outer header (flood.ts, spoofRules), so the router sees a new, valid-looking peer each time,
// spread over all its SO_REUSEPORT sockets, and gives the rest random sources.
import { performance } from 'node:perf_hooks';
import { loadNative, newBatch } from '../agent/io/native.js';
import { parseIPv4, parseIPv6, parsePrefix64 } from '../lib/ip.js';
import { junkSet } from './junk.js';

export interface FloodConfig {
  /** Local IPv4 and port: fixed, so the watcher on the native side knows the flooder's own (unspoofed) address. */
  bind: string;
  localPort: number;
  to: string;
  port: number;
  prefix: string;
  native: string;
  durationMs: number;
  maxPackets: number;
  seed?: number;
  /** Many sources (see above); the namespace must have flood.ts's spoofRules. */
  spoof?: boolean;
  /** Only these kinds of junk.ts (default: all). */
  kinds?: string[];
}

const cfg = JSON.parse(process.argv[2]!) as FloodConfig;
const io = loadNative();
const sock = io.udpOpen(cfg.bind, cfg.localPort, false);
const BATCH = 256,
  SLOT = 1400;
const set = junkSet(
  {
    prefix: parsePrefix64(cfg.prefix),
    own: { ipv4: parseIPv4(cfg.bind), port: sock.port },
    routerV4: parseIPv4(cfg.to),
    routerPort: cfg.port,
    native: parseIPv6(cfg.native),
  },
  4 * BATCH,
  cfg.seed ?? 1,
  cfg.kinds,
);
const prefix = parsePrefix64(cfg.prefix).bytes;
// Four batches of different junk, used in turn: every kind, every variant, at full speed.
const batches = [0, 1, 2, 3].map((k) => {
  const b = newBatch(BATCH, SLOT);
  for (let i = 0; i < BATCH; i++) {
    const d = set[k * BATCH + i]!;
    b.off[i] = i * SLOT;
    b.data.set(d, i * SLOT);
    b.len[i] = d.length;
    b.addr[i] = parseIPv4(cfg.to);
    b.port[i] = cfg.port;
  }
  return b;
});
process.stdout.write(`flooding ${JSON.stringify({ port: sock.port })}\n`);
const t0 = performance.now();
let sent = 0,
  k = 0,
  next = ((cfg.seed ?? 1) - 1) * 0x40000; // flooders with other seeds start elsewhere
while (sent < cfg.maxPackets && performance.now() - t0 < cfg.durationMs) {
  const b = batches[k++ & 3]!;
  if (cfg.spoof) for (let i = 0; i < BATCH; i++) respoof(b.data, b.off[i]!, b.len[i]!);
  sent += io.udpSend(sock.fd, b, BATCH);
}

/** A new 100.64.0.0/10 source (a counter: each one new until 4M) and a random port, for a /64 source. */
function respoof(d: Uint8Array, o: number, len: number): void {
  if (len < 40) return;
  for (let j = 0; j < 8; j++) if (d[o + 8 + j] !== prefix[j]) return;
  const v4 = (0x64400000 + (next++ & 0x3fffff)) >>> 0,
    port = 1024 + Math.floor(Math.random() * 64512);
  d[o + 16] = v4 >>> 24;
  d[o + 17] = (v4 >>> 16) & 0xff;
  d[o + 18] = (v4 >>> 8) & 0xff;
  d[o + 19] = v4 & 0xff;
  d[o + 20] = port >>> 8;
  d[o + 21] = port & 0xff;
  d[o + 22]! &= 0x3f;
}
process.stdout.write(JSON.stringify({ sent, elapsedMs: performance.now() - t0, port: sock.port }) + '\n');
