// The import graph's layers (README "Architecture"): lib/ <- kube/ <- agent/ and operator/ <- lab/, cli/ (lab/: the
// lab command's and the tests' namespaces; nothing shipped but the CLI imports it). agent/ and operator/ share only
// lib/ and kube/, never each other, so either side can change without reaching into the other (as MetalLB's speaker
// and controller share only internal/ and api/). This reads the TypeScript sources themselves.
import test from 'ava';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** What each top-level part may import besides itself. */
const ALLOWED: Record<string, readonly string[]> = {
  lib: [],
  kube: ['lib'],
  agent: ['lib', 'kube'],
  operator: ['lib', 'kube'],
  // the namespaces, processes and topology that `sixbed4 lab` and the tests build on (with agent/host's runner)
  lab: ['lib', 'kube', 'agent'],
  cli: ['lib', 'kube', 'agent', 'operator', 'lab'],
};

/** Every relative module a source names: static imports and re-exports, `import 'x'`, and dynamic import(). */
function specifiers(source: string): string[] {
  const found: string[] = [];
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(['"])(\.{1,2}\/[^'"]+)\1/g;
  for (const m of source.matchAll(re)) found.push(m[2]!);
  return found;
}

/** The import lines of file (relative to the root) that break the layers, as "file -> target". */
function violations(file: string, source: string): string[] {
  const part = file.split('/')[0]!;
  const allowed = ALLOWED[part];
  if (!allowed) return [];
  const out: string[] = [];
  for (const s of specifiers(source)) {
    const target = normalize(join(dirname(file), s));
    const targetPart = target.split('/')[0]!;
    if (targetPart !== part && !allowed.includes(targetPart)) out.push(`${file} -> ${target}`);
  }
  return out;
}

function sources(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => relative(ROOT, join(e.parentPath, e.name)));
}

test('the detector sees every kind of import that crosses a layer', (t) => {
  const src = [
    "import type { Logger } from '../../agent/log.js';",
    'import {\n  a,\n  b,\n} from "../../agent/x.js";',
    "export { c } from '../../cli/main.js';",
    "const m = await import('../../agent/io/native.js');",
    "import '../../agent/side-effect.js';",
    "import { d } from './own.js';",
    "import { e } from '../../kube/api.js';",
  ].join('\n');
  t.deepEqual(violations('operator/prefix/x.ts', src), [
    'operator/prefix/x.ts -> agent/log.js',
    'operator/prefix/x.ts -> agent/x.js',
    'operator/prefix/x.ts -> cli/main.js',
    'operator/prefix/x.ts -> agent/io/native.js',
    'operator/prefix/x.ts -> agent/side-effect.js',
  ]);
  t.deepEqual(violations('kube/x.ts', "import { f } from '../operator/metrics.js';"), [
    'kube/x.ts -> operator/metrics.js',
  ]);
  t.deepEqual(violations('lib/x.ts', "import { g } from '../kube/api.js';"), ['lib/x.ts -> kube/api.js']);
  t.deepEqual(violations('cli/x.ts', "import { h } from '../operator/controller.js';"), []);
});

test('no part imports a layer above it, and agent/ and operator/ never import each other', (t) => {
  const found: string[] = [];
  let files = 0;
  for (const part of Object.keys(ALLOWED)) {
    for (const file of sources(part)) {
      files++;
      found.push(...violations(file, readFileSync(join(ROOT, file), 'utf8')));
    }
  }
  t.true(files > 100, `read ${files} source files`);
  t.deepEqual(found, [], 'imports that break the layers lib <- kube <- agent, operator <- cli');
});
