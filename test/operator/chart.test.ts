// The CRDs and the Helm chart as files: one source of truth for each CRD, a
// description on every field, messages on every rule, valid samples, and a
// chart that lints clean and renders least-privilege RBAC. (That the API
// server accepts all of it is in cluster.test.ts.)
import test from 'ava';
import { execFile } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { checkSpec } from '../../operator/prefix/spec.js';
import { controlPlaneBinaries } from '../k8s/controlplane.js';
import { parseYamlDocs, readYamlDocs, REPO } from './helpers.js';

const run = promisify(execFile);
const CRDS = ['sixbed4.io_sixbed4prefixes.yaml', 'sixbed4.io_sixbed4slices.yaml', 'sixbed4.io_sixbed4ranges.yaml'];
const CHART = join(REPO, 'charts', 'sixbed4');

interface Schema {
  type?: string;
  description?: string;
  properties?: Record<string, Schema>;
  items?: Schema;
  additionalProperties?: Schema | boolean;
  'x-kubernetes-validations'?: { rule: string; message?: string; messageExpression?: string }[];
}

const CHART_CRDS = join(CHART, 'charts', 'crds', 'files');

test('the chart carries the repository\'s CRDs byte for byte', (t) => {
  t.deepEqual(readdirSync(CHART_CRDS).sort(), [...CRDS].sort());
  t.deepEqual(readdirSync(join(REPO, 'crds')).filter((f) => f.endsWith('.yaml')).sort(), [...CRDS].sort());
  for (const f of CRDS) {
    t.is(readFileSync(join(CHART_CRDS, f), 'utf8'), readFileSync(join(REPO, 'crds', f), 'utf8'),
      `charts/sixbed4/charts/crds/files/ must be a copy of crds/${f}: cp crds/${f} charts/sixbed4/charts/crds/files/`);
  }
});

test('every field of the CRDs has a description and every validation rule a message', (t) => {
  const missing: string[] = [];
  const noMessage: string[] = [];
  const walk = (s: Schema, path: string) => {
    if (!s.description && !path.endsWith('.metadata')) missing.push(path);
    for (const v of s['x-kubernetes-validations'] ?? []) if (!v.message && !v.messageExpression) noMessage.push(`${path}: ${v.rule}`);
    for (const [k, sub] of Object.entries(s.properties ?? {})) walk(sub, `${path}.${k}`);
    if (s.items) walk(s.items, `${path}[]`);
    if (typeof s.additionalProperties === 'object' && s.additionalProperties.properties) walk(s.additionalProperties, `${path}{}`);
  };
  for (const f of CRDS) {
    const crd = parseYaml(readFileSync(join(REPO, 'crds', f), 'utf8')) as { spec: { versions: { schema: { openAPIV3Schema: Schema } }[] } };
    walk(crd.spec.versions[0]!.schema.openAPIV3Schema, f);
  }
  t.deepEqual(missing, []);
  t.deepEqual(noMessage, []);
});

test('the samples are valid SixBed4Prefixes with no problems', (t) => {
  const dir = join(REPO, 'crds', 'samples');
  const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
  t.true(files.length >= 2);
  for (const f of files) {
    for (const doc of readYamlDocs(join(dir, f))) {
      t.is(doc.kind, 'SixBed4Prefix', f);
      t.deepEqual(checkSpec((doc as unknown as { spec: unknown }).spec).problems, [], f);
    }
  }
});

test('values.yaml has the documented knobs', (t) => {
  const v = parseYaml(readFileSync(join(CHART, 'values.yaml'), 'utf8')) as Record<string, unknown>;
  for (const k of ['image', 'resources', 'logLevel', 'metrics', 'replicas', 'leaderElection']) t.true(k in v, k);
});

const helmSkip = controlPlaneBinaries() ? null : 'helm not built (bash test/k8s/build-control-plane.sh)';
const htest = helmSkip ? test.skip : test;
const helm = () => join(controlPlaneBinaries()!, 'helm');
const helmEnv = () => ({ ...process.env, HELM_CACHE_HOME: '/tmp/sixbed4-helm-test/cache', HELM_CONFIG_HOME: '/tmp/sixbed4-helm-test/config', HELM_DATA_HOME: '/tmp/sixbed4-helm-test/data' });

htest('helm lint --strict is clean', async (t) => {
  const { stdout } = await run(helm(), ['lint', '--strict', CHART], { env: helmEnv() });
  t.regex(stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
  t.notRegex(stdout, /\[(WARNING|ERROR)\]/);
});

interface Rule { apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] }

