// What a lab peer sends, captured where it leaves the peer's namespace, and the counters the peer logs at its stop:
// for the tests comparing a peer's wire with its engine (test/peer/tun-offload*). The router's side of the same is
// uplink-capture.ts.
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Netns } from '../../lab/netns.js';
import { TOPO } from '../../lab/topology.js';
import { readPcap, startTcpdump } from './pcap.js';

export interface PeerCapture {
  /**
   * Stops the capture once `complete(frames)` holds for what it wrote (tcpdump writes what it has read, -U, and on a
   * busy machine reads later than the peer sent; or after 20 s: then the test says what is missing). Resolves with
   * the frames, and what tcpdump said it dropped (-1: it did not say).
   */
  stop(complete?: (frames: Uint8Array[]) => boolean): Promise<{ frames: Uint8Array[]; dropped: number }>;
}

/**
 * Starts tcpdump on the peer's interface in ns (outgoing frames matching filter, whole) into dir/name.pcap; resolves
 * once it listens. Its buffer holds a whole transfer of some MB: what would overflow a smaller one is lost to the
 * capture, not to the peer.
 */
export async function capturePeer(ns: Netns, dir: string, name: string, filter: string): Promise<PeerCapture> {
  const file = join(dir, `${name}.pcap`);
  const cap = await startTcpdump(ns, TOPO.peerIf, 'out', filter, file);
  const frames = () => {
    try {
      return readPcap(file);
    } catch {
      return []; // not even its header written yet
    }
  };
  let stopped: Promise<{ frames: Uint8Array[]; dropped: number }> | undefined;
  return {
    stop(complete) {
      stopped ??= (async () => {
        for (let i = 0; i < 100 && complete && !complete(frames()); i++) await sleep(200);
        await cap.stop('SIGINT');
        const dropped = /(\d+) packets? dropped by kernel/.exec(cap.output())?.[1];
        return { frames: frames(), dropped: dropped === undefined ? -1 : Number(dropped) };
      })();
      return stopped;
    },
  };
}

/** The counters a peer logs at its stop (agent/peer/running.ts, at --log-level debug), from its output. */
export function peerCounters(output: string): Record<string, number> {
  const line = output.split('\n').find((l) => l.includes('peer counters'));
  if (!line) throw new Error(`no counters in the peer's log:\n${output}`);
  return Object.fromEntries([...line.matchAll(/(\w+)=(\d+)/g)].map((m) => [m[1]!, Number(m[2])]));
}

/** The ones'-complement check of an IPv6 packet's TCP or UDP (no extension headers): 0xffff when it is right. */
export function upperSum(p: Uint8Array): number {
  const v = new DataView(p.buffer, p.byteOffset, p.length);
  const len = v.getUint16(4);
  let s = p[6]! + len;
  for (let i = 8; i < 40; i += 2) s += v.getUint16(i);
  for (let i = 40; i + 1 < 40 + len; i += 2) s += v.getUint16(i);
  if (len % 2) s += p[40 + len - 1]! << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/**
 * A TCP stream's bytes in one direction, from segments seen in any order (retransmissions too): where the SYN puts
 * its first byte, and how many bytes from there on the segments cover without a gap.
 */
export class StreamCover {
  private isn: number | undefined;
  private readonly seen = new Map<number, number>();

  /** An IPv6 packet (no extension headers): taken when it is TCP to dport. */
  add(inner: Uint8Array, dport: number): void {
    if (inner.length < 60 || inner[6] !== 6) return;
    const v = new DataView(inner.buffer, inner.byteOffset, inner.length);
    if (v.getUint16(42) !== dport) return;
    const seq = v.getUint32(44),
      payload = inner.length - 40 - (inner[52]! >> 4) * 4;
    if (inner[53]! & 0x02) this.isn = seq;
    else if (payload > 0) this.seen.set(seq, Math.max(this.seen.get(seq) ?? 0, payload));
  }

  /** Bytes covered from the stream's first on (0 without its SYN). */
  covered(): number {
    if (this.isn === undefined) return 0;
    let covered = 0;
    for (let at = (this.isn + 1) >>> 0, n = this.seen.get(at); n; at = (at + n) >>> 0, n = this.seen.get(at))
      covered += n;
    return covered;
  }
}
