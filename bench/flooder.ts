// The flood generator: `node dist/bench/flooder.js '<FloodConfig JSON>'`, run
// in its own namespace. One UDP socket (one datagram source) sends the junk
// catalogue (junk.ts) to the router flat out with sendmmsg until its time or
// packet budget is spent, then prints one JSON line: { sent, elapsedMs, port }.
import { performance } from 'node:perf_hooks';
import { loadNative, newBatch } from '../agent/io/native.js';
import { parseIPv4, parseIPv6, parsePrefix64 } from '../lib/ip.js';
import { junkSet } from './junk.js';

export interface FloodConfig {
  /** Local IPv4 and port: fixed, so the watcher on the native side knows the flooder's own (unspoofed) address. */
  bind: string; localPort: number; to: string; port: number; prefix: string; native: string;
  durationMs: number; maxPackets: number; seed?: number;
}

const cfg = JSON.parse(process.argv[2]!) as FloodConfig;
const io = loadNative();
const sock = io.udpOpen(cfg.bind, cfg.localPort, false);
const BATCH = 256, SLOT = 1400;
const set = junkSet({
  prefix: parsePrefix64(cfg.prefix), own: { ipv4: parseIPv4(cfg.bind), port: sock.port },
  routerV4: parseIPv4(cfg.to), routerPort: cfg.port, native: parseIPv6(cfg.native),
}, 4 * BATCH, cfg.seed ?? 1);
// Four batches of different junk, used in turn: every kind, every variant, at full speed.
const batches = [0, 1, 2, 3].map((k) => {
  const b = newBatch(BATCH, SLOT);
  for (let i = 0; i < BATCH; i++) {
    const d = set[k * BATCH + i]!;
    b.off[i] = i * SLOT; b.data.set(d, i * SLOT); b.len[i] = d.length; b.addr[i] = parseIPv4(cfg.to); b.port[i] = cfg.port;
  }
  return b;
});
process.stdout.write(`flooding ${JSON.stringify({ port: sock.port })}\n`);
const t0 = performance.now();
let sent = 0, k = 0;
while (sent < cfg.maxPackets && performance.now() - t0 < cfg.durationMs) {
  sent += io.udpSend(sock.fd, batches[k++ & 3]!, BATCH);
}
process.stdout.write(JSON.stringify({ sent, elapsedMs: performance.now() - t0, port: sock.port }) + '\n');
