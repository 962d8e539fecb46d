// `npm run bench` must keep working: a short run of a few groups, as root,
// measures something in every row, writes its JSON and leaves no namespace.
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execCommand } from '../../agent/host/command.js';
import { listNamespaces } from '../../agent/lab/netns.js';
import { skipReason, title } from '../helpers/fixtures.js';
import type { Row } from '../../bench/measure.js';

const RUN = fileURLToPath(new URL('../../bench/run.js', import.meta.url));

(skipReason ? test.skip : test)(title('bench smoke: ceiling, kernel and router rows at 48 bytes, JSON written, namespaces gone'), async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sixbed4-bench-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const json = join(dir, 'out.json');
  const before = new Set(await listNamespaces());
  const r = await execCommand([process.execPath, RUN, '--duration', '0.3', '--only', 'ceiling,kernel,router', '--sizes', '48', '--retries', '0', '--json', json], { timeoutMs: 120_000 });
  t.is(r.code, 0, r.stdout + r.stderr);
  t.regex(r.stdout, /^host\s+.*kernel .*node v/m);
  t.regex(r.stdout, /^measurement\s+size\s+pps/m);
  const out = JSON.parse(readFileSync(json, 'utf8')) as { setup: { cores: number }; rows: Row[] };
  t.deepEqual(out.rows.map((x) => x.group), ['ceiling', 'ceiling', 'kernel', 'kernel', 'router', 'router']);
  for (const row of out.rows) {
    t.falsy(row.error, row.name);
    t.true(row.pps > 0, `${row.name}: ${row.pps} pps`);
    t.true(row.received > 0 && row.received <= row.sent + 10, `${row.name}: sent ${row.sent}, received ${row.received}`);
  }
  for (const row of out.rows.filter((x) => x.group === 'router')) {
    t.true(row.router!.cpuPct >= 0 && row.router!.rssMB > 10, `${row.name}: router figures ${JSON.stringify(row.router)}`);
  }
  const leaked = (await listNamespaces()).filter((n) => n.startsWith('s4-bench-') && !before.has(n));
  t.deepEqual(leaked, []);
});
