// One version, from package.json, everywhere a user can see one: the chart's
// version and appVersion (and so the image tag it deploys by default), the CRD
// subchart, `sixbed4 --version`; plus what --version prints (revision, Node.js,
// the native addon, also when the addon is missing) and the sixbed4_build_info
// gauge of the router/agent and operator registries.
import test from 'ava';
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { buildInfo } from '../lib/build-info.js';
import { routerRegistry } from '../agent/router/metrics.js';
import { Counters } from '../agent/router/counters.js';
import { OperatorMetrics } from '../operator/metrics.js';

const run = promisify(execFile);
const DIST = fileURLToPath(new URL('../', import.meta.url));
const ROOT = join(DIST, '..');
const MAIN = join(DIST, 'cli', 'main.js');

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
const chart = parseYaml(readFileSync(join(ROOT, 'charts', 'sixbed4', 'Chart.yaml'), 'utf8')) as {
  version: string;
  appVersion: string;
  dependencies: { name: string; version: string }[];
};
const crdsChart = parseYaml(readFileSync(join(ROOT, 'charts', 'sixbed4', 'charts', 'crds', 'Chart.yaml'), 'utf8')) as {
  version: string;
  appVersion: string;
};

/** What the build baked in (npm run build), else unknown. */
function builtRevision(): string {
  const file = join(DIST, 'lib', 'build-info.json');
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as { revision: string }).revision : 'unknown';
}

test('package.json, the chart (version, appVersion), the CRD subchart and sixbed4 --version agree on the version', async (t) => {
  const v = pkg.version;
  t.regex(v, /^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/, 'a SemVer version (Helm needs one)');
  t.is(chart.version, v, 'charts/sixbed4/Chart.yaml version');
  t.is(String(chart.appVersion), v, 'charts/sixbed4/Chart.yaml appVersion (the default image tag)');
  t.is(crdsChart.version, v, 'charts/sixbed4/charts/crds/Chart.yaml version');
  t.is(String(crdsChart.appVersion), v, 'charts/sixbed4/charts/crds/Chart.yaml appVersion');
  t.is(
    chart.dependencies.find((d) => d.name === 'crds')?.version,
    v,
    'the crds dependency in charts/sixbed4/Chart.yaml',
  );
  const { stdout } = await run(process.execPath, [MAIN, '--version']);
  t.is(stdout.split('\n')[0], `sixbed4 ${v}`);
  t.is(buildInfo().version, v);
  // The chart deploys the image tagged with its appVersion unless image.tag is set.
  const helpers = readFileSync(join(ROOT, 'charts', 'sixbed4', 'templates', '_helpers.tpl'), 'utf8');
  t.regex(helpers, /default \.Chart\.AppVersion \.Values\.image\.tag/);
});

test('sixbed4 --version and sixbed4 version print version, revision, Node.js and the native addon', async (t) => {
  const a = await run(process.execPath, [MAIN, '--version']);
  const b = await run(process.execPath, [MAIN, 'version']);
  t.is(a.stdout, b.stdout);
  const revision = builtRevision();
  t.regex(revision, /^([0-9a-f]{40}|unknown)$/);
  const native = existsSync(join(ROOT, 'build', 'Release', 'sixbed4_native.node')) ? 'loaded' : 'not loaded';
  t.true(
    a.stdout.startsWith(
      `sixbed4 ${pkg.version}\nrevision: ${revision}\nnode: ${process.version}\nnative addon: ${native}`,
    ),
    a.stdout,
  );
  const help = await run(process.execPath, [MAIN, '--help']);
  t.regex(help.stdout, /^ {2}version +print the version/m);
});

test('sixbed4 --version works without the native addon and says so; a command that needs it refuses at start', async (t) => {
  // A copy of the package without build/: package.json, dist, node_modules (linked).
  const dir = mkdtempSync(join(tmpdir(), 'sixbed4-version-'));
  try {
    writeFileSync(join(dir, 'package.json'), readFileSync(join(ROOT, 'package.json')));
    for (const part of ['lib', 'kube', 'agent', 'operator', 'lab', 'cli']) {
      cpSync(join(DIST, part), join(dir, 'dist', part), { recursive: true, filter: (src) => !src.endsWith('.map') });
    }
    symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
    writeFileSync(
      join(dir, 'dist', 'lib', 'build-info.json'),
      '{"revision": "0123456789abcdef0123456789abcdef01234567"}\n',
    );
    const { stdout, stderr } = await run(process.execPath, [join(dir, 'dist', 'cli', 'main.js'), '--version']);
    t.is(stderr, '');
    t.regex(
      stdout,
      new RegExp(`^sixbed4 ${pkg.version.replace(/\./g, '\\.')}\nrevision: 0123456789abcdef0123456789abcdef01234567\n`),
    );
    t.regex(stdout, /^native addon: not loaded \(sixbed4 native addon not found at .*\)$/m);
    // A command that needs it refuses at once, in one line that says how to get it built.
    const peer = await run(process.execPath, [
      join(dir, 'dist', 'cli', 'main.js'),
      'peer',
      '--router',
      '192.0.2.1',
    ]).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    t.is(peer.code, 1);
    t.regex(
      peer.stderr,
      /^sixbed4: sixbed4 native addon not found at \S+: in a clone, `npm run build:native`; installed with npm, /,
    );
    t.regex(
      peer.stderr,
      /`npm install -g --allow-scripts=\$PWD\/sixbed4-VERSION\.tgz,raw-socket \$PWD\/sixbed4-VERSION\.tgz`/,
    );
    t.is(peer.stderr.split('\n').length, 2, 'one line');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the revision is baked in from $SIXBED4_REVISION (what the Dockerfile passes), else git', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sixbed4-buildinfo-'));
  try {
    cpSync(join(DIST, 'lib', 'build-info.js'), join(dir, 'build-info.js'));
    await run(process.execPath, [join(dir, 'build-info.js'), '--write'], {
      env: { ...process.env, SIXBED4_REVISION: 'abc123' },
    });
    t.deepEqual(JSON.parse(readFileSync(join(dir, 'build-info.json'), 'utf8')), { revision: 'abc123' });
    // outside any git checkout and without the variable: unknown
    const env: NodeJS.ProcessEnv = { ...process.env, GIT_CEILING_DIRECTORIES: tmpdir() };
    delete env.SIXBED4_REVISION;
    await run(process.execPath, [join(dir, 'build-info.js'), '--write'], { env, cwd: dir });
    t.deepEqual(JSON.parse(readFileSync(join(dir, 'build-info.json'), 'utf8')), { revision: 'unknown' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the router/agent and operator registries expose sixbed4_build_info{version,revision,node} = 1', async (t) => {
  const want = `sixbed4_build_info{version="${pkg.version}",revision="${builtRevision()}",node="${process.version}"} 1`;
  const router = await routerRegistry(async () => new Counters().snapshot()).metrics();
  t.true(
    router.split('\n').includes(want),
    router
      .split('\n')
      .filter((l) => l.includes('build_info'))
      .join('\n'),
  );
  const operator = await new OperatorMetrics().registry.metrics();
  t.true(
    operator.split('\n').includes(want),
    operator
      .split('\n')
      .filter((l) => l.includes('build_info'))
      .join('\n'),
  );
});
