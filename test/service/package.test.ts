// The npm package, as a user gets it: `npm pack` in a copy of this checkout
// (its prepack script builds: addon, tsc, build info), then `npm install -g`
// of the .tgz into an empty prefix — the addon compiled on install, against
// the installed Node.js headers, no dev dependencies — and the installed
// `sixbed4 lab` passes. Also what the package must hold for the single host:
// the systemd units, and dist/ without the tests.
import test from 'ava';
import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { title, rootSerial } from '../helpers/fixtures.js';

const run = promisify(execFile);
const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const PKG = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as {
  version: string;
  scripts: Record<string, string>;
  files: string[];
  devDependencies: Record<string, string>;
};
// Native addons build offline against the installed Node.js headers (as .ci/run does).
const env = {
  ...process.env,
  npm_config_nodedir: process.env.npm_config_nodedir ?? '/usr',
  npm_config_update_notifier: 'false',
};

const s: { dir?: string; tgz?: string; prefix?: string } = {};
/** The README's install line; `tgz` is the package's absolute path (npm matches a tarball by its path). */
const INSTALL_LINE = 'tgz=$(realpath sixbed4-*.tgz) && npm install -g --allow-scripts="$tgz,raw-socket" "$tgz"';
test.after.always(async () => {
  if (s.dir) await rm(s.dir, { recursive: true, force: true });
});

rootSerial(
  title('npm pack builds (prepack) and packs dist, the addon sources and the systemd units, not the tests'),
  async (t) => {
    t.timeout(5 * 60_000);
    t.is(PKG.scripts.prepack, 'npm run build');
    s.dir = await mkdtemp(join(tmpdir(), 'sixbed4-pack-'));
    // A copy of the checkout (tracked and new files, as git sees them) with the dev dependencies for the build: the
    // build writes dist/ and build/ there, not under the running tests.
    const src = join(s.dir, 'src');
    const { stdout } = await run('git', ['-C', REPO, 'ls-files', '-co', '--exclude-standard', '-z']);
    for (const f of stdout.split('\0').filter(Boolean)) {
      if (!existsSync(join(REPO, f))) continue; // deleted in the work tree
      await mkdir(dirname(join(src, f)), { recursive: true });
      await cp(join(REPO, f), join(src, f));
    }
    await symlink(join(REPO, 'node_modules'), join(src, 'node_modules'));
    const revision = (await run('git', ['-C', REPO, 'rev-parse', 'HEAD'])).stdout.trim();
    const packed = await run('npm', ['pack', '--pack-destination', s.dir, '--json'], {
      cwd: src,
      env: { ...env, SIXBED4_REVISION: revision },
      maxBuffer: 64 << 20,
    });
    const info = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as {
      filename: string;
      files: { path: string }[];
    }[];
    s.tgz = join(s.dir, info[0]!.filename);
    t.is(info[0]!.filename, `sixbed4-${PKG.version}.tgz`);
    const files = info[0]!.files.map((f) => f.path);
    for (const f of [
      'dist/cli/main.js',
      'dist/lib/build-info.json',
      'dist/kube/prefix-spec.js',
      'binding.gyp',
      'agent/native/notify.c',
      'systemd/sixbed4-router.service',
      'systemd/sixbed4-peer@.service',
      'crds/sixbed4.io_sixbed4prefixes.yaml',
    ])
      t.true(files.includes(f), f);
    t.false(
      files.some((f) => f.startsWith('dist/test/') || f.startsWith('build/')),
      'no tests, no prebuilt addon',
    );
  },
);

rootSerial(
  title(
    'npm install -g of the .tgz on a clean prefix compiles the addon, needs no dev dependencies, and `sixbed4 lab` passes',
  ),
  async (t) => {
    t.timeout(8 * 60_000);
    if (!s.tgz) {
      t.fail('no package (see the previous test)');
      return;
    }
    s.prefix = join(s.dir!, 'prefix');
    // --prefer-offline: the dependencies from npm's cache when it has them (CI's npm ci filled it).
    // The README's install line: it names the packages whose install scripts must run (sixbed4's addon and
    // raw-socket's), rather than relying on npm's default for scripts it has not been told to allow.
    t.true(readFileSync(join(REPO, 'README.md'), 'utf8').includes(INSTALL_LINE), 'the README gives this line');
    const installed = await run('bash', ['-c', INSTALL_LINE], {
      cwd: s.dir,
      env: {
        ...env,
        npm_config_prefix: s.prefix,
        npm_config_prefer_offline: 'true',
        npm_config_audit: 'false',
        npm_config_fund: 'false',
      },
      maxBuffer: 64 << 20,
      timeout: 6 * 60_000,
    });
    t.notRegex(installed.stderr, /install-scripts\s+(sixbed4|raw-socket)@/, 'npm questioned a script the line allows');
    const root = join(s.prefix, 'lib', 'node_modules', 'sixbed4');
    t.true(existsSync(join(root, 'build', 'Release', 'sixbed4_native.node')), 'the addon was compiled on install');
    // (@types/* may come with runtime dependencies that declare them; the build tools may not.)
    for (const dev of Object.keys(PKG.devDependencies).filter((d) => !d.startsWith('@types/'))) {
      t.false(existsSync(join(root, 'node_modules', dev)), `dev dependency ${dev} installed`);
    }
    const bin = join(s.prefix, 'bin', 'sixbed4');
    const version = await run(bin, ['--version']);
    t.regex(
      version.stdout,
      new RegExp(
        `^sixbed4 ${PKG.version.replace(/\./g, '\\.')}\nrevision: [0-9a-f]{40}\nnode: v\\d+\\.\\d+\\.\\d+\nnative addon: loaded\n$`,
      ),
    );
    const lab = await run(bin, ['lab', '--log-format', 'text'], {
      cwd: s.dir,
      env,
      timeout: 4 * 60_000,
      maxBuffer: 16 << 20,
    }).catch((e: { stdout: string; stderr: string; code: number }) => e);
    t.regex(lab.stdout, /^RESULT: all checks passed$/m, `${lab.stdout}\n${lab.stderr.slice(-4000)}`);
    t.true(existsSync(join(root, 'systemd', 'sixbed4-router.service')));
  },
);
