// The chart's alerts under `promtool test rules`: every alert of charts/sixbed4/files/prometheus-rules.yaml has a
// case in rules.test.yaml that fires it and one where it must stay quiet, and promtool passes them all. The chart
// renders the same rules into its PrometheusRule (checked here too, with helm).
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import YAML from 'yaml';
import { PROMTOOL, RULES, prometheusSkipReason } from './tools.js';
import { controlPlaneBinaries, repoRoot } from '../k8s/controlplane.js';

const run = promisify(execFile);
const why = prometheusSkipReason();
const title = (s: string) => (why ? `${s} (skipped: ${why})` : s);
const CASES = fileURLToPath(new URL('../../../test/ops/rules.test.yaml', import.meta.url));

interface Rule {
  alert?: string;
  expr: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface RuleFile {
  groups: { name: string; rules: Rule[] }[];
}
interface Cases {
  tests: { name: string; alert_rule_test?: { alertname: string; exp_alerts: unknown[] }[] }[];
}

const alertsOf = (f: RuleFile) => f.groups.flatMap((g) => g.rules.map((r) => r.alert).filter((a): a is string => !!a));

test('every alert has a summary, a description and a severity, and a case that fires it and one that stays quiet', async (t) => {
  const rules = YAML.parse(await readFile(RULES, 'utf8')) as RuleFile;
  const cases = YAML.parse(await readFile(CASES, 'utf8')) as Cases;
  const alerts = alertsOf(rules);
  t.true(alerts.length >= 9, `${alerts.length} alerts`);
  for (const g of rules.groups)
    for (const r of g.rules) {
      t.truthy(r.annotations?.summary, `${r.alert}: summary`);
      t.truthy(r.annotations?.description, `${r.alert}: description`);
      t.true(['critical', 'warning', 'info'].includes(r.labels?.severity ?? ''), `${r.alert}: severity`);
    }
  const evals = cases.tests.flatMap((c) => c.alert_rule_test ?? []);
  for (const a of alerts) {
    t.true(
      evals.some((e) => e.alertname === a && e.exp_alerts.length > 0),
      `${a} has a case that fires it`,
    );
    t.true(
      evals.some((e) => e.alertname === a && e.exp_alerts.length === 0),
      `${a} has a case where it stays quiet`,
    );
  }
  const unknown = evals.map((e) => e.alertname).filter((a) => !alerts.includes(a));
  t.deepEqual(unknown, [], 'cases name only alerts of the file');
  // The runbook: a section of docs/operations.md per alert.
  const doc = await readFile(join(repoRoot(), 'docs', 'operations.md'), 'utf8');
  for (const a of alerts) t.true(doc.includes(`### ${a}`), `docs/operations.md has a runbook section ### ${a}`);
});

(why ? test.skip : test)(title('promtool check rules and promtool test rules pass'), async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sixbed4-rules-'));
  try {
    const check = await run(PROMTOOL, ['check', 'rules', RULES]);
    t.log(check.stdout.trim());
    // The descriptions are prose: promtool checked their templates above; the cases compare summaries only.
    const rules = YAML.parse(await readFile(RULES, 'utf8')) as RuleFile;
    for (const g of rules.groups)
      for (const r of g.rules) if (r.annotations) r.annotations = { summary: r.annotations.summary! };
    await writeFile(join(dir, 'prometheus-rules.yaml'), YAML.stringify(rules));
    await writeFile(join(dir, 'rules.test.yaml'), await readFile(CASES, 'utf8'));
    const r = await run(PROMTOOL, ['test', 'rules', join(dir, 'rules.test.yaml')]).catch(
      (e: { stdout?: string; stderr?: string; message: string }) => {
        throw new Error(`promtool test rules failed:\n${e.stdout ?? ''}${e.stderr ?? ''}`);
      },
    );
    t.log(r.stdout.trim());
    t.regex(r.stdout, /SUCCESS/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

const helm = controlPlaneBinaries();
(helm ? test : test.skip)(
  helm
    ? "the chart's PrometheusRule carries the rule file, with the labels and runbook links asked for"
    : "the chart's PrometheusRule (skipped: helm not built; run bash test/k8s/build-control-plane.sh)",
  async (t) => {
    const chart = join(repoRoot(), 'charts', 'sixbed4');
    const off = await run(join(helm!, 'helm'), ['template', 't', chart, '-n', 'sixbed4-system']);
    t.false(off.stdout.includes('kind: PrometheusRule'), 'off by default');
    const on = await run(join(helm!, 'helm'), [
      'template',
      't',
      chart,
      '-n',
      'sixbed4-system',
      '-s',
      'templates/prometheusrule.yaml',
      '--set',
      'prometheusRule.enabled=true',
      '--set',
      'prometheusRule.labels.release=kube-prometheus-stack',
      '--set',
      'prometheusRule.ruleLabels.team=network',
      '--set',
      'prometheusRule.runbookBaseURL=https://docs.example.org/operations.md',
    ]);
    const pr = YAML.parse(on.stdout) as { kind: string; metadata: { labels: Record<string, string> }; spec: RuleFile };
    t.is(pr.kind, 'PrometheusRule');
    t.is(pr.metadata.labels.release, 'kube-prometheus-stack');
    const file = YAML.parse(await readFile(RULES, 'utf8')) as RuleFile;
    t.deepEqual(alertsOf(pr.spec), alertsOf(file));
    for (const [i, g] of pr.spec.groups.entries())
      for (const [j, r] of g.rules.entries()) {
        const orig = file.groups[i]!.rules[j]!;
        t.is(r.expr, orig.expr);
        t.deepEqual(r.labels, { ...orig.labels, team: 'network' });
        t.is(r.annotations?.runbook_url, `https://docs.example.org/operations.md#${orig.alert!.toLowerCase()}`);
        t.is(r.annotations?.description, orig.annotations?.description);
      }
  },
);
