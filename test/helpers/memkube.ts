// An in-memory API server behind the operator's `Kube` (kube/client.ts), so
// that controller logic runs row by row in milliseconds, as MetalLB tests its
// Reconcile on a fake client. Only what the operator relies on is modelled,
// but that faithfully: resourceVersion preconditions (409), AlreadyExists,
// generation, the status subresource (writes to the object leave status
// alone and the other way round), finalizers and deletionTimestamp (an object
// goes when its last finalizer does), UID preconditions on delete, the
// garbage collector's cascade to owned objects, JSON merge patch, JSON patch
// (a failed `test` is a 422), server-side apply with field managers
// (ssa.ts), label and field selectors, and watches for informers
// (informer()). What only a real server shows (CRD validation, CEL,
// admission policies, RBAC) stays in cluster.test.ts and slices-cluster.test.ts.
// Not modelled: validation and defaulting, the namespace controller (a deleted
// Namespace's objects stay), graceful deletion of pods, watch bookmarks and
// resourceVersion-based list semantics (a list is always the latest state).
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KubeConfig } from '@kubernetes/client-node';
import { parse } from 'yaml';
import { Kube, KubeError, type JsonPatchOp, type KubeList, type RequestOptions } from '../../kube/client.js';
import type { KubeObject } from '../../kube/api.js';
import type { ChangeType, InformerOptions, Watched } from '../../kube/informer.js';
import { fieldSet, isUnder, mergeApplied, pathKey, removeAt, type ListKeys, type Path } from './ssa.js';
import { isObj } from '../../lib/guards.js';

/** the repository (the CRDs), from dist/test/helpers */
const REPO = fileURLToPath(new URL('../../../', import.meta.url));

interface Kind {
  group: string;
  version: string;
  kind: string;
  namespaced: boolean;
  status: boolean;
}

/** The kinds the operator and its tests touch, by plural. */
const KINDS: Record<string, Kind> = {
  nodes: { group: '', version: 'v1', kind: 'Node', namespaced: false, status: true },
  namespaces: { group: '', version: 'v1', kind: 'Namespace', namespaced: false, status: true },
  pods: { group: '', version: 'v1', kind: 'Pod', namespaced: true, status: true },
  configmaps: { group: '', version: 'v1', kind: 'ConfigMap', namespaced: true, status: false },
  events: { group: '', version: 'v1', kind: 'Event', namespaced: true, status: false },
  leases: { group: 'coordination.k8s.io', version: 'v1', kind: 'Lease', namespaced: true, status: false },
  daemonsets: { group: 'apps', version: 'v1', kind: 'DaemonSet', namespaced: true, status: true },
  sixbed4prefixes: { group: 'sixbed4.io', version: 'v1alpha1', kind: 'SixBed4Prefix', namespaced: false, status: true },
  sixbed4slices: { group: 'sixbed4.io', version: 'v1alpha1', kind: 'SixBed4Slice', namespaced: false, status: true },
  sixbed4ranges: { group: 'sixbed4.io', version: 'v1alpha1', kind: 'SixBed4Range', namespaced: false, status: false },
};

/** The map-lists of the CRDs' schemas (x-kubernetes-list-map-keys), by plural; every kind: ownerReferences by uid. */
function listKeysFromCrds(): Map<string, ListKeys> {
  const out = new Map<string, ListKeys>();
  const dir = join(REPO, 'crds');
  for (const f of readdirSync(dir).filter((x) => x.endsWith('.yaml'))) {
    const crd = parse(readFileSync(join(dir, f), 'utf8')) as {
      spec: {
        names: { plural: string };
        versions: { openAPIV3Schema?: unknown; schema?: { openAPIV3Schema: unknown } }[];
      };
    };
    const keys = new Map<string, readonly string[]>([['metadata.ownerReferences', ['uid']]]);
    const walk = (s: unknown, p: string[]) => {
      if (typeof s !== 'object' || s === null) return;
      const o = s as { properties?: Record<string, unknown>; items?: unknown; 'x-kubernetes-list-map-keys'?: string[] };
      if (o['x-kubernetes-list-map-keys']) keys.set(p.join('.'), o['x-kubernetes-list-map-keys']);
      for (const [k, v] of Object.entries(o.properties ?? {})) walk(v, [...p, k]);
      if (o.items) walk(o.items, p);
    };
    walk(crd.spec.versions[0]!.schema?.openAPIV3Schema, []);
    out.set(crd.spec.names.plural, keys);
  }
  return out;
}
const CRD_LIST_KEYS = listKeysFromCrds();
const CORE_LIST_KEYS: ListKeys = new Map([['metadata.ownerReferences', ['uid']]]);

