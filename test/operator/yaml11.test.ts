// No value a user writes in YAML may change type with the YAML version
// (#16): kubectl and Helm read YAML 1.1, where on/off/yes/no/y/n (any case)
// are booleans and 0777, 0x1F, 1_000, 1:20 or .inf are numbers. A test walks
// every CRD schema (crds/*.yaml) and the chart's values.yaml and fails on any
// enum value or default of a string field that a YAML 1.1 reader would take
// for anything but a string, written unquoted; the files themselves must read
// the same in YAML 1.1 and 1.2.
import test from 'ava';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { REPO } from '../helpers/cluster.js';

/** The YAML 1.1 booleans (yaml.org/type/bool.html), every spelling. */
const BOOL11 = /^(y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$/;
/** YAML 1.1 int, float and null (yaml.org/type/int.html, float.html, null.html). */
const INT11 = /^[-+]?(0b[01_]+|0[0-7_]+|(0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+|[1-9][0-9_]*(:[0-5]?[0-9])+)$/;
const FLOAT11 =
  /^([-+]?([0-9][0-9_]*)?\.[0-9.]*([eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN))$/;
const NULL11 = /^(~|null|Null|NULL|)$/;

/** Why a string, written unquoted, is not a string to some YAML reader; undefined if it is a string to all. */
export function yamlTrap(v: string): string | undefined {
  if (BOOL11.test(v)) return 'a YAML 1.1 boolean';
  if (INT11.test(v) || FLOAT11.test(v)) return 'a YAML 1.1 number';
  if (NULL11.test(v)) return 'YAML null';
  for (const version of ['1.1', '1.2'] as const) {
    const got: unknown = parseYaml(`v: ${v}`, { version }).v;
    if (typeof got !== 'string') return `a YAML ${version} ${got === null ? 'null' : typeof got}`;
  }
  return undefined;
}

test('the check knows the YAML 1.1 traps', (t) => {
  for (const v of [
    'y',
    'N',
    'yes',
    'No',
    'TRUE',
    'false',
    'on',
    'On',
    'OFF',
    'off',
    '0777',
    '0x1F',
    '1_000',
    '1:20',
    '3.5',
    '1e3',
    '.inf',
    '.NaN',
    '~',
    'null',
    '',
    '12',
  ]) {
    t.truthy(yamlTrap(v), v);
  }
  for (const v of [
    'Always',
    'IfNotPresent',
    'Uplink',
    'DummyInterface',
    'Disabled',
    'WhenOnLink',
    'Filtered',
    'Open',
    'info',
    'json',
    'sixbed4.io/prefix',
  ]) {
    t.is(yamlTrap(v), undefined, v);
  }
});

interface Schema {
  type?: string;
  enum?: unknown[];
  default?: unknown;
  properties?: Record<string, Schema>;
  items?: Schema;
  additionalProperties?: Schema | boolean;
}

/**
 * Enum values written by controllers, never by users, in types Kubernetes
 * defines: metav1.Condition's status is True | False | Unknown everywhere,
 * sent as JSON.
 */
const STANDARD = new Set(['status.conditions[].status']);

/** Every string a user may write as an enum value or a default, wherever it sits in a value of the schema's type. */
function traps(s: Schema, path: string, out: string[]): void {
  const check = (v: unknown, sch: Schema | undefined, where: string) => {
    if (typeof v === 'string') {
      const why = yamlTrap(v);
      if (why) out.push(`${where}: ${JSON.stringify(v)} is ${why}`);
      if (sch?.type && sch.type !== 'string')
        out.push(`${where}: the string ${JSON.stringify(v)} in a field of type ${sch.type}`);
    } else if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
      for (const [k, x] of Object.entries(v)) check(x, sch?.properties?.[k], `${where}.${k}`);
    } else if (Array.isArray(v)) {
      v.forEach((x, i) => check(x, sch?.items, `${where}[${i}]`));
    } else if (sch?.type === 'string') {
      out.push(`${where}: ${JSON.stringify(v)} is not a string in a field of type string (unquoted in YAML 1.1?)`);
    }
  };
  if (!STANDARD.has(path)) for (const v of s.enum ?? []) check(v, s, `${path} enum`);
  if (s.default !== undefined) check(s.default, s, `${path} default`);
  for (const [k, sub] of Object.entries(s.properties ?? {})) traps(sub, path ? `${path}.${k}` : k, out);
  if (s.items) traps(s.items, `${path}[]`, out);
  if (typeof s.additionalProperties === 'object') traps(s.additionalProperties, `${path}{}`, out);
}

const crdFiles = () => readdirSync(join(REPO, 'crds')).filter((f) => f.endsWith('.yaml'));

test('no enum value or default of any CRD is a boolean, number or null to a YAML 1.1 reader', (t) => {
  t.true(crdFiles().length >= 3);
  const found: string[] = [];
  let enums = 0;
  for (const f of crdFiles()) {
    // read as kubectl and Helm read it: YAML 1.1
    const crd = parseYaml(readFileSync(join(REPO, 'crds', f), 'utf8'), { version: '1.1' }) as {
      spec: { versions: { name: string; schema: { openAPIV3Schema: Schema } }[] };
    };
    for (const v of crd.spec.versions) {
      traps(v.schema.openAPIV3Schema, '', found);
      JSON.stringify(v.schema.openAPIV3Schema, (k, x: unknown) => {
        if (k === 'enum') enums++;
        return x;
      });
    }
  }
  t.true(enums > 0, 'the walk saw the enums');
  t.deepEqual(found, []);
});

test("the CRDs, the samples and the chart's values.yaml read the same in YAML 1.1 and 1.2; no value of values.yaml is a YAML 1.1 trap", (t) => {
  const samples = readdirSync(join(REPO, 'crds', 'samples'))
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => join(REPO, 'crds', 'samples', f));
  t.true(samples.length >= 3);
  const files = [
    ...crdFiles().map((f) => join(REPO, 'crds', f)),
    ...samples,
    join(REPO, 'charts', 'sixbed4', 'values.yaml'),
  ];
  for (const file of files) {
    const text = readFileSync(file, 'utf8');
    const all = (version: '1.1' | '1.2') => parseAllDocuments(text, { version }).map((d) => d.toJS() as unknown);
    t.deepEqual(all('1.1'), all('1.2'), file);
  }
  // values.yaml: its values are the defaults users override in their own values files and --set
  const found: string[] = [];
  const walk = (v: unknown, where: string) => {
    if (typeof v === 'string') {
      const why = v === '' ? undefined : yamlTrap(v); // "" is how the chart spells "not set"
      if (why) found.push(`${where}: ${JSON.stringify(v)} is ${why}`);
    } else if (Array.isArray(v)) v.forEach((x, i) => walk(x, `${where}[${i}]`));
    else if (typeof v === 'object' && v !== null)
      for (const [k, x] of Object.entries(v)) walk(x, where ? `${where}.${k}` : k);
  };
  walk(parseYaml(readFileSync(join(REPO, 'charts', 'sixbed4', 'values.yaml'), 'utf8'), { version: '1.1' }), '');
  t.deepEqual(found, []);
});

test('the walk finds a trap when there is one', (t) => {
  const found: string[] = [];
  traps(
    { type: 'object', properties: { ndpProxy: { type: 'string', enum: ['off', 'Always'], default: false } } },
    '',
    found,
  );
  t.deepEqual(found, [
    'ndpProxy enum: "off" is a YAML 1.1 boolean',
    'ndpProxy default: false is not a string in a field of type string (unquoted in YAML 1.1?)',
  ]);
});
