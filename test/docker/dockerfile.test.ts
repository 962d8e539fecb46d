// The Dockerfile as a file (no Docker, no registry): by default it builds from
// the official Node.js 20 Debian bookworm images pinned by an exact tag; the
// local bases are build arguments that the scripts pass (image.test.ts builds
// that way); the image is labelled with OCI labels from VERSION and REVISION,
// and the runtime gets iproute2 whatever the base.
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
/** Instructions with continuation lines joined and comments dropped. */
const instructions = text
  .replace(/\\\n/g, ' ')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'));
/** ARG NAME=default, by stage: 'global' before the first FROM, then the stage index. */
function args(): Map<string, Map<string, string | undefined>> {
  const out = new Map<string, Map<string, string | undefined>>([['global', new Map()]]);
  let stage = 'global';
  let n = 0;
  for (const l of instructions) {
    if (/^FROM\s/i.test(l)) {
      stage = String(n++);
      out.set(stage, new Map());
      continue;
    }
    const m = /^ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?$/i.exec(l);
    if (m) out.get(stage)!.set(m[1]!, m[2]?.replace(/^"(.*)"$/, '$1'));
  }
  return out;
}

/** node:<exact 20.x.y>-bookworm[-slim], optionally @sha256:<digest>. */
const OFFICIAL = (variant: string) => new RegExp(`^node:20\\.\\d+\\.\\d+-bookworm${variant}(@sha256:[0-9a-f]{64})?$`);

test('by default the image builds from official node:20 bookworm images pinned by an exact tag', (t) => {
  const global = args().get('global')!;
  t.regex(
    global.get('BUILD_IMAGE') ?? '',
    OFFICIAL(''),
    'BUILD_IMAGE: the full image (npm, make, g++, python3, Node headers)',
  );
  t.regex(global.get('BASE_IMAGE') ?? '', OFFICIAL('-slim'), 'BASE_IMAGE: the slim image');
  const version = (s: string) => /^node:(20\.\d+\.\d+)/.exec(s)?.[1];
  t.is(
    version(global.get('BUILD_IMAGE')!),
    version(global.get('BASE_IMAGE')!),
    'build and runtime use the same Node.js',
  );
  const froms = instructions.filter((l) => /^FROM\s/i.test(l));
  t.deepEqual(
    froms,
    ['FROM ${BUILD_IMAGE} AS build', 'FROM ${BASE_IMAGE}'],
    'every stage starts from one of the two arguments',
  );
  // The addon must be built for the Node.js the runtime has: the official tag and the engines range agree.
  const engines = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { engines: { node: string } })
    .engines.node;
  const [major, minor] = version(global.get('BASE_IMAGE')!)!.split('.').map(Number);
  const min = /^>=(\d+)\.(\d+)/.exec(engines)!;
  t.true(
    major! > Number(min[1]) || (major === Number(min[1]) && minor! >= Number(min[2])),
    `${global.get('BASE_IMAGE')} satisfies engines.node ${engines}`,
  );
});

test('the local base images are build arguments the scripts pass; docs/install.md says both ways', (t) => {
  const script = readFileSync(join(ROOT, 'test', 'docker', 'build-image.sh'), 'utf8');
  t.regex(script, /BASE_IMAGE="\$\{BASE_IMAGE:-sixbed4-base:bookworm\}"/);
  t.regex(script, /BUILD_IMAGE="\$\{BUILD_IMAGE:-sixbed4-build:bookworm\}"/);
  for (const a of ['BASE_IMAGE', 'BUILD_IMAGE', 'VERSION', 'REVISION', 'SOURCE'])
    t.regex(script, new RegExp(`--build-arg "${a}=\\$${a}"`), a);
  const readme = readFileSync(join(ROOT, 'docs', 'install.md'), 'utf8');
  t.regex(readme, /node:20\.\d+\.\d+-bookworm/);
  t.regex(readme, /test\/docker\/build-image\.sh/);
});

test('OCI labels come from VERSION and REVISION; the licence is BSD-2-Clause; REVISION reaches the build', (t) => {
  const stages = args();
  const runtime = stages.get('1')!;
  t.true(
    runtime.has('VERSION') && runtime.has('REVISION') && runtime.has('SOURCE'),
    'ARG VERSION, REVISION and SOURCE in the runtime stage',
  );
  t.true(stages.get('0')!.has('REVISION'), 'ARG REVISION in the build stage (written into dist/lib/build-info.json)');
  const labels = new Map<string, string>();
  for (const l of instructions.filter((i) => /^LABEL\s/i.test(i))) {
    for (const m of l.slice(6).matchAll(/([\w.-]+)="([^"]*)"/g)) labels.set(m[1]!, m[2]!);
  }
  t.is(labels.get('org.opencontainers.image.version'), '$VERSION');
  t.is(labels.get('org.opencontainers.image.revision'), '$REVISION');
  t.is(labels.get('org.opencontainers.image.source'), '$SOURCE');
  t.is(labels.get('org.opencontainers.image.licenses'), 'BSD-2-Clause');
  t.is((JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { license: string }).license, 'BSD-2-Clause');
  t.true(
    instructions.some((l) => /SIXBED4_REVISION="\$REVISION" npm run build/.test(l)),
    'npm run build gets REVISION',
  );
});

test('the runtime installs iproute2 and nftables only when the base lacks ip or nft, and both bases give the same /app', (t) => {
  const runtimeStart = instructions.findIndex((l) => l === 'FROM ${BASE_IMAGE}');
  const runtime = instructions.slice(runtimeStart);
  t.true(
    runtime.some((l) =>
      /^RUN \{ command -v ip >\/dev\/null && command -v nft >\/dev\/null; \} \|\| \{ apt-get update.*apt-get install .*iproute2 nftables/.test(
        l,
      ),
    ),
    'conditional apt-get install iproute2 nftables',
  );
  t.deepEqual(
    runtime.filter((l) => /^COPY\s/.test(l)).map((l) => l.split(/\s+/).slice(-1)[0]),
    ['./', './node_modules', './build/Release/', './dist', './crds'],
  );
  t.true(runtime.includes('ENTRYPOINT ["node", "/app/dist/cli/main.js"]'));
});
