// `sixbed4 status` turns a router's Prometheus text into the summary an admin reads (pure part; the end-to-end
// test runs the command against a running router in a namespace).
import test from 'ava';
import { parsePrometheus, summarize } from '../../agent/service/status.js';

const TEXT = `# HELP sixbed4_router_packets_total Packets forwarded
# TYPE sixbed4_router_packets_total counter
sixbed4_router_packets_total{direction="udp_to_tun",path="slow"} 1200
sixbed4_router_packets_total{direction="tun_to_udp",path="slow"} 1100
sixbed4_router_packets_total{direction="relay",path="slow"} 12
sixbed4_router_bytes_total{direction="udp_to_tun",path="slow"} 1258291
sixbed4_router_bytes_total{direction="tun_to_udp",path="slow"} 2048
sixbed4_router_bytes_total{direction="relay",path="slow"} 900
sixbed4_router_received_packets_total{side="udp"} 1300
sixbed4_router_received_packets_total{side="tun"} 1150
sixbed4_router_dropped_packets_total{reason="short"} 0
sixbed4_router_dropped_packets_total{reason="multicast"} 7
sixbed4_router_dropped_packets_total{reason="spoofed"} 30
sixbed4_router_dropped_packets_total{reason="hop_limit"} 1
sixbed4_router_dropped_packets_total{reason="rate_limited"} 2
sixbed4_router_dropped_packets_total{reason="tx_dropped"} 3
sixbed4_router_dropped_packets_total{reason="bad_length"} 4
sixbed4_router_nd_messages_total{type="rs"} 5
sixbed4_router_nd_messages_total{type="ra"} 4
sixbed4_router_live_peers 2
sixbed4_build_info{version="0.1.0",revision="0123456789abcdef",node="v20.20.2"} 1
sixbed4_process_start_time_seconds 1000
`;

test('the summary: uptime, live peers, packets and bytes per direction, top five drop reasons', (t) => {
  const s = summarize(parsePrometheus(TEXT), '127.0.0.1:9475', 1000 + 3 * 3600 + 62);
  t.is(
    s,
    [
      'sixbed4 router (127.0.0.1:9475): version 0.1.0, revision 0123456789ab',
      'uptime             3h 1m 2s',
      'live peers         2',
      'direction                 packets         bytes',
      'peers -> kernel              1200       1.2 MiB',
      'kernel -> peers              1100       2.0 KiB',
      'peer -> peer                   12         900 B',
      'received           1300 from peers, 1150 from the kernel',
      'dropped            47 (spoofed 30, multicast 7, bad_length 4, tx_dropped 3, rate_limited 2, 1 more reasons)',
      'RS in / RA out     5 / 4',
      '',
    ].join('\n'),
  );
});

test("metrics that are not a router's are refused, saying so", (t) => {
  t.throws(() => summarize(parsePrometheus('up 1\n'), 'x:1', 0), {
    message: /x:1 serves metrics, but not a sixbed4 router's/,
  });
});

test("packets the in-kernel fast path forwarded count with the router's own, per direction", (t) => {
  const fast = `${TEXT}sixbed4_router_packets_total{direction="udp_to_tun",path="fast"} 800\nsixbed4_router_bytes_total{direction="udp_to_tun",path="fast"} 838861\n`;
  const s = summarize(parsePrometheus(fast), 'x:1', 1000);
  t.regex(s, /\npeers -> kernel +2000 +2\.0 MiB\n/);
  t.regex(s, /\nkernel -> peers +1100 +2\.0 KiB\n/);
});
