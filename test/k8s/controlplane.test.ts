// The test control plane itself: a real etcd + kube-apiserver (+ controller
// manager) starts on loopback, serves the API with RBAC, helm talks to it,
// and stop() leaves nothing behind. Needs `bash test/k8s/build-control-plane.sh`
// to have been run (CI does it before the tests); skips otherwise.
import test from 'ava';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { ApiException, CoreV1Api, RbacAuthorizationV1Api, VersionApi } from '@kubernetes/client-node';
import { controlPlaneSkipReason, controlPlaneVersions, startControlPlane, type ControlPlane } from './controlplane.js';

const run = promisify(execFile);
const skip = controlPlaneSkipReason();
const cpTest = skip ? test.serial.skip : test.serial;
if (skip) test.serial.skip(`k8s control plane: ${skip}`, () => {});

const state: { cp?: ControlPlane } = {};

test.before(async (t) => {
  if (skip) return;
  state.cp = await startControlPlane({
    controllerManager: true,
    users: [{ name: 'viewer', groups: ['sixbed4:viewers'] }],
  });
  t.log(`control plane up in ${state.cp.startMs} ms at ${state.cp.server}`);
});
test.after.always(async () => {
  await state.cp?.stop();
});

/** HTTP status of a failed client-node call (403, 404 ...), or 0 if it succeeded. */
async function status(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return 0;
  } catch (e) {
    if (e instanceof ApiException) return e.code;
    throw e;
  }
}

cpTest('serves the pinned Kubernetes version', async (t) => {
  const v = await state.cp!.kubeConfig().makeApiClient(VersionApi).getCode();
  t.is(v.gitVersion, controlPlaneVersions().K8S_VERSION);
});

cpTest('admin creates a namespace and a ConfigMap', async (t) => {
  const core = state.cp!.kubeConfig().makeApiClient(CoreV1Api);
  await core.createNamespace({ body: { metadata: { name: 'cp-test' } } });
  await core.createNamespacedConfigMap({
    namespace: 'cp-test',
    body: { metadata: { name: 'hello' }, data: { greeting: 'hi' } },
  });
  const cm = await core.readNamespacedConfigMap({ namespace: 'cp-test', name: 'hello' });
  t.is(cm.data?.greeting, 'hi');
});

cpTest('RBAC denies unprivileged identities until a Role grants access', async (t) => {
  const cp = state.cp!;
  const core = (kc: ReturnType<ControlPlane['kubeConfig']>) => kc.makeApiClient(CoreV1Api);
  await status(core(cp.kubeConfig()).createNamespace({ body: { metadata: { name: 'rbac-test' } } }));

  // static-token user with no bindings
  t.is(await status(core(cp.kubeConfig('unprivileged')).listNamespacedConfigMap({ namespace: 'rbac-test' })), 403);
  t.is(
    await status(core(cp.kubeConfig('unprivileged')).createNamespace({ body: { metadata: { name: 'nope' } } })),
    403,
  );

  // a real ServiceAccount token (TokenRequest), like a chart's operator would use
  const saToken = await cp.serviceAccountToken('rbac-test', 'operator');
  const sa = core(cp.kubeConfigForToken(saToken, 'operator'));
  t.is(await status(sa.listNamespacedConfigMap({ namespace: 'rbac-test' })), 403);

  const rbac = cp.kubeConfig().makeApiClient(RbacAuthorizationV1Api);
  await rbac.createNamespacedRole({
    namespace: 'rbac-test',
    body: {
      metadata: { name: 'cm-reader' },
      rules: [{ apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'list'] }],
    },
  });
  await rbac.createNamespacedRoleBinding({
    namespace: 'rbac-test',
    body: {
      metadata: { name: 'cm-reader' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'cm-reader' },
      subjects: [
        { kind: 'ServiceAccount', name: 'operator', namespace: 'rbac-test' },
        { kind: 'Group', apiGroup: 'rbac.authorization.k8s.io', name: 'sixbed4:viewers' },
      ],
    },
  });
  // RBAC changes reach the authorizer's informer quickly but asynchronously
  let code = -1;
  for (let i = 0; i < 50 && code !== 0; i++) {
    code = await status(sa.listNamespacedConfigMap({ namespace: 'rbac-test' }));
    if (code !== 0) await sleep(100);
  }
  t.is(code, 0, 'the bound ServiceAccount may list ConfigMaps');
  t.is(
    await status(core(cp.kubeConfig('viewer')).listNamespacedConfigMap({ namespace: 'rbac-test' })),
    0,
    'group binding applies',
  );
  t.is(
    await status(sa.createNamespacedConfigMap({ namespace: 'rbac-test', body: { metadata: { name: 'x' } } })),
    403,
    'but not create',
  );
  t.is(await status(sa.listNamespacedConfigMap({ namespace: 'default' })), 403, 'nor read other namespaces');
  t.is(await status(core(cp.kubeConfig('unprivileged')).listNamespacedConfigMap({ namespace: 'rbac-test' })), 403);
});

