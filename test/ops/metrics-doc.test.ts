// docs/operations.md's metrics list is what the code registers: it fails when a family, a label or a help text
// changed without the list (rewrite it with `node dist/test/ops/metrics-doc.js --write`).
import test from 'ava';
import { readFile } from 'node:fs/promises';
import { DOC, renderDoc } from './metrics-doc.js';

test('the metrics list of docs/operations.md is current', async (t) => {
  const doc = await readFile(DOC, 'utf8');
  const want = await renderDoc(doc);
  t.true(
    doc === want,
    'docs/operations.md lists other metrics than the code registers: run npm run build:ts && node dist/test/ops/metrics-doc.js --write',
  );
});

test('the list has every family of the router, the agent and the operator, with their labels', async (t) => {
  const doc = await readFile(DOC, 'utf8');
  for (const [name, labels] of [
    ['sixbed4_router_packets_total', '`direction`, `path`, `prefix` (agent)'],
    ['sixbed4_router_fast_path_passed_total', '`prefix` (agent), `reason`, `side`'],
    ['sixbed4_agent_fast_path', '`mode`, `prefix`'],
    ['sixbed4_cni_add_seconds', '`result`'],
    ['sixbed4_operator_prefix_degraded', '`prefix`, `reason`'],
    ['sixbed4_operator_agent_report_age_seconds', '`node`, `prefix`'],
  ] as const)
    t.true(
      doc.includes(`| \`${name}\` | `) &&
        doc.split('\n').some((l) => l.startsWith(`| \`${name}\``) && l.includes(`| ${labels} |`)),
      `${name}: ${labels}`,
    );
});
