// The dashboard as the chart ships it: files/dashboard.json is the repository's dashboards/sixbed4.json, and with
// grafanaDashboard.enabled the chart puts it in a ConfigMap with Grafana's sidecar label (off by default).
import test from 'ava';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import YAML from 'yaml';
import { controlPlaneBinaries, repoRoot } from '../k8s/controlplane.js';
import { DASHBOARD } from './tools.js';

const run = promisify(execFile);
const CHART = join(repoRoot(), 'charts', 'sixbed4');

test("the chart's copy of the dashboard is dashboards/sixbed4.json", async (t) => {
  t.is(
    await readFile(join(CHART, 'files', 'dashboard.json'), 'utf8'),
    await readFile(DASHBOARD, 'utf8'),
    'cp dashboards/sixbed4.json charts/sixbed4/files/dashboard.json',
  );
});

const helm = controlPlaneBinaries();
(helm ? test : test.skip)(
  `grafanaDashboard: off by default; on, a ConfigMap with the sidecar label and the dashboard${helm ? '' : ' (skipped: helm not built; run bash test/k8s/build-control-plane.sh)'}`,
  async (t) => {
    const off = await run(join(helm!, 'helm'), ['template', 't', CHART, '-n', 'sixbed4-system'], {
      maxBuffer: 16 << 20,
    });
    t.false(off.stdout.includes('grafana_dashboard'));
    const on = await run(join(helm!, 'helm'), [
      'template',
      't',
      CHART,
      '-n',
      'sixbed4-system',
      '-s',
      'templates/grafana-dashboard.yaml',
      '--set',
      'grafanaDashboard.enabled=true',
      '--set',
      'grafanaDashboard.namespace=monitoring',
      '--set',
      'grafanaDashboard.labels.grafana_folder=sixbed4',
    ]);
    const cm = YAML.parse(on.stdout) as {
      kind: string;
      metadata: { namespace: string; labels: Record<string, string> };
      data: Record<string, string>;
    };
    t.is(cm.kind, 'ConfigMap');
    t.is(cm.metadata.namespace, 'monitoring');
    t.is(cm.metadata.labels.grafana_dashboard, '1');
    t.is(cm.metadata.labels.grafana_folder, 'sixbed4');
    t.deepEqual(JSON.parse(cm.data['sixbed4.json']!), JSON.parse(await readFile(DASHBOARD, 'utf8')));
  },
);