interface Target {
  plural: string;
  kind: Kind;
  namespace?: string;
  name?: string;
  sub?: string;
}

/** Parses /api/v1/... and /apis/<group>/<version>/... paths. */
function parsePath(path: string): Target {
  const segs = path.split('?')[0]!.split('/').filter(Boolean).map(decodeURIComponent);
  const rest = segs[0] === 'api' ? segs.slice(2) : segs.slice(3);
  let t: Omit<Target, 'kind'>;
  if (rest[0] === 'namespaces' && rest.length >= 3)
    t = {
      namespace: rest[1]!,
      plural: rest[2]!,
      ...(rest[3] ? { name: rest[3] } : {}),
      ...(rest[4] ? { sub: rest[4] } : {}),
    };
  else t = { plural: rest[0]!, ...(rest[1] ? { name: rest[1] } : {}), ...(rest[2] ? { sub: rest[2] } : {}) };
  const kind = KINDS[t.plural];
  if (!kind) throw new KubeError(404, 'NotFound', `memkube: no resource ${t.plural} (${path})`);
  return { ...t, kind };
}

/** RFC 7386 JSON merge patch. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObj(patch)) return structuredClone(patch);
  const out: Record<string, unknown> = isObj(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** RFC 6902 JSON patch (add, remove, replace, test); a failed test or a missing path is a 422, as the server answers. */
export function jsonPatch(doc: unknown, ops: JsonPatchOp[]): unknown {
  const out = structuredClone(doc);
  for (const op of ops) {
    const parts = op.path
      .split('/')
      .slice(1)
      .map((x) => x.replace(/~1/g, '/').replace(/~0/g, '~'));
    const last = parts.pop()!;
    let parent: unknown = out;
    for (const p of parts) parent = Array.isArray(parent) ? parent[Number(p)] : isObj(parent) ? parent[p] : undefined;
    const invalid = (why: string) =>
      new KubeError(
        422,
        'Invalid',
        `the server rejected our request due to an error in our request: ${op.op} ${op.path}: ${why}`,
      );
    if (!isObj(parent) && !Array.isArray(parent)) throw invalid('no such path');
    const has = Array.isArray(parent) ? Number(last) < parent.length : last in parent;
    const cur = Array.isArray(parent) ? parent[Number(last)] : parent[last];
    if (op.op === 'test') {
      if (!has || JSON.stringify(cur) !== JSON.stringify(op.value)) throw invalid('testing value failed');
    } else if (op.op === 'remove' || op.op === 'replace') {
      if (!has) throw invalid('no such path');
      if (op.op === 'remove') {
        if (Array.isArray(parent)) parent.splice(Number(last), 1);
        else delete parent[last];
      } else if (Array.isArray(parent)) parent[Number(last)] = structuredClone(op.value);
      else parent[last] = structuredClone(op.value);
    } else if (Array.isArray(parent)) {
      parent.splice(last === '-' ? parent.length : Number(last), 0, structuredClone(op.value));
    } else parent[last] = structuredClone(op.value);
  }
  return out;
}

/** label selectors as the operator writes them: k=v, k!=v, k, !k, comma-separated */
function labelsMatch(sel: string | undefined, labels: Record<string, string> = {}): boolean {
  if (!sel) return true;
  return sel.split(',').every((term) => {
    const t = term.trim();
    let m: RegExpExecArray | null;
    if ((m = /^([^!=]+)!=(.*)$/.exec(t))) return labels[m[1]!] !== m[2];
    if ((m = /^([^!=]+)==?(.*)$/.exec(t))) return labels[m[1]!] === m[2];
    if (t.startsWith('!')) return !(t.slice(1) in labels);
    return t in labels;
  });
}

/** field selectors: dotted paths, = and != */
function fieldsMatch(sel: string | undefined, obj: unknown): boolean {
  if (!sel) return true;
  return sel.split(',').every((term) => {
    const m = /^([^!=]+)(!=|==?)(.*)$/.exec(term.trim());
    if (!m) return false;
    let v: unknown = obj;
    for (const k of m[1]!.split('.')) v = isObj(v) ? v[k] : undefined;
    const eq = String(v ?? '') === m[3];
    return m[2] === '!=' ? !eq : eq;
  });
}

