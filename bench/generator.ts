// A load generator, run as its own process inside a namespace (and pinned to
// a CPU by the caller): `node dist/bench/generator.js '<GenConfig JSON>'`.
//
// It uses the same native batched I/O as the router (sendmmsg for UDP, one
// native call per 256 TUN writes), so it is at least as fast per packet as
// the thing it loads. Modes: udp (4→6 from sockets), tun (IPv6 into the
// native side), tun4 (4→6 from many peers at once). It prints `sending {...}` once the first batch went
// out, sends flat out in a synchronous loop until its time or packet budget
// is spent (no event loop turns: nothing else runs in this process), then
// prints one JSON line with what it sent. SIGTERM ends it at once.
import { execFileSync } from 'node:child_process';
import { performance } from 'node:perf_hooks';

import { loadNative, newBatch, MAX_BATCH, type Batch } from '../agent/io/native.js';
import { makeAddress } from '../agent/protocol/address.js';
import { parseIPv4, parseIPv6, parsePrefix64 } from '../lib/ip.js';
import { systemTool } from '../agent/host/tools.js';
import { fillBatch, fillBatch4, IPV4_UDP, PeerCycler, PeerSourceCycler, peerPlan } from './packets.js';

export type GenConfig = UdpGenConfig | TunGenConfig | Tun4GenConfig;
/** What a measurement asks for; it adds the time and packet budget. */
export type GenSpec =
  Omit<UdpGenConfig, keyof Budget> | Omit<TunGenConfig, keyof Budget> | Omit<Tun4GenConfig, keyof Budget>;

interface Budget {
  durationMs: number;
  /** Hard cap on packets, whatever the duration. */
  maxPackets: number;
}

interface Common extends Budget {
  /** IPv6 packet size in bytes (UDP mode: the datagram payload). */
  size: number;
}

/** 4→6: UDP/IPv4 datagrams, each carrying an IPv6 packet from this socket's own 6bed4 address. */
export interface UdpGenConfig extends Common {
  mode: 'udp';
  /** Local IPv4 to bind (ephemeral port). */
  bind: string;
  to: string;
  port: number;
  /** The /64 whose 6bed4 address for bind:port is the inner source. */
  prefix: string;
  /** Inner IPv6 destination. */
  innerDst: string;
  /** Sockets (distinct source ports, so distinct flows for SO_REUSEPORT to spread). Default 1. */
  flows?: number;
}

/** 6→4 (and the IPv6 kernel reference): IPv6 packets written into a TUN device of this namespace. */
export interface TunGenConfig extends Common {
  mode: 'tun';
  tun: string;
  src: string;
  /** Either a fixed destination... */
  dst?: string;
  /** ...or 6bed4 addresses of `count` peers (IPv4 from firstIPv4 up, ports from 1024) under prefix. */
  peers?: { prefix: string; firstIPv4: string; count: number };
}

/**
 * 4→6 from many peers: IPv4/UDP datagrams written into a TUN device of this
 * namespace (which forwards them), from `count` peers (IPv4 from firstIPv4
 * up, ports from 1024), each carrying IPv6 from that peer's 6bed4 address.
 * One socket per peer would not scale to 100,000.
 */
export interface Tun4GenConfig extends Common {
  mode: 'tun4';
  tun: string;
  to: string;
  port: number;
  prefix: string;
  innerDst: string;
  peers: { firstIPv4: string; count: number };
}

export interface GenResult {
  sent: number;
  elapsedMs: number;
  calls: number;
}

/** Prepares the sockets or TUN device and returns "send up to n packets, say how many went". */
function prepare(cfg: GenConfig): { sendBatch: (n: number) => number; info: Record<string, unknown> } {
  const io = loadNative();
  if (cfg.mode === 'udp') {
    // One socket and one batch per flow, used in turn, a whole batch each.
    const prefix = parsePrefix64(cfg.prefix).bytes,
      bind = parseIPv4(cfg.bind),
      dst = parseIPv6(cfg.innerDst);
    const flows: Array<{ fd: number; b: Batch }> = [];
    for (let i = 0; i < (cfg.flows ?? 1); i++) {
      const { fd, port } = io.udpOpen(cfg.bind, 0, false);
      const b = newBatch(MAX_BATCH, cfg.size);
      fillBatch(b, cfg.size, makeAddress(prefix, bind, port, 1), dst);
      b.addr.fill(parseIPv4(cfg.to));
      b.port.fill(cfg.port);
      flows.push({ fd, b });
    }
    let next = 0;
    return {
      sendBatch: (n) => {
        const f = flows[next]!;
        if (++next === flows.length) next = 0;
        return io.udpSend(f.fd, f.b, n);
      },
      info: { flows: flows.length },
    };
  }
  const { fd, name } = io.tunOpen(cfg.tun, false);
  // Not persistent: the device disappears with this process.
  execFileSync(systemTool('ip'), ['link', 'set', 'dev', name, 'up'], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (cfg.mode === 'tun4') {
    const b = newBatch(MAX_BATCH, IPV4_UDP + cfg.size);
    const prefix = parsePrefix64(cfg.prefix).bytes;
    fillBatch4(b, cfg.size, parseIPv4(cfg.to), cfg.port, parseIPv6(cfg.innerDst), prefix);
    const cycler = new PeerSourceCycler(b, prefix, peerPlan(parseIPv4(cfg.peers.firstIPv4), cfg.peers.count));
    return {
      sendBatch: (n) => {
        cycler.next(n);
        return io.tunWrite(fd, b, n);
      },
      info: { tun: name, peers: cfg.peers.count },
    };
  }
  const b = newBatch(MAX_BATCH, cfg.size);
  const src = parseIPv6(cfg.src);
  if (cfg.peers) {
    const prefix = parsePrefix64(cfg.peers.prefix).bytes,
      first = parseIPv4(cfg.peers.firstIPv4);
    fillBatch(b, cfg.size, src, makeAddress(prefix, first, 1024, 1));
    const cycler = new PeerCycler(b, prefix, peerPlan(first, cfg.peers.count));
    return {
      sendBatch: (n) => {
        cycler.next(n);
        return io.tunWrite(fd, b, n);
      },
      info: { tun: name, peers: cfg.peers.count },
    };
  }
  if (!cfg.dst) throw new Error('tun generator needs dst or peers');
  fillBatch(b, cfg.size, src, parseIPv6(cfg.dst));
  return { sendBatch: (n) => io.tunWrite(fd, b, n), info: { tun: name } };
}

function run(cfg: GenConfig): GenResult {
  const { sendBatch, info } = prepare(cfg);
  const start = performance.now();
  const end = start + cfg.durationMs;
  let sent = 0,
    calls = 0;
  for (;;) {
    const n = Math.min(MAX_BATCH, cfg.maxPackets - sent);
    if (n <= 0) break;
    // Fewer than n only when a socket buffer is full: just carry on.
    sent += sendBatch(n);
    // Pipes are synchronous on Linux: the line is out before we carry on.
    if (calls++ === 0) process.stdout.write(`sending ${JSON.stringify(info)}\n`);
    if (performance.now() >= end) break;
  }
  return { sent, elapsedMs: performance.now() - start, calls };
}

const arg = process.argv[2];
if (!arg) {
  process.stderr.write('usage: generator.js <GenConfig JSON>\n');
  process.exit(2);
}
try {
  const result = run(JSON.parse(arg) as GenConfig);
  process.stdout.write(`result ${JSON.stringify(result)}\n`);
} catch (err) {
  process.stderr.write(`generator: ${(err as Error).message}\n`);
  process.exit(1);
}
