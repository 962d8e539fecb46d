// The bench's report: which path a row's packets took comes from the router's metrics, and no row (nor the
// summary) calls packets "fast" that the router process forwarded.
import test from 'ava';
import type { Row } from '../../bench/measure.js';
import { parseRouterCounters } from '../../bench/routerctl.js';
import { fastGoal, pathLabel, stockGoal, summary } from '../../bench/report.js';

test("the router's metrics split per direction and path; the fast path's pass reasons kept by label", (t) => {
  const c = parseRouterCounters(
    new Map([
      ['sixbed4_router_packets_total{direction="udp_to_tun",path="slow"}', 5],
      ['sixbed4_router_packets_total{direction="udp_to_tun",path="fast"}', 100],
      ['sixbed4_router_packets_total{direction="tun_to_udp",path="slow"}', 7],
      ['sixbed4_router_packets_total{direction="relay",path="slow"}', 0],
      ['sixbed4_router_fast_path_passed_total{reason="udp_checksum"}', 3],
      ['sixbed4_router_fast_path_passed_total{side="tun",reason="short"}', 2],
      ['sixbed4_router_dropped_packets_total{reason="spoofed"}', 1],
    ]),
  );
  t.deepEqual(c.forwarded, { udp_to_tun: 105, tun_to_udp: 7, relay: 0 });
  t.deepEqual(c.byPath, { 'udp_to_tun/slow': 5, 'udp_to_tun/fast': 100, 'tun_to_udp/slow': 7, 'relay/slow': 0 });
  t.deepEqual(c.passed, { udp_checksum: 3, 'tun/short': 2 });
  t.deepEqual(c.dropped, { spoofed: 1 });
});

function row(over: Partial<Row> & Pick<Row, 'group' | 'direction' | 'size' | 'pathUsPerPkt'>): Row {
  return {
    name: `${over.group} ${over.direction}`,
    pps: 100_000,
    mbps: 1,
    sentPps: 100_000,
    sent: 1000,
    received: 1000,
    lost: 0,
    lossPct: 0,
    genCpuPct: 100,
    genUsPerPkt: 1,
    sysUsPerPkt: 2,
    otherCpuPct: 0,
    cpu0UsPerPkt: 1,
    cpus: [],
    lossAt: {},
    neighbours: 1,
    windowS: 1,
    ...over,
  };
}

function routerOf(byPath: Record<string, number>): Row['router'] {
  return {
    cpuPct: 1,
    usPerPkt: 0.1,
    userUsPerPkt: 0,
    systemUsPerPkt: 0.1,
    rssMB: 60,
    peakRssMB: 60,
    forwarded: {},
    byPath,
    passed: {},
    dropped: {},
    droppedTotal: 0,
  };
}

test('path label and goal: fast only for packets the fast path counted', (t) => {
  const rows = [
    row({ group: 'ceiling', direction: '4→6', size: 48, pathUsPerPkt: 1.0 }),
    row({ group: 'ceiling', direction: '6→4', size: 48, pathUsPerPkt: 1.0 }),
    row({ group: 'kernel', direction: '4→6', size: 48, pathUsPerPkt: 1.5 }),
    row({ group: 'kernel', direction: '6→4', size: 48, pathUsPerPkt: 1.5 }),
    row({
      group: 'fast',
      direction: '4→6',
      size: 48,
      pathUsPerPkt: 1.6,
      router: routerOf({ 'udp_to_tun/fast': 1000 }),
    }),
    // 6→4 with the flag on, but forwarded by the router process (no fast path in that direction).
    row({
      group: 'fast',
      direction: '6→4',
      size: 48,
      pathUsPerPkt: 3.0,
      router: routerOf({ 'tun_to_udp/slow': 1000, 'udp_to_tun/fast': 3 }),
    }),
  ];
  t.is(pathLabel(rows[2]!), 'kernel');
  t.is(pathLabel(rows[4]!), 'fast');
  t.is(pathLabel(rows[5]!), 'slow');
  t.is(
    pathLabel(
      row({
        group: 'fast',
        direction: '4→6',
        size: 48,
        pathUsPerPkt: 1,
        router: routerOf({ 'udp_to_tun/fast': 999, 'udp_to_tun/slow': 1 }),
      }),
    ),
    'fast 99% slow 1%',
  );
  const goal = fastGoal(rows).join('\n');
  t.regex(goal, /4→6 48 B ×1\.20 met/);
  t.regex(goal, /6→4 48 B ×4\.00 \(not the fast path/);
  const text = summary(rows).join('\n');
  t.regex(text, /6→4 48 B: sixbed4 --fast-path on .*all packets by the router process/);
  t.notRegex(text, /6→4[^\n]*all packets in the kernel/);
});

test('against the stock router: each of ours as a share of the CPU it adds per packet, the goal said per row', (t) => {
  const rows = [
    row({ group: 'ceiling', direction: '4→6', size: 48, pathUsPerPkt: 1.0 }),
    row({ group: 'router', direction: '4→6', size: 48, pathUsPerPkt: 4.0 }),
    row({ group: 'fast', direction: '4→6', size: 48, pathUsPerPkt: 2.0, router: routerOf({ 'udp_to_tun/fast': 9 }) }),
    row({ group: 'stock', direction: '4→6', size: 48, pathUsPerPkt: 5.0 }),
    row({ group: 'ceiling', direction: '6→4', size: 48, pathUsPerPkt: 1.0 }),
    row({ group: 'fast', direction: '6→4', size: 48, pathUsPerPkt: 4.0, router: routerOf({ 'tun_to_udp/fast': 9 }) }),
    row({ group: 'stock', direction: '6→4', size: 48, pathUsPerPkt: 5.0 }),
  ];
  const goal = stockGoal(rows).join('\n');
  // Added over the generator: stock 4 µs; ours 1 µs (fast) and 3 µs (TypeScript) in 4→6, 3 µs (fast) in 6→4.
  t.regex(goal, /4→6 48 B: as installed \(fast path\) ×0\.25 met, TypeScript path ×0\.75/);
  t.regex(goal, /6→4 48 B: as installed \(fast path\) ×0\.75 not met, TypeScript path ×-/);
  t.deepEqual(stockGoal(rows.filter((r) => r.group !== 'stock')), [], 'no stock row, no line');
});
