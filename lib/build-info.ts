/**
 * What this build of sixbed4 is: the version (package.json, the one version of
 * the package, the chart and the image), the git revision it was built from,
 * and the Node.js running it (whether the native addon loads: cli/version.ts).
 *
 * The revision is baked in at build time: `npm run build` ends with
 * `node dist/lib/build-info.js --write`, which writes
 * dist/lib/build-info.json from $SIXBED4_REVISION (the Dockerfile passes its
 * REVISION build argument: .git is not in the build context), else
 * `git rev-parse HEAD`, else "unknown".
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface BuildInfo {
  /** package.json's version */
  version: string;
  /** the git commit built, or "unknown" */
  revision: string;
  /** process.version, e.g. v20.20.2 */
  node: string;
}

const here = dirname(fileURLToPath(import.meta.url));
/** Next to this module: dist/lib/build-info.json once built. */
const INFO_FILE = join(here, 'build-info.json');

/** The nearest ancestor directory holding sixbed4's package.json (from lib/ and from dist/lib/ alike). */
export function packageRoot(): string | undefined {
  for (let dir = here; ; dir = dirname(dir)) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: unknown }).name === 'sixbed4') return dir;
      } catch {
        // unreadable: keep walking
      }
    }
    if (dirname(dir) === dir) return undefined;
  }
}

function readVersion(): string {
  const root = packageRoot();
  if (!root) return 'unknown';
  const v = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version?: unknown }).version;
  return typeof v === 'string' ? v : 'unknown';
}

function readRevision(): string {
  try {
    const r = (JSON.parse(readFileSync(INFO_FILE, 'utf8')) as { revision?: unknown }).revision;
    return typeof r === 'string' && r ? r : 'unknown';
  } catch {
    return 'unknown';
  }
}

let cached: BuildInfo | undefined;

export function buildInfo(): BuildInfo {
  cached ??= { version: readVersion(), revision: readRevision(), node: process.version };
  return cached;
}

/** The revision to bake in: $SIXBED4_REVISION, else git's HEAD of the package, else "unknown". */
export function revisionAtBuild(root = packageRoot() ?? process.cwd()): string {
  const fromEnv = process.env.SIXBED4_REVISION?.trim();
  if (fromEnv) return fromEnv;
  try {
    // Not the tree's runner (host/command.ts): this file runs alone as the build's last step, before anything
    // else is known to load, and imports nothing of ours (test/version.test.ts runs a lone copy of it).
    return (
      execFileSync('git', ['-C', root, 'rev-parse', 'HEAD'], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }).trim() || 'unknown'
    );
  } catch {
    return 'unknown';
  }
}

// `node dist/lib/build-info.js --write` (the last step of `npm run build`)
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1] && process.argv[2] === '--write') {
  const revision = revisionAtBuild();
  writeFileSync(INFO_FILE, `${JSON.stringify({ revision }, null, 2)}\n`);
  process.stdout.write(`${INFO_FILE}: revision ${revision}\n`);
}