cpTest('kube-controller-manager garbage-collects dependents', async (t) => {
  const core = state.cp!.kubeConfig().makeApiClient(CoreV1Api);
  const ns = 'gc-test';
  await core.createNamespace({ body: { metadata: { name: ns } } });
  const owner = await core.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'owner' } } });
  await core.createNamespacedConfigMap({
    namespace: ns,
    body: {
      metadata: {
        name: 'dependent',
        ownerReferences: [{ apiVersion: 'v1', kind: 'ConfigMap', name: 'owner', uid: owner.metadata!.uid! }],
      },
    },
  });
  await core.deleteNamespacedConfigMap({ namespace: ns, name: 'owner' });
  let code = 0;
  for (let i = 0; i < 150 && code !== 404; i++) {
    code = await status(core.readNamespacedConfigMap({ namespace: ns, name: 'dependent' }));
    if (code !== 404) await sleep(200);
  }
  t.is(code, 404, 'dependent ConfigMap deleted by the garbage collector');
});

cpTest('helm installs a chart with the generated kubeconfig', async (t) => {
  const cp = state.cp!;
  const { stdout: ver } = await run(cp.helm, ['version', '--short']);
  t.regex(ver, new RegExp(`^${controlPlaneVersions().HELM_VERSION!.replace(/\./g, '\\.')}`));

  const dir = await mkdtemp(join(tmpdir(), 'sixbed4-chart-'));
  try {
    await mkdir(join(dir, 'templates'));
    await writeFile(
      join(dir, 'Chart.yaml'),
      'apiVersion: v2\nname: probe\nversion: 0.1.0\nkubeVersion: ">=1.30.0-0"\n',
    );
    await writeFile(
      join(dir, 'templates', 'cm.yaml'),
      'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-probe\ndata:\n  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n',
    );
    const env = {
      ...process.env,
      HOME: dir,
      HELM_CACHE_HOME: join(dir, 'c'),
      HELM_CONFIG_HOME: join(dir, 'f'),
      HELM_DATA_HOME: join(dir, 'd'),
    };
    await run(
      cp.helm,
      [
        'install',
        'probe',
        dir,
        '--kubeconfig',
        cp.kubeconfigPath,
        '--namespace',
        'helm-test',
        '--create-namespace',
        '--wait',
        '--timeout',
        '60s',
      ],
      { env },
    );
    const cm = await cp
      .kubeConfig()
      .makeApiClient(CoreV1Api)
      .readNamespacedConfigMap({ namespace: 'helm-test', name: 'probe-probe' });
    t.is(cm.data?.kube, controlPlaneVersions().K8S_VERSION);

    // the same install as an identity without rights is refused by RBAC
    const kc = await cp.writeKubeconfig(cp.tokens.unprivileged!, 'unprivileged');
    const denied = await run(cp.helm, ['install', 'probe2', dir, '--kubeconfig', kc, '--namespace', 'helm-test'], {
      env,
    }).then(
      () => '',
      (e: { stderr?: string }) => e.stderr ?? 'failed',
    );
    t.regex(denied, /forbidden/i);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// Runs last (serial, declared last): stopping leaves no process and no temp dir.
cpTest('stop() kills every process and removes the temp dir', async (t) => {
  const cp = state.cp!;
  const pids = cp.pids();
  t.is(pids.length, 3, 'etcd, kube-apiserver, kube-controller-manager');
  await cp.stop();
  for (const pid of pids) {
    t.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, `pid ${pid} gone`);
  }
  t.false(existsSync(cp.dir));
  await cp.stop(); // idempotent
});
