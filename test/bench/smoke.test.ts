// `npm run bench` must keep working: a short run of a few groups, as root,
// measures something in every row, writes its JSON and leaves no namespace.
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execCommand } from '../../agent/host/command.js';
import { listNamespaces } from '../../lab/netns.js';
import { skipReason, title } from '../helpers/fixtures.js';
import type { Row } from '../../bench/measure.js';
import { fastShare, pathSplit } from '../../bench/report.js';

const RUN = fileURLToPath(new URL('../../bench/run.js', import.meta.url));

// Serial: both runs build the same namespaces.
(skipReason ? test.skip : test.serial)(
  title('bench smoke: ceiling, kernel and router rows at 48 bytes, JSON written, namespaces gone'),
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'sixbed4-bench-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const json = join(dir, 'out.json');
    const before = new Set(await listNamespaces());
    const r = await execCommand(
      [
        process.execPath,
        RUN,
        '--duration',
        '0.3',
        '--only',
        'ceiling,kernel,router',
        '--sizes',
        '48',
        '--retries',
        '0',
        '--json',
        json,
      ],
      { timeoutMs: 120_000 },
    );
    t.is(r.code, 0, r.stdout + r.stderr);
    t.regex(r.stdout, /^host\s+.*kernel .*node v/m);
    t.regex(r.stdout, /^measurement\s+size\s+pps/m);
    const out = JSON.parse(readFileSync(json, 'utf8')) as { setup: { cores: number }; rows: Row[] };
    t.deepEqual(
      out.rows.map((x) => x.group),
      ['ceiling', 'ceiling', 'kernel', 'kernel', 'router', 'router'],
    );
    for (const row of out.rows) {
      t.falsy(row.error, row.name);
      t.true(row.pps > 0, `${row.name}: ${row.pps} pps`);
      t.true(
        row.received > 0 && row.received <= row.sent + 10,
        `${row.name}: sent ${row.sent}, received ${row.received}`,
      );
    }
    for (const row of out.rows.filter((x) => x.group === 'router')) {
      t.true(
        row.router!.cpuPct >= 0 && row.router!.rssMB > 10,
        `${row.name}: router figures ${JSON.stringify(row.router)}`,
      );
    }
    const leaked = (await listNamespaces()).filter((n) => n.startsWith('s4-bench-') && !before.has(n));
    t.deepEqual(leaked, []);
  },
);

(skipReason ? test.skip : test.serial)(
  title('bench smoke: fast rows say which path each direction took, BPF run time read, bpf_stats_enabled restored'),
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'sixbed4-bench-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const json = join(dir, 'out.json');
    const before = new Set(await listNamespaces());
    const stats = () => readFileSync('/proc/sys/kernel/bpf_stats_enabled', 'utf8').trim();
    const statsBefore = stats();
    const r = await execCommand(
      [process.execPath, RUN, '--duration', '0.3', '--only', 'fast', '--sizes', '48', '--retries', '0', '--json', json],
      { timeoutMs: 120_000 },
    );
    t.is(r.code, 0, r.stdout + r.stderr);
    t.regex(r.stdout, /^csum\s+tx checksum offload .* off for every row/m);
    const out = JSON.parse(readFileSync(json, 'utf8')) as { rows: Row[] };
    t.deepEqual(
      out.rows.map((x) => `${x.group} ${x.direction}`),
      ['fast 4→6', 'fast 6→4'],
    );
    if (out.rows.every((x) => x.error?.startsWith('not available'))) {
      t.log(`fast path not available here: ${out.rows[0]!.error}`);
    } else {
      t.regex(r.stdout, /^fast path rows/m);
      for (const row of out.rows) {
        t.falsy(row.error, row.name);
        t.true(row.pps > 0, `${row.name}: ${row.pps} pps`);
        // Every packet the router forwarded in the row's direction is counted on one path or the other.
        const split = pathSplit(row)!;
        t.true(split.fast + split.slow > 0, `${row.name}: ${JSON.stringify(row.router?.byPath)}`);
        t.true(
          split.fast + split.slow <= row.sent + 10,
          `${row.name}: forwarded ${split.fast + split.slow} of ${row.sent} sent`,
        );
        t.truthy(row.bpf, `${row.name}: no BPF statistics`);
      }
      // 4→6 has a fast path and the generator sends full checksums: (nearly) every packet takes it.
      const up = out.rows[0]!;
      t.true(
        fastShare(up) > 0.99,
        `${up.name}: ${JSON.stringify(up.router?.byPath)} passed ${JSON.stringify(up.router?.passed)}`,
      );
      const decap = up.bpf!.find((b) => b.runs > 0);
      t.truthy(decap, JSON.stringify(up.bpf));
      t.true(decap!.nsPerRun > 0 && /ingress/.test(decap!.where), JSON.stringify(decap));
    }
    t.is(stats(), statsBefore, 'kernel.bpf_stats_enabled is back to what it was');
    const leaked = (await listNamespaces()).filter((n) => n.startsWith('s4-bench-') && !before.has(n));
    t.deepEqual(leaked, []);
  },
);
