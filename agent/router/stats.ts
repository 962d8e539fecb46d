// What the router logs about its traffic: a line per interval while packets move, and the totals when it stops.
import type { Logger } from '../../lib/log.js';
import type { FastPathCounters } from '../bpf/programs.js';
import type { CountersSnapshot } from './counters.js';
import { every, type TaskFailures } from './periodic.js';

/**
 * A line every interval while traffic flows, so a long-running router shows
 * what it does without a line per packet: rates since the last line, live
 * peers, drops by reason. Silent when nothing moved.
 */
export function reportStats(
  read: () => Promise<CountersSnapshot>,
  intervalMs: number,
  log: Logger,
  failures: TaskFailures,
): () => void {
  let last: CountersSnapshot | undefined;
  return every(
    'stats',
    intervalMs,
    () =>
      read().then((c) => {
        const p = last;
        last = c;
        if (!p) return;
        const moved = c.udpRxPackets - p.udpRxPackets + c.tunRxPackets - p.tunRxPackets;
        if (moved === 0) return;
        const per = (a: number, b: number) => Math.round(((a - b) * 1000) / intervalMs);
        const drops = Object.entries(c.drops)
          .filter(([k, v]) => v > p.drops[k as keyof typeof c.drops]!)
          .map(([k, v]) => `${k}=${v - p.drops[k as keyof typeof c.drops]!}`)
          .join(' ');
        log.info('forwarding', {
          peersToKernelPps: per(c.udpToTunPackets, p.udpToTunPackets),
          kernelToPeersPps: per(c.tunToUdpPackets, p.tunToUdpPackets),
          relayPps: per(c.relayPackets, p.relayPackets),
          livePeers: c.livePeers,
          drops: drops || 'none',
        });
      }),
    failures,
  );
}

/** The line a stopped router leaves: what it forwarded in all (both paths, when the fast path ran) and dropped. */
export function logStopped(
  log: Logger,
  tun: string,
  handedOver: boolean,
  c: CountersSnapshot,
  fast: FastPathCounters | undefined,
): void {
  log.info(
    handedOver ? `router stopped; tunnel ${tun} handed over to the next router` : 'router stopped; tunnel removed',
    {
      udpToTun: c.udpToTunPackets,
      tunToUdp: c.tunToUdpPackets,
      relayed: c.relayPackets,
      ...(fast
        ? {
            udpToTunFast: fast.fromPeers.fast.packets,
            tunToUdpFast: fast.toPeers.fast.packets,
            relayedFast: fast.fromPeers.relay.packets,
          }
        : {}),
      dropped: Object.values(c.drops).reduce((a, b) => a + b, 0),
    },
  );
}
