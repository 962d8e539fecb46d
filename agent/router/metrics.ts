// The router's counters as Prometheus metrics, read at scrape time. The engine
// keeps plain running totals (per-packet calls into a metrics library would
// cost more than forwarding), so each family here is a read-only counter
// object that reports those totals when the registry asks.
import client from 'prom-client';
import { DROP_REASONS, type CountersSnapshot } from './counters.js';
import type { ResponderCounters } from '../ndp/responder.js';
import { buildInfo } from '../../lib/build-info.js';
import type { TaskFailures } from './periodic.js';
import {
  FROM_PEERS_TALLIES,
  FROM_PEERS_VERDICTS,
  TO_PEERS_TALLIES,
  TO_PEERS_VERDICTS,
  type FastPathCounters,
} from '../bpf/programs.js';
import { fastPathFallbacks } from '../bpf/fastpath.js';

type Sample = { value: number; labels: Record<string, string> };

/**
 * fast, when the in-kernel fast path runs, reads its counters: its packets join the same families with
 * path="fast" (the router's own are path="slow"), and why it left the others to the router is a family of its own.
 */
export function routerRegistry(
  readNow: () => Promise<CountersSnapshot>,
  ndp?: () => ResponderCounters,
  fast?: () => FastPathCounters,
  tasks?: TaskFailures,
): client.Registry {
  const registry = new client.Registry();
  // One read serves every family of a scrape (with workers a read is a round trip to each of them,
  // and the families should agree with each other).
  let shared: { at: number; value: Promise<CountersSnapshot> } | undefined;
  const read = () => {
    const now = Date.now();
    if (!shared || now - shared.at > 200) shared = { at: now, value: readNow() };
    return shared.value;
  };
  const register = (name: string, help: string, type: string, values: () => Promise<Sample[]>) => {
    const get = async () => ({ name, help, type, aggregator: 'sum', values: await values() });
    registry.registerMetric({ name, help, type, aggregator: 'sum', get, reset() {} } as unknown as client.Metric);
  };
  const family = (name: string, help: string, samples: (s: CountersSnapshot) => Sample[], type = 'counter') =>
    register(name, help, type, async () => samples(await read()));
  const fastSample = (field: 'packets' | 'bytes'): Sample[] => {
    if (!fast) return [];
    const c = fast();
    return [
      { value: c.fromPeers.fast[field], labels: { direction: 'udp_to_tun', path: 'fast' } },
      { value: c.toPeers.fast[field], labels: { direction: 'tun_to_udp', path: 'fast' } },
      { value: c.fromPeers.relay[field], labels: { direction: 'relay', path: 'fast' } },
    ];
  };
  family(
    'sixbed4_router_packets_total',
    'Packets forwarded, by direction (udp_to_tun: peers to the kernel; tun_to_udp: kernel to peers; relay: peer to peer over UDP) and path (slow: by the router process; fast: in the kernel)',
    (s) => [
      d('udp_to_tun', s.udpToTunPackets),
      d('tun_to_udp', s.tunToUdpPackets),
      d('relay', s.relayPackets),
      ...fastSample('packets'),
    ],
  );
  family('sixbed4_router_bytes_total', 'IPv6 bytes forwarded, by direction and path', (s) => [
    d('udp_to_tun', s.udpToTunBytes),
    d('tun_to_udp', s.tunToUdpBytes),
    d('relay', s.relayBytes),
    ...fastSample('bytes'),
  ]);
  if (fast) {
    /** A counter of the fast path's tallies: one series per value of label, each tally's packets. */
    const tallies = (
      name: string,
      help: string,
      label: string,
      pick: (c: FastPathCounters) => [string, { packets: number }][],
    ) =>
      register(name, help, 'counter', async () =>
        pick(fast()).map(([v, t]) => ({ value: t.packets, labels: { [label]: v } })),
      );
    register(
      'sixbed4_router_fast_path_passed_total',
      'Packets the in-kernel fast path left to the router (or to the rest of the host), by side (udp: from peers; tun: from the kernel) and reason',
      'counter',
      async () => {
        const c = fast();
        return [
          ...FROM_PEERS_VERDICTS.filter((v) => v !== 'fast' && v !== 'relay' && !FROM_PEERS_TALLIES.includes(v)).map(
            (v) => ({ value: c.fromPeers[v].packets, labels: { side: 'udp', reason: v } }),
          ),
          ...TO_PEERS_VERDICTS.filter((v) => v !== 'fast' && !TO_PEERS_TALLIES.includes(v)).map((v) => ({
            value: c.toPeers[v].packets,
            labels: { side: 'tun', reason: v },
          })),
        ];
      },
    );
    register(
      'sixbed4_router_fast_path_direct_packets_total',
      'Of the packets from peers the fast path handed to the kernel (path="fast"), those it sent straight to the egress the kernel\'s route gives (--fast-path-direct)',
      'counter',
      async () => [{ value: fast().fromPeers.direct.packets, labels: {} }],
    );
    tallies(
      'sixbed4_router_fast_path_route_lookups_total',
      "FIB lookups the fast path made, by side (udp: relays' next hops and --fast-path-direct's egress; tun: next hops towards peers): the answers are kept per destination until the host's routes change, so a steady flow costs none",
      'side',
      (c) => [
        ['udp', c.fromPeers.route_lookups],
        ['tun', c.toPeers.route_lookups],
      ],
    );
    register(
      'sixbed4_router_fast_path_route_generations_total',
      "Changes of the host's routes, rules, addresses, links, uplink neighbours or forwarding switches the fast path heard of (rtnetlink), and changes of the refused destinations: each drops every FIB answer it kept",
      'counter',
      async () => [{ value: fast().routeGenerations, labels: {} }],
    );
    tallies(
      'sixbed4_router_fast_path_gro_packets_total',
      'Peers\' TCP the fast path sent through its GRO pair to be merged (stage="sent", part of path="fast"), and the packets that came out of it and were handed on (stage="handed": a merged packet counts once)',
      'stage',
      (c) => [
        ['sent', c.fromPeers.gro_sent],
        ['handed', c.fromPeers.gro_handed],
      ],
    );
    tallies(
      'sixbed4_router_fast_path_xdp_packets_total',
      'Packets from peers the fast path\'s XDP stage decapsulated before GRO (stage="xdp", part of path="fast"), and the packets the tc stage handed on of those after GRO (stage="tc": a merged packet counts once)',
      'stage',
      (c) => [
        ['xdp', c.fromPeers.xdp],
        ['tc', c.fromPeers.xdp_handed],
      ],
    );
    tallies(
      'sixbed4_router_fast_path_merged_segments_total',
      'Segments of merged (GSO/GRO) packets the fast path sent to peers (part of path="fast"), by outer UDP checksum: "right" for each segment, or "none" where the last segment was shorter',
      'checksum',
      (c) => [
        ['right', c.toPeers.gso],
        ['none', c.toPeers.gso_uneven],
      ],
    );
  }
  register(
    'sixbed4_router_fast_path_fallbacks_total',
    "Times the in-kernel fast path fell back, by what: unavailable (auto without it), send_off (relays and kernel -> peers with the router: no IPv4 forwarding on the uplink), to_peers_off (an uplink that leaves checksums to the next hop), gso_refused (the kernel refused a merged packet: to-peers off), uplink_merges (the uplink merges peers' datagrams), no_xdp (the XDP stage asked for, but not attached), no_gro (no GRO pair: peers' TCP forwarded segment by segment); each is logged once",
    'counter',
    async () => [...fastPathFallbacks()].map(([what, value]) => ({ value, labels: { what } })),
  );
  family(
    'sixbed4_router_received_packets_total',
    'Packets received, by side (udp: from peers; tun: from the kernel)',
    (s) => [
      { value: s.udpRxPackets, labels: { side: 'udp' } },
      { value: s.tunRxPackets, labels: { side: 'tun' } },
    ],
  );
  family('sixbed4_router_dropped_packets_total', 'Packets dropped, by reason', (s) =>
    DROP_REASONS.map((r) => ({ value: s.drops[r], labels: { reason: r } })),
  );
  family(
    'sixbed4_router_nd_messages_total',
    'ND and ICMP messages: rs, ns, icmp4_error received; ra, na, icmp_error sent',
    (s) => [
      t('rs', s.routerSolicits),
      t('ns', s.neighborSolicits),
      t('ra', s.routerAdverts),
      t('na', s.neighborAdverts),
      t('icmp_error', s.icmpErrors),
      t('icmp4_error', s.icmp4Errors),
    ],
  );
  family('sixbed4_router_keepalives_total', 'Empty keepalive datagrams received (ignored)', (s) => [
    { value: s.keepalives, labels: {} },
  ]);
  family(
    'sixbed4_router_live_peers',
    'Peers seen in the last two minutes (at the last sweep)',
    (s) => [{ value: s.livePeers, labels: {} }],
    'gauge',
  );
  family(
    'sixbed4_router_live_untracked_total',
    'Packets from peers not tracked live: table full, their IPv4 holds its share (64), or too many new peers at once (200/s)',
    (s) => [{ value: s.liveUntracked, labels: {} }],
  );
  family(
    'sixbed4_router_offload_total',
    "The TUN's offload on the router's path (--tun-offload): tun_gso_packets, super-packets read from the TUN, and tun_gso_segments, the packets cut from them; tun_checksums, checksums the kernel left to the router, completed; tun_gso_bad, super-packets that could not be cut (handed to the engine whole, which drops them by its rules); udp_gso_sends, sends to peers with UDP_SEGMENT, and udp_gso_datagrams, the datagrams they carried; udp_gso_refused, a refusal of one, after which sends go one datagram each; tun_coalesce_packets, super-packets written to the TUN (TCP segments from peers merged, for the kernel to cut again as it forwards them), and tun_coalesce_segments, the segments merged into them; tun_coalesce_refused, super-packets the kernel refused (their segments then written one by one); udp_gro_buffers, buffers the router's sockets received holding several peers' datagrams merged by the kernel (UDP_GRO, on where the fast path does not run), and udp_gro_datagrams, the datagrams cut from them",
    (s) => [
      t('tun_gso_packets', s.tunGsoPackets),
      t('tun_gso_segments', s.tunGsoSegments),
      t('tun_checksums', s.tunChecksumsCompleted),
      t('tun_gso_bad', s.tunGsoBad),
      t('udp_gso_sends', s.udpGsoSends),
      t('udp_gso_datagrams', s.udpGsoDatagrams),
      t('udp_gso_refused', s.udpGsoRefused),
      t('tun_coalesce_packets', s.tunCoalescePackets),
      t('tun_coalesce_segments', s.tunCoalesceSegments),
      t('tun_coalesce_refused', s.tunCoalesceRefused),
      t('udp_gro_buffers', s.udpGroBuffers),
      t('udp_gro_datagrams', s.udpGroDatagrams),
    ],
  );
  if (tasks) {
    register(
      'sixbed4_router_task_failures_total',
      "Failures of the router's periodic tasks (fast-path-seen, local-table, live-report, live-expire, stats), by task: each is logged once, then only counted; forwarding goes on",
      'counter',
      async () => Object.entries(tasks.snapshot()).map(([task, value]) => ({ value, labels: { task } })),
    );
  }
  if (ndp) {
    register(
      'sixbed4_ndp_solicitations_total',
      'Neighbour solicitations seen by the proxy on the uplink, by result',
      'counter',
      async () => {
        const c = ndp();
        return [
          { value: c.answered, labels: { result: 'answered' } },
          { value: c.ignored, labels: { result: 'ignored' } },
        ];
      },
    );
    register(
      'sixbed4_ndp_group_joins_total',
      'Solicited-node group joins by the proxy (each an MLD report on the uplink), by result',
      'counter',
      async () => {
        const c = ndp();
        return [
          { value: c.joins, labels: { result: 'joined' } },
          { value: c.joinErrors, labels: { result: 'failed' } },
        ];
      },
    );
    register(
      'sixbed4_ndp_group_joins_pending',
      'Group joins waiting for their turn (joins are rate limited)',
      'gauge',
      async () => [{ value: ndp().joinsPending, labels: {} }],
    );
    register('sixbed4_ndp_proxied_addresses', 'Addresses the neighbour proxy answers for', 'gauge', async () => [
      { value: ndp().liveAddresses, labels: {} },
    ]);
  }
  new client.Gauge({
    name: 'sixbed4_build_info',
    help: 'Always 1; the labels say which sixbed4 runs: version, git revision, Node.js version.',
    labelNames: ['version', 'revision', 'node'] as const,
    registers: [registry],
  }).set({ ...buildInfo() }, 1);
  client.collectDefaultMetrics({ register: registry, prefix: 'sixbed4_' });
  return registry;
}

const d = (direction: string, value: number): Sample => ({ value, labels: { direction, path: 'slow' } });
const t = (type: string, value: number): Sample => ({ value, labels: { type } });