htest('helm template: operator Deployment flags, least-privilege RBAC', async (t) => {
  const { stdout } = await run(helm(), ['template', 'sixbed4', CHART, '--namespace', 'sixbed4-system', '--set', 'image.tag=9.9.9'], { env: helmEnv() });
  const docs = parseYamlDocs(stdout) as unknown as { kind: string; metadata: { name: string; namespace?: string }; rules?: Rule[]; spec?: any }[];
  const dep = docs.find((d) => d.kind === 'Deployment')!;
  const c = dep.spec.template.spec.containers[0];
  t.is(c.image, 'sixbed4:9.9.9');
  t.deepEqual(c.args.slice(0, 1), ['operator']);
  for (const a of ['--namespace=sixbed4-system', '--image=sixbed4:9.9.9', '--agent-service-account=sixbed4-agent', '--leader-elect', '--lease-name=sixbed4-operator', '--metrics=0.0.0.0:9464', '--log-format=json']) {
    t.true(c.args.includes(a), a);
  }
  t.is(dep.spec.template.spec.serviceAccountName, 'sixbed4-operator');
  t.true(dep.spec.template.spec.securityContext.runAsNonRoot);
  t.deepEqual(c.securityContext.capabilities.drop, ['ALL']);

  const rules = (kind: string, name: string) => docs.find((d) => d.kind === kind && d.metadata.name === name)!.rules!;
  const all = docs.filter((d) => d.rules).flatMap((d) => d.rules!.map((r) => ({ doc: `${d.kind}/${d.metadata.name}`, ...r })));
  for (const r of all) {
    t.false(r.verbs.includes('*') || r.resources.includes('*') || r.apiGroups.includes('*'), `${r.doc}: no wildcards`);
    t.false(r.resources.includes('secrets'), `${r.doc}: no secrets`);
    t.false(r.verbs.includes('deletecollection'), `${r.doc}: no deletecollection`);
    // the garbage collector deletes what the operator owns, except the
    // cluster-scoped slices and ranges of pods that are gone (it never
    // collects a cluster-scoped object for a namespaced owner)
    if (r.verbs.includes('delete')) t.deepEqual(r.resources, ['sixbed4slices', 'sixbed4ranges'], `${r.doc}: delete only slices and ranges`);
  }
  const slices = rules('ClusterRole', 'sixbed4-operator-slices');
  t.deepEqual(slices, [
    { apiGroups: [''], resources: ['namespaces', 'pods'], verbs: ['get', 'list', 'watch', 'patch'] },
    { apiGroups: ['sixbed4.io'], resources: ['sixbed4slices', 'sixbed4ranges'], verbs: ['get', 'list', 'watch', 'create', 'delete'] },
    { apiGroups: [''], resources: ['events'], verbs: ['create', 'patch'] },
  ]);
  t.truthy(docs.find((d) => d.kind === 'ClusterRoleBinding' && d.metadata.name === 'sixbed4-operator-slices'));
  const opCluster = rules('ClusterRole', 'sixbed4-operator');
  t.deepEqual(opCluster.find((r) => r.resources.includes('nodes'))!.verbs, ['get', 'list', 'watch']);
  t.true(opCluster.some((r) => r.resources.includes('sixbed4prefixes/status')));
  t.true(opCluster.some((r) => r.resources.includes('sixbed4prefixes/finalizers')));
  const opNs = docs.find((d) => d.kind === 'Role' && d.metadata.name === 'sixbed4-operator')!;
  t.is(opNs.metadata.namespace, 'sixbed4-system', 'DaemonSets and ConfigMaps only in the release namespace');
  t.deepEqual(opNs.rules!.find((r) => r.resourceNames)!.resourceNames, ['sixbed4-operator'], 'only its own Lease');
  const events = docs.find((d) => d.kind === 'Role' && d.metadata.name === 'sixbed4-operator-events')!;
  t.is(events.metadata.namespace, 'default');
  t.deepEqual(events.rules, [{ apiGroups: [''], resources: ['events'], verbs: ['create', 'patch'] }]);
  const agent = rules('ClusterRole', 'sixbed4-agent');
  const writes = agent.filter((r) => r.verbs.some((v) => !['get', 'list', 'watch'].includes(v)));
  t.deepEqual(writes, [
    { apiGroups: ['sixbed4.io'], resources: ['sixbed4prefixes/status'], verbs: ['get', 'patch'] },
    { apiGroups: ['sixbed4.io'], resources: ['sixbed4slices/status'], verbs: ['get', 'patch'] },
  ], 'the agent writes only prefix and slice status');
  t.true(agent.some((r) => r.resources.includes('sixbed4slices') && r.verbs.join() === 'get,list,watch'), 'the agent reads slices');

  const off = await run(helm(), ['template', 'x', CHART, '--set', 'leaderElection.enabled=false', '--set', 'metrics.enabled=false'], { env: helmEnv() });
  const c2 = (parseYamlDocs(off.stdout) as any[]).find((d) => d.kind === 'Deployment').spec.template.spec.containers[0];
  t.false(c2.args.includes('--leader-elect'));
  t.false(c2.args.some((a: string) => a.startsWith('--metrics')));
  t.is(c2.readinessProbe, undefined);
});

htest('the CRDs are templates (helm upgrade upgrades them), equal to crds/ and kept on uninstall; crds.enabled=false leaves them out', async (t) => {
  const { stdout } = await run(helm(), ['template', 'sixbed4', CHART, '--namespace', 'sixbed4-system'], { env: helmEnv() });
  const crds = (parseYamlDocs(stdout) as unknown as { kind: string; metadata: { name: string; annotations?: Record<string, string> } }[])
    .filter((d) => d.kind === 'CustomResourceDefinition');
  t.is(crds.length, CRDS.length);
  for (const f of CRDS) {
    const want = parseYaml(readFileSync(join(REPO, 'crds', f), 'utf8')) as { metadata: { name: string; annotations?: Record<string, string> } };
    const got = crds.find((c) => c.metadata.name === want.metadata.name);
    t.truthy(got, want.metadata.name);
    t.is(got!.metadata.annotations?.['helm.sh/resource-policy'], 'keep');
    const { annotations: _a, ...gotMeta } = got!.metadata;
    const { annotations: _b, ...wantMeta } = want.metadata;
    t.deepEqual({ ...got, metadata: gotMeta }, { ...want, metadata: wantMeta }, `${f}: the rendered CRD is the file`);
  }
  const off = await run(helm(), ['template', 'sixbed4', CHART, '--set', 'crds.enabled=false'], { env: helmEnv() });
  t.false(parseYamlDocs(off.stdout).some((d) => d.kind === 'CustomResourceDefinition'));
});
