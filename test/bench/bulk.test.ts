// The bench's bulk TCP report (bench/bulk.ts): which rows the peer, not the router, limited, and the goal lines,
// which hold the default mode with the BPF peer against kernel forwarding.
import test from 'ava';
import { bulkLines, type BulkRow } from '../../bench/bulk.js';

const kernel = (dir: 'down' | 'up', gbps: number): BulkRow => ({
  name: `kernel ${dir}`,
  path: 'kernel',
  dir,
  gbps,
  retransmits: 0,
  cpuPctPerGbps: 15,
  otherPct: 0,
  peerDrops: 0,
  routerDrops: 0,
});
const row = (o: Partial<BulkRow> & Pick<BulkRow, 'path' | 'dir' | 'gbps'>): BulkRow => ({
  name: `${o.path} ${o.peer} ${o.dir}`,
  peer: 'kernel',
  retransmits: 0,
  cpuPctPerGbps: 20,
  otherPct: 0,
  fast: 0,
  slow: 0,
  peerDrops: 0,
  routerDrops: 0,
  mergedRight: 0,
  mergedNone: 0,
  ...o,
});

test("peer-bound rows are named (a peer at ≥ 90% of a CPU, or dropping more than the router); goals from the BPF peer's default-mode rows", (t) => {
  const lines = bulkLines([
    kernel('down', 2),
    kernel('up', 3),
    row({ path: 'auto', dir: 'down', gbps: 1.5, fast: 990, slow: 10, mergedRight: 900, mergedNone: 6 }),
    row({ path: 'auto', dir: 'up', gbps: 1, fast: 1000, slow: 0 }),
    row({
      path: 'auto',
      peer: 'sixbed4',
      dir: 'up',
      gbps: 0.8,
      peerCpuPct: 40,
      peerDrops: 500,
      routerDrops: 0,
      fast: 10,
      slow: 0,
    }),
    row({ path: 'off', peer: 'sixbed4', dir: 'down', gbps: 0.9, peerCpuPct: 95, slow: 10 }),
    row({ path: 'off', peer: 'kernel', dir: 'down', gbps: 0.9, routerDrops: 50, slow: 10 }),
  ]);
  const text = lines.join('\n');
  t.regex(text, /peer-bound .*: auto sixbed4 up; off sixbed4 down$/m);
  t.regex(text, /download with the default mode \(BPF peer\) ≥ 50% of kernel forwarding: 75% met/);
  t.regex(text, /upload with the default mode \(BPF peer\) ≥ 50% of kernel forwarding: 33% not met/);
  t.regex(
    text,
    /share of a download's packets on the fast path ≥ 99%: 99\.0% met \(990 fast, 10 through the router; 906 as segments of merged packets, 6 of them without an outer UDP checksum\)/,
  );
  // 990 of 1000 is 99.0%; a share with any slow packet is never printed as 100%
  const near = bulkLines([row({ path: 'auto', dir: 'down', gbps: 1, fast: 99_999, slow: 1 })]).join('\n');
  t.regex(near, / 99\.9% /);
});
