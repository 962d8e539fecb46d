// The comparison behind the documentation's terminal sessions (test/helpers/doc-session.ts): what it lets through
// (column padding, ages, excerpts) and what it catches (a changed value, a missing or an extra line).
import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mismatch, readSession, runSession } from '../helpers/doc-session.js';

const table = 'NAME   PREFIX               NODES READY   AGE\nedge   2001:db8:9:10::/63   2/2           3m12s\n';

test('columns padded differently and ages are the same output', (t) => {
  t.is(mismatch(['NAME PREFIX NODES READY AGE', 'edge 2001:db8:9:10::/63  2/2  40s'], table), null);
  t.is(mismatch(['Last Report: 2026-11-28T09:45:26Z'], 'Last Report:   2026-12-01T00:00:01Z\n'), null, 'timestamps');
  t.truthy(mismatch(['Last Report: 2026-11-28T09:45:26Z'], 'Last Report: never\n'));
});

test('a different value, a missing line or an extra line is caught', (t) => {
  t.regex(mismatch(['NAME PREFIX NODES READY AGE', 'edge 2001:db8:9:10::/63 1/2 40s'], table)!, /1\/2/);
  t.truthy(mismatch(['NAME PREFIX NODES READY AGE'], table), 'a line more than the page shows');
  t.truthy(mismatch(['NAME PREFIX NODES READY AGE', 'edge 2001:db8:9:10::/63 2/2 40s', 'other'], table));
  t.truthy(mismatch([], 'something\n'), 'output where the page shows none');
});

test('`...` skips any lines, at the start, in the middle and at the end', (t) => {
  const out = 'Name: edge\nLabels: <none>\nStatus:\n  Conditions:\n    Type: Ready\n    Status: True\nEvents: <none>\n';
  t.is(mismatch(['Name: edge', '...', 'Type: Ready', 'Status: True', '...'], out), null);
  t.is(mismatch(['...', 'Events: <none>'], out), null);
  t.truthy(mismatch(['...', 'Type: Ready', 'Status: False', '...'], out));
  t.truthy(mismatch(['Type: Ready', '...'], out), 'without a leading `...` the output starts there');
  t.truthy(mismatch(['...', 'Status: True'], out), 'without a trailing `...` the output ends there');
});

test("a page's session is read with its heredoc, run by bash, and a failure it does not show is an error", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sixbed4-doc-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const page = join(dir, 'page.md');
  await writeFile(
    page,
    [
      'Text.',
      '',
      '<!-- session: demo -->',
      '```console',
      "$ cat <<'YAML'",
      'a: 1',
      'YAML',
      'a: 1',
      '$ echo refused >&2; exit 3',
      'refused',
      '$ printf "x  y\\n"',
      'x y',
      '```',
      '',
      '<!-- session: broken -->',
      '```console',
      '$ false',
      '```',
    ].join('\n'),
  );
  const cmds = readSession(page, 'demo');
  t.deepEqual(
    cmds.map((c) => c.script),
    ["cat <<'YAML'\na: 1\nYAML", 'echo refused >&2; exit 3', 'printf "x  y\\n"'],
  );
  const runs = await runSession(cmds, { cwd: dir, env: process.env });
  t.deepEqual(
    runs.map((r) => r.code),
    [0, 3, 0],
  );
  await t.throwsAsync(runSession(readSession(page, 'broken'), { cwd: dir, env: process.env }), {
    message: /page shows no message/,
  });
  t.throws(() => readSession(page, 'absent'), { message: /no session "absent"/ });
});
