// Where the operations tests find prometheus, promtool and the prometheus-operator CRDs: the cache
// test/ops/build-prometheus.sh builds into (beside the control plane's binaries), and why a test skips without them.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { controlPlaneCacheDir, controlPlaneVersions, isExecutable, repoRoot } from '../k8s/controlplane.js';

export const BUILD_SCRIPT = 'test/ops/build-prometheus.sh';

function versionDir(): string {
  let v = '<version>';
  try {
    v = controlPlaneVersions().K8S_VERSION ?? v;
  } catch {
    /* no versions.env: the reason says where it looked */
  }
  return join(controlPlaneCacheDir(), v);
}

export const PROMETHEUS = join(versionDir(), 'bin', 'prometheus');
export const PROMTOOL = join(versionDir(), 'bin', 'promtool');
export const OPERATOR_CRDS = join(versionDir(), 'prometheus-operator-crd');
export const RULES = join(repoRoot(), 'charts', 'sixbed4', 'files', 'prometheus-rules.yaml');
export const DASHBOARD = join(repoRoot(), 'dashboards', 'sixbed4.json');

/** Why the Prometheus tools are missing (null: they are there). */
export function prometheusSkipReason(): string | null {
  const missing = [PROMETHEUS, PROMTOOL].filter((b) => !isExecutable(b));
  if (!existsSync(join(OPERATOR_CRDS, 'monitoring.coreos.com_podmonitors.yaml'))) missing.push(OPERATOR_CRDS);
  return missing.length
    ? `Prometheus tools not built (${missing.join(', ')} missing); run: bash ${BUILD_SCRIPT}`
    : null;
}
