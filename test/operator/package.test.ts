// The chart as a user gets it: `helm package` makes sixbed4-<package.json
// version>.tgz (with the CRD subchart inside), it deploys the image tagged with
// that version unless told otherwise, and `helm install` of the .tgz against a
// real API server creates the operator Deployment, the agent DaemonSet and the
// CRDs. Skips without the control-plane binaries (bash test/k8s/build-control-plane.sh).
import test from 'ava';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  controlPlaneBinaries,
  controlPlaneSkipReason,
  startControlPlane,
  type ControlPlane,
} from '../k8s/controlplane.js';
import { Kube } from '../../kube/client.js';
import type { KubeObject } from '../../kube/api.js';
import { eventually } from '../helpers/wait.js';
import { NS, parseYamlDocs, RELEASE, REPO } from '../helpers/cluster.js';

const run = promisify(execFile);
const skip = controlPlaneSkipReason();
const ktest = skip ? test.serial.skip : test.serial;
if (skip) test.serial.skip(`helm package and install of the packaged chart: ${skip}`, () => {});

const VERSION = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
const s: { cp?: ControlPlane; dir?: string; tgz?: string } = {};
const helm = () => join(controlPlaneBinaries()!, 'helm');
const helmEnv = () => ({
  ...process.env,
  HELM_CACHE_HOME: join(s.dir!, 'cache'),
  HELM_CONFIG_HOME: join(s.dir!, 'config'),
  HELM_DATA_HOME: join(s.dir!, 'data'),
});

test.before(async () => {
  if (skip) return;
  s.dir = mkdtempSync(join(tmpdir(), 'sixbed4-package-'));
  s.cp = await startControlPlane({});
});

test.after.always(async () => {
  await s.cp?.stop();
  if (s.dir) rmSync(s.dir, { recursive: true, force: true });
});

ktest(
  'helm package makes sixbed4-<package.json version>.tgz, which deploys image sixbed4:<version> by default',
  async (t) => {
    const { stdout } = await run(helm(), ['package', join(REPO, 'charts', 'sixbed4'), '--destination', s.dir!], {
      env: helmEnv(),
    });
    s.tgz = join(s.dir!, `sixbed4-${VERSION}.tgz`);
    t.true(existsSync(s.tgz), stdout);
    const shown = await run(helm(), ['show', 'chart', s.tgz], { env: helmEnv() });
    t.regex(shown.stdout, new RegExp(`^appVersion: "?${VERSION.replace(/\./g, '\\.')}"?$`, 'm'));
    const list = await run('tar', ['-tzf', s.tgz]);
    t.true(list.stdout.split('\n').includes('sixbed4/charts/crds/Chart.yaml'), 'the CRD subchart is inside');
    const rendered = parseYamlDocs(
      (await run(helm(), ['template', RELEASE, s.tgz, '--namespace', NS], { env: helmEnv() })).stdout,
    );
    const images = rendered
      .filter((o) => o.kind === 'Deployment' || o.kind === 'DaemonSet')
      .flatMap((o) =>
        (o as { spec: { template: { spec: { containers: { image: string }[] } } } }).spec.template.spec.containers.map(
          (c) => `${o.kind}: ${c.image}`,
        ),
      );
    t.deepEqual(images.sort(), [`DaemonSet: sixbed4:${VERSION}`, `Deployment: sixbed4:${VERSION}`]);
  },
);

ktest(
  'helm install of the packaged .tgz creates the operator Deployment, the agent DaemonSet and the CRDs',
  async (t) => {
    if (!s.tgz) {
      t.fail('no package (see the previous test)');
      return;
    }
    await run(
      helm(),
      [
        'install',
        RELEASE,
        s.tgz,
        '--namespace',
        NS,
        '--create-namespace',
        '--kubeconfig',
        s.cp!.kubeconfigPath,
        '--set',
        'image.tag=test',
      ],
      { env: helmEnv() },
    );
    const list = await run(helm(), ['list', '--namespace', NS, '--kubeconfig', s.cp!.kubeconfigPath, '-o', 'json'], {
      env: helmEnv(),
    });
    const releases = JSON.parse(list.stdout) as { name: string; status: string; chart: string; app_version: string }[];
    t.deepEqual(
      releases.map((r) => [r.name, r.status, r.chart, r.app_version]),
      [[RELEASE, 'deployed', `sixbed4-${VERSION}`, VERSION]],
    );
    const kube = new Kube(s.cp!.kubeConfig(), 'sixbed4-test');
    const deployments = await kube.list(`/apis/apps/v1/namespaces/${NS}/deployments`);
    const daemonsets = await kube.list(`/apis/apps/v1/namespaces/${NS}/daemonsets`);
    const image = (o: KubeObject) =>
      (o as unknown as { spec: { template: { spec: { containers: { image: string }[] } } } }).spec.template.spec
        .containers[0]!.image;
    t.deepEqual(
      deployments.items.map((d) => [d.metadata.name, image(d)]),
      [['sixbed4-operator', 'sixbed4:test']],
    );
    t.deepEqual(
      daemonsets.items.map((d) => [d.metadata.name, image(d)]),
      [['sixbed4-agent', 'sixbed4:test']],
    );
    for (const plural of ['sixbed4prefixes', 'sixbed4slices', 'sixbed4ranges']) {
      await eventually(`the CRD ${plural}.sixbed4.io to be established`, async () => {
        const crd = await kube.get<KubeObject>(
          `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${plural}.sixbed4.io`,
        );
        return ((crd?.status as { conditions?: { type: string; status: string }[] })?.conditions ?? []).some(
          (c) => c.type === 'Established' && c.status === 'True',
        );
      });
      t.pass(`${plural}.sixbed4.io established`);
    }
  },
);