const rfc3339 = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');
type Watcher = (type: ChangeType, obj: KubeObject) => void;

export interface Write {
  verb: string;
  path: string;
  status: number;
  fieldManager?: string;
  patch?: 'apply' | 'merge' | 'json';
}

export class MemKube extends Kube {
  /** plural -> "namespace/name" -> object */
  private readonly objects = new Map<string, Map<string, KubeObject>>();
  /** object uid -> "manager|subresource|Apply|Update" -> owned fields */
  private readonly managed = new Map<string, Map<string, Map<string, { path: Path; value: unknown }>>>();
  private readonly watchers = new Map<string, Set<Watcher>>();
  private readonly listKeys = CRD_LIST_KEYS;
  private rv = 100;
  private uids = 0;
  /** the server's clock (creationTimestamp, deletionTimestamp) */
  now: () => Date = () => new Date();
  /** every request that changed something or failed to, in order */
  readonly writes: Write[] = [];
  /** called before each request: a row can make the server fail or race (throw, or write something first) */
  before?: (method: string, path: string, opts: RequestOptions) => void | Promise<void>;

  constructor() {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'memkube', server: 'http://memkube.invalid', skipTLSVerify: true }],
      users: [{ name: 'memkube' }],
      contexts: [{ name: 'memkube', cluster: 'memkube', user: 'memkube' }],
      currentContext: 'memkube',
    });
    super(kc, 'memkube');
  }

  override async request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    // like a real client, a request completes in a later turn of the event loop
    await Promise.resolve();
    if (method === 'GET') return this.read(path, opts) as T;
    const fieldManager = typeof opts.query?.fieldManager === 'string' ? opts.query.fieldManager : undefined;
    let status = 200;
    try {
      await this.before?.(method, path, opts);
      return this.write(method, path, opts) as T;
    } catch (e) {
      status = e instanceof KubeError ? e.status : 500;
      throw e;
    } finally {
      const ct = opts.contentType ?? '';
      const patch = ct.includes('apply-patch')
        ? 'apply'
        : ct.includes('merge-patch')
          ? 'merge'
          : ct.includes('json-patch')
            ? 'json'
            : undefined;
      this.writes.push({
        verb: method,
        path,
        status,
        ...(fieldManager ? { fieldManager } : {}),
        ...(patch ? { patch } : {}),
      });
      if (!opts.query?.dryRun) this.onWrite?.(method, path, status);
    }
  }

  // ------------------------------------------------------------ reads

  private bucket(plural: string): Map<string, KubeObject> {
    let b = this.objects.get(plural);
    if (!b) this.objects.set(plural, (b = new Map()));
    return b;
  }

  private read(path: string, opts: RequestOptions): unknown {
    const t = parsePath(path);
    if (t.name) {
      const o = this.bucket(t.plural).get(`${t.namespace ?? ''}/${t.name}`);
      if (!o) throw new KubeError(404, 'NotFound', `GET ${path}: ${t.plural} "${t.name}" not found`);
      return structuredClone(o);
    }
    const q = opts.query ?? {};
    const items = this.select(
      t.plural,
      t.namespace,
      q.labelSelector as string | undefined,
      q.fieldSelector as string | undefined,
    );
    return { metadata: { resourceVersion: String(this.rv) }, items } satisfies KubeList<KubeObject>;
  }

  /** Objects of a kind (copies), optionally in a namespace and by selectors. */
  select(plural: string, namespace?: string, labelSelector?: string, fieldSelector?: string): KubeObject[] {
    return [...this.bucket(plural).values()]
      .filter(
        (o) =>
          (namespace === undefined || o.metadata.namespace === namespace) &&
          labelsMatch(labelSelector, o.metadata.labels) &&
          fieldsMatch(fieldSelector, o),
      )
      .sort((a, b) =>
        (a.metadata.namespace ?? '') + '/' + a.metadata.name < (b.metadata.namespace ?? '') + '/' + b.metadata.name
          ? -1
          : 1,
      )
      .map((o) => structuredClone(o));
  }

  /** One object by API path (a copy), or undefined. */
  peek<T extends KubeObject = KubeObject>(path: string): T | undefined {
    const t = parsePath(path);
    const o = this.bucket(t.plural).get(`${t.namespace ?? ''}/${t.name}`);
    return o ? (structuredClone(o) as T) : undefined;
  }

  /** The managers that own fields of an object, e.g. "sixbed4-operator|status|Apply". */
  managers(path: string): string[] {
    const o = this.peek(path);
    return [...(this.managed.get(o?.metadata.uid ?? '')?.keys() ?? [])]
      .filter((k) => this.managed.get(o!.metadata.uid!)!.get(k)!.size > 0)
      .sort();
  }

  // ------------------------------------------------------------ writes

  private write(method: string, path: string, opts: RequestOptions): unknown {
    const t = parsePath(path);
    const fm = (typeof opts.query?.fieldManager === 'string' ? opts.query.fieldManager : undefined) ?? 'memkube-client';
    const dryRun = !!opts.query?.dryRun;
    if (method === 'POST') {
      if (t.name) throw new KubeError(405, 'MethodNotAllowed', `POST ${path}`);
      return this.doCreate(t, structuredClone(opts.body) as KubeObject, fm, dryRun);
    }
    const key = `${t.namespace ?? ''}/${t.name}`;
    const live = this.bucket(t.plural).get(key);
    if (method === 'DELETE')
      return this.doRemove(
        t,
        path,
        live,
        opts.body as { preconditions?: { uid?: string; resourceVersion?: string } } | undefined,
      );
    if (method === 'PATCH' && opts.contentType?.includes('apply-patch')) {
      const applied = structuredClone(opts.body) as KubeObject;
      if (!live) {
        if (t.sub) throw new KubeError(404, 'NotFound', `PATCH ${path}: ${t.plural} "${t.name}" not found`);
        // apply creates what is missing
        const made = this.doCreate(
          { ...t },
          { ...applied, metadata: { ...applied.metadata, name: t.name! } },
          fm,
          dryRun,
          'Apply',
          applied,
        );
        return made;
      }
      return this.doApply(
        t,
        path,
        live,
        applied,
        fm,
        opts.query?.force === true || opts.query?.force === 'true',
        dryRun,
      );
    }
    if (!live) throw new KubeError(404, 'NotFound', `${method} ${path}: ${t.plural} "${t.name}" not found`);
    let next: unknown;
    let precondition: string | undefined;
    if (method === 'PUT') {
      next = structuredClone(opts.body);
      precondition = (opts.body as KubeObject).metadata?.resourceVersion;
    } else if (method === 'PATCH' && opts.contentType?.includes('merge-patch')) {
      next = mergePatch(live, opts.body);
      precondition = (opts.body as { metadata?: { resourceVersion?: string } })?.metadata?.resourceVersion;
    } else if (method === 'PATCH' && opts.contentType?.includes('json-patch')) {
      next = jsonPatch(live, opts.body as JsonPatchOp[]);
    } else throw new KubeError(415, 'UnsupportedMediaType', `${method} ${path}: ${opts.contentType}`);
    if (precondition !== undefined && precondition !== live.metadata.resourceVersion) {
      throw new KubeError(
        409,
        'Conflict',
        `Operation cannot be fulfilled on ${t.plural} "${t.name}": the object has been modified; please apply your changes to the latest version and try again`,
      );
    }
    return this.doUpdate(t, live, next as KubeObject, fm, 'Update', dryRun);
  }

  private doCreate(
    t: Target,
    obj: KubeObject,
    fm: string,
    dryRun: boolean,
    op: 'Apply' | 'Update' = 'Update',
    applied?: KubeObject,
  ): KubeObject {
    const name = obj.metadata?.name;
    if (!name) throw new KubeError(422, 'Invalid', `POST: metadata.name: Required value`);
    const key = `${t.namespace ?? ''}/${name}`;
    if (this.bucket(t.plural).has(key))
      throw new KubeError(409, 'AlreadyExists', `${t.plural} "${name}" already exists`);
    if (t.kind.namespaced && t.namespace === undefined)
      throw new KubeError(404, 'NotFound', `a namespaced kind needs a namespace`);
    const made: KubeObject = {
      ...obj,
      apiVersion: t.kind.group ? `${t.kind.group}/${t.kind.version}` : t.kind.version,
      kind: t.kind.kind,
      metadata: {
        ...obj.metadata,
        name,
        ...(t.namespace !== undefined ? { namespace: t.namespace } : {}),
        uid: `00000000-0000-4000-8000-${String(++this.uids).padStart(12, '0')}`,
        generation: 1,
        creationTimestamp: rfc3339(this.now()),
      },
    };
    delete made.metadata.deletionTimestamp;
    // a custom resource's status is its subresource's: a create does not set it
    if (t.kind.group === 'sixbed4.io' && t.kind.status) delete made.status;
    if (dryRun) return made;
    made.metadata.resourceVersion = String(++this.rv);
    this.bucket(t.plural).set(key, made);
    const sets = new Map<string, Map<string, { path: Path; value: unknown }>>();
    sets.set(
      `${fm}||${op}`,
      this.fields(t, op === 'Apply' ? this.part(t, applied!, false) : this.part(t, made, false)),
    );
    this.managed.set(made.metadata.uid!, sets);
    this.emit(t.plural, 'add', made);
    return structuredClone(made);
  }

  private lk(t: Target): ListKeys {
    return this.listKeys.get(t.plural) ?? CORE_LIST_KEYS;
  }

  /** The part of an object a request may write: status for /status, everything else otherwise. */
  private part(t: Target, o: KubeObject, status: boolean): Record<string, unknown> {
    if (status) return { status: o.status };
    const { apiVersion: _a, kind: _k, status: _s, ...rest } = o;
    const {
      name: _n,
      namespace: _ns,
      uid: _u,
      resourceVersion: _rv,
      generation: _g,
      creationTimestamp: _c,
      deletionTimestamp: _d,
      managedFields: _m,
      ...meta
    } = rest.metadata ?? {};
    return t.kind.status
      ? { ...rest, metadata: meta }
      : { ...rest, metadata: meta, ...(o.status !== undefined ? { status: o.status } : {}) };
  }

  private fields(t: Target, part: Record<string, unknown>) {
    return fieldSet(part, this.lk(t));
  }

  private doApply(
    t: Target,
    path: string,
    live: KubeObject,
    applied: KubeObject,
    fm: string,
    force: boolean,
    dryRun: boolean,
  ): KubeObject {
    const status = t.sub === 'status';
    const sub = status ? 'status' : '';
    const entryKey = `${fm}|${sub}|Apply`;
    const sets = this.managed.get(live.metadata.uid!) ?? new Map();
    const mine = this.fields(t, this.part(t, applied, status));
    // conflicts: a field another manager set to something else
    for (const [k, f] of mine) {
      for (const [other, owned] of sets) {
        if (other === entryKey) continue;
        const o = owned.get(k);
        if (o && JSON.stringify(o.value) !== JSON.stringify(f.value)) {
          if (!force)
            throw new KubeError(
              409,
              'Conflict',
              `Apply failed with 1 conflict: conflict with "${other.split('|')[0]}": ${k}`,
            );
        }
      }
    }
    const live2 = structuredClone(live) as unknown as Record<string, unknown>;
    const merged = mergeApplied(live2, this.part(t, applied, status), this.lk(t)) as Record<string, unknown>;
    // fields this manager applied before and no longer does, that no other manager owns, go
    const before = sets.get(entryKey) ?? new Map();
    const others = [...sets].filter(([k]) => k !== entryKey).flatMap(([, s]) => [...s.values()].map((f) => f.path));
    // whole list items first (their fields go with them); an item's key fields go only with the item
    const gone = [...before.values()]
      .filter((f) => !mine.has(pathKey(f.path)))
      .sort((a, b) => a.path.length - b.path.length);
    for (const f of gone) {
      if (others.some((o) => isUnder(o, f.path))) continue;
      const last = f.path[f.path.length - 1];
      const parent = f.path[f.path.length - 2];
      if (last && 'key' in last && parent && 'item' in parent && last.key in parent.item) continue;
      removeAt(merged, f.path);
    }
    // doUpdate() keeps what the server sets (name, uid, resourceVersion ...) and, for /status, only the status
    return this.doUpdate(t, live, merged as KubeObject, fm, 'Apply', dryRun, mine);
  }

  /** Stores next in place of live: status subresource rules, generation, rv, finalizers, managed fields, watchers. */
  private doUpdate(
    t: Target,
    live: KubeObject,
    next: KubeObject,
    fm: string,
    op: 'Apply' | 'Update',
    dryRun: boolean,
    applied?: Map<string, { path: Path; value: unknown }>,
  ): KubeObject {
    const status = t.sub === 'status';
    let out: KubeObject;
    if (t.kind.status) {
      out = status
        ? { ...structuredClone(live), ...(next.status !== undefined ? { status: next.status } : {}) }
        : { ...structuredClone(next), ...(live.status !== undefined ? { status: structuredClone(live.status) } : {}) };
      if (status && next.status === undefined) delete out.status;
      if (!status && live.status === undefined) delete out.status;
    } else out = structuredClone(next);
    // what the server sets stays the server's
    out.apiVersion = live.apiVersion;
    out.kind = live.kind;
    out.metadata = {
      ...out.metadata,
      name: live.metadata.name!,
      uid: live.metadata.uid!,
      creationTimestamp: live.metadata.creationTimestamp!,
      resourceVersion: live.metadata.resourceVersion!,
      generation: live.metadata.generation ?? 1,
      ...(live.metadata.namespace !== undefined ? { namespace: live.metadata.namespace } : {}),
      ...(live.metadata.deletionTimestamp ? { deletionTimestamp: live.metadata.deletionTimestamp } : {}),
    };
    if (!live.metadata.deletionTimestamp) delete out.metadata.deletionTimestamp;
    if (live.metadata.deletionTimestamp) {
      // no new finalizers on an object being deleted
      const added = (out.metadata.finalizers ?? []).filter((f) => !(live.metadata.finalizers ?? []).includes(f));
      if (added.length)
        throw new KubeError(
          422,
          'Forbidden',
          `no new finalizers can be added if the object is being deleted, found new finalizers ${JSON.stringify(added)}`,
        );
    }
    const { metadata: _m1, status: _s1, ...spec1 } = live;
    const { metadata: _m2, status: _s2, ...spec2 } = out;
    if (JSON.stringify(spec1) !== JSON.stringify(spec2)) out.metadata.generation = (live.metadata.generation ?? 1) + 1;
    if (dryRun) return out;
    if (JSON.stringify(out) === JSON.stringify(live)) return structuredClone(live); // a no-op write changes nothing, not even the resourceVersion
    out.metadata.resourceVersion = String(++this.rv);
    // managed fields: an Apply replaces its manager's set; an Update takes the fields it changed from everyone else
    const sets = this.managed.get(live.metadata.uid!) ?? new Map<string, Map<string, { path: Path; value: unknown }>>();
    const sub = status ? 'status' : '';
    const oldF = this.fields(t, this.part(t, live, status));
    const newF = this.fields(t, this.part(t, out, status));
    const changed = [...newF]
      .filter(([k, f]) => JSON.stringify(oldF.get(k)?.value) !== JSON.stringify(f.value))
      .map(([k]) => k);
    const entryKey = `${fm}|${sub}|${op}`;
    for (const [k, s] of sets) {
      if (k === entryKey) continue;
      for (const c of changed) s.delete(c);
      for (const c of [...s.keys()]) if (oldF.has(c) && !newF.has(c)) s.delete(c);
    }
    if (op === 'Apply') sets.set(entryKey, applied!);
    else {
      const s = sets.get(entryKey) ?? new Map();
      for (const c of changed) s.set(c, newF.get(c)!);
      sets.set(entryKey, s);
    }
    this.managed.set(live.metadata.uid!, sets);
    const key = `${live.metadata.namespace ?? ''}/${live.metadata.name}`;
    if (out.metadata.deletionTimestamp && !(out.metadata.finalizers ?? []).length) {
      this.bucket(t.plural).delete(key);
      this.emit(t.plural, 'delete', out);
      this.collectGarbage();
      return structuredClone(out);
    }
    this.bucket(t.plural).set(key, out);
    this.emit(t.plural, 'update', out);
    return structuredClone(out);
  }

  private doRemove(
    t: Target,
    path: string,
    live: KubeObject | undefined,
    body?: { preconditions?: { uid?: string; resourceVersion?: string } },
  ): KubeObject {
    if (!live) throw new KubeError(404, 'NotFound', `DELETE ${path}: ${t.plural} "${t.name}" not found`);
    const pre = body?.preconditions;
    if (
      (pre?.uid && pre.uid !== live.metadata.uid) ||
      (pre?.resourceVersion && pre.resourceVersion !== live.metadata.resourceVersion)
    ) {
      throw new KubeError(
        409,
        'Conflict',
        `Operation cannot be fulfilled on ${t.plural} "${t.name}": Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${live.metadata.uid}`,
      );
    }
    const key = `${live.metadata.namespace ?? ''}/${live.metadata.name}`;
    if ((live.metadata.finalizers ?? []).length) {
      if (live.metadata.deletionTimestamp) return structuredClone(live);
      const out = structuredClone(live);
      out.metadata.deletionTimestamp = rfc3339(this.now());
      out.metadata.generation = (live.metadata.generation ?? 1) + 1;
      out.metadata.resourceVersion = String(++this.rv);
      this.bucket(t.plural).set(key, out);
      this.emit(t.plural, 'update', out);
      return structuredClone(out);
    }
    this.bucket(t.plural).delete(key);
    this.managed.delete(live.metadata.uid!);
    this.emit(t.plural, 'delete', live);
    this.collectGarbage();
    return structuredClone(live);
  }

  /** The garbage collector: objects all of whose owners are gone go too (background cascade; a finalizer holds one). */
  private collectGarbage(): void {
    for (let more = true; more;) {
      more = false;
      const uids = new Set<string>();
      for (const b of this.objects.values()) for (const o of b.values()) uids.add(o.metadata.uid!);
      for (const [plural, b] of this.objects) {
        for (const o of [...b.values()]) {
          const owners = o.metadata.ownerReferences ?? [];
          // (gone already if a nested collection took it)
          if (
            !owners.length ||
            owners.some((r) => uids.has(r.uid)) ||
            o.metadata.deletionTimestamp ||
            !b.has(`${o.metadata.namespace ?? ''}/${o.metadata.name}`)
          )
            continue;
          this.doRemove(
            {
              plural,
              kind: KINDS[plural]!,
              name: o.metadata.name!,
              ...(o.metadata.namespace ? { namespace: o.metadata.namespace } : {}),
            },
            'gc',
            o,
          );
          more = true;
        }
      }
    }
  }

  // ------------------------------------------------------------ watches

  private emit(plural: string, type: ChangeType, obj: KubeObject): void {
    for (const w of this.watchers.get(plural) ?? []) w(type, structuredClone(obj));
  }

  /** Subscribes to changes of a kind; returns the unsubscribe. */
  watch(plural: string, w: Watcher): () => void {
    let s = this.watchers.get(plural);
    if (!s) this.watchers.set(plural, (s = new Set()));
    s.add(w);
    return () => s.delete(w);
  }

  /** A cache of what path lists, always up to date (an informer whose watch has no lag). */
  cache<T extends KubeObject>(path: string, selectors: { labelSelector?: string; fieldSelector?: string } = {}) {
    const t = parsePath(path);
    return {
      get: (name: string, namespace?: string): T | undefined =>
        this.select(t.plural, namespace ?? t.namespace, selectors.labelSelector, selectors.fieldSelector).find(
          (o) => o.metadata.name === name,
        ) as T | undefined,
      list: (namespace?: string): readonly T[] =>
        this.select(t.plural, namespace ?? t.namespace, selectors.labelSelector, selectors.fieldSelector) as T[],
    };
  }

  /** An informer on this server, for the controllers' informer seam (kube/informer.ts InformerFactory). */
  informer<T extends KubeObject>(path: string, opts: InformerOptions<T>): Watched<T> {
    const t = parsePath(path);
    const cache = this.cache<T>(path, opts);
    let stop: (() => void) | undefined;
    const inScope = (o: KubeObject) =>
      (t.namespace === undefined || o.metadata.namespace === t.namespace) &&
      labelsMatch(opts.labelSelector, o.metadata.labels) &&
      fieldsMatch(opts.fieldSelector, o);
    return {
      synced: Promise.resolve(),
      start: async () => {
        stop = this.watch(t.plural, (type, o) => {
          // delivered a turn later, as a watch event is
          if (inScope(o))
            queueMicrotask(() => {
              if (stop) opts.onChange(type, o as T);
            });
        });
        for (const o of cache.list()) opts.onChange('add', o);
      },
      stop: async () => {
        stop?.();
        stop = undefined;
      },
      get: cache.get,
      list: cache.list,
    };
  }
}
