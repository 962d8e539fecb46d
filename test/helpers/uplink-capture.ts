// What the lab's router sends from its port on its uplink, captured while a test's traffic runs, with the change of
// the router's metrics over it; and what the engine would send for one packet from the kernel. Shared by the tests
// that compare the wire with the engine datagram by datagram (test/bpf/to-peers-gso: the fast path's merged packets;
// test/router/tun-offload: the router's own path with the TUN offload).
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { TOPO, type Topology } from '../../lab/topology.js';
import { scrape } from '../../lab/sixbed4.js';
import { parseIPv4 } from '../../lib/ip.js';
import type { Engine } from '../../agent/router/engine.js';
import { ETH } from './frames.js';
import { readPcap, startTcpdump } from './pcap.js';

export interface Captured {
  frames: Uint8Array[];
  /** each of the metrics asked for: its change over fn */
  d: Record<string, number>;
  /** what tcpdump said it dropped (-1: it did not say) */
  captureDropped: number;
}

/**
 * Runs fn while tcpdump captures the router's datagrams (UDP from `port`) leaving the uplink into dir/name.pcap.
 * `keys` are the metrics to difference; `sent` the one that counts the datagrams the capture must hold: tcpdump
 * writes what it has read (-U), and on a busy machine it reads later than the router sends, so it is stopped only
 * once it wrote that many (or after 20 s: then the test says how many are missing). Its buffer holds a whole
 * transfer (about 6 MB on the wire): what would overflow a smaller one is lost to the capture, not to the peer.
 */
export async function captureUplink(
  o: { topo: Topology; dir: string; metrics: string; port: number; keys: readonly string[]; sent: string },
  name: string,
  fn: () => Promise<void>,
): Promise<Captured> {
  const file = join(o.dir, `${name}.pcap`);
  const cap = await startTcpdump(o.topo.router, TOPO.routerWanIf, 'out', `udp src port ${o.port}`, file);
  const before = await scrape(o.topo.router, o.metrics);
  await fn();
  const after = await scrape(o.topo.router, o.metrics);
  const d = Object.fromEntries(o.keys.map((k) => [k, (after.get(k) ?? 0) - (before.get(k) ?? 0)]));
  const ours = () => {
    try {
      return readPcap(file).filter(
        (f) => f.length > ETH + 20 && new DataView(f.buffer).getUint32(ETH + 12) === parseIPv4(TOPO.routerV4),
      ).length;
    } catch {
      return 0; // not even its header written yet
    }
  };
  for (let i = 0; i < 100 && ours() < (d[o.sent] ?? 0); i++) await sleep(200);
  await cap.stop('SIGINT');
  const dropped = /(\d+) packets? dropped by kernel/.exec(cap.output())?.[1];
  return { frames: readPcap(file), d, captureDropped: dropped === undefined ? -1 : Number(dropped) };
}

/** What the engine sends for the IPv6 packet p from the kernel: the datagram and where to, or null. */
export function engineSends(engine: Engine, p: Uint8Array): { bytes: Uint8Array; v4: number; port: number } | null {
  const rx = engine.tunRx;
  rx.off[0] = 0;
  rx.len[0] = p.length;
  rx.data.set(p, 0);
  engine.fromKernel(1, 1000);
  if (!engine.nToPeers) return null;
  const o = engine.toPeers;
  return {
    bytes: Uint8Array.from(o.data.subarray(o.off[0]!, o.off[0]! + o.len[0]!)),
    v4: o.addr[0]!,
    port: o.port[0]!,
  };
}

/** Python: bursts with UDP_SEGMENT, one send of each size (argv 2..) in segments of 1000 to [argv 1]:9. */
export const UDP_GSO = `
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(17, 103, 1000)  # SOL_UDP, UDP_SEGMENT
for n in sys.argv[2:]:
    s.sendto(bytes((i * 7) & 255 for i in range(int(n))), (sys.argv[1], 9))
`;
