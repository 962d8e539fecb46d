// Server-side apply as the in-memory API server (memkube.ts) does it: field
import { isObj } from '../../lib/guards.js';
// sets per manager, the merge of an applied configuration into the live
// object, and the removal of fields a manager applied before and no longer
// applies (unless another manager owns them). Lists are atomic unless the
// schema calls them maps (x-kubernetes-list-map-keys, read from the CRDs);
// that is what lets the prefix reconciler and the slice allocator apply their
// own status fields side by side, and what makes an agent-owned status entry
// outlive the operator's apply (reconcile.ts removes it by JSON patch).

/** One step of a path: a map key, or the item of a map-list with these key values. */
export type Seg = { key: string } | { item: Record<string, unknown> };
export type Path = Seg[];

/** dotted schema path (no list items) -> the map keys of the list there */
export type ListKeys = ReadonlyMap<string, readonly string[]>;

const schemaPath = (p: Path): string =>
  p
    .filter((s): s is { key: string } => 'key' in s)
    .map((s) => s.key)
    .join('.');
export const pathKey = (p: Path): string => JSON.stringify(p);

function itemKey(item: unknown, keys: readonly string[]): Record<string, unknown> | undefined {
  if (!isObj(item)) return undefined;
  const out: Record<string, unknown> = {};
  for (const k of keys) out[k] = item[k];
  return out;
}

const sameKey = (a: Record<string, unknown>, b: Record<string, unknown>) => JSON.stringify(a) === JSON.stringify(b);

/** Leaf paths (scalars, atomic lists, empty maps) and map-list items of v, with their values. */
export function fieldSet(v: unknown, lk: ListKeys, base: Path = []): Map<string, { path: Path; value: unknown }> {
  const out = new Map<string, { path: Path; value: unknown }>();
  const walk = (x: unknown, p: Path) => {
    if (isObj(x)) {
      const entries = Object.entries(x);
      if (entries.length === 0) out.set(pathKey(p), { path: p, value: {} });
      for (const [k, c] of entries) walk(c, [...p, { key: k }]);
      return;
    }
    const keys = Array.isArray(x) ? lk.get(schemaPath(p)) : undefined;
    if (Array.isArray(x) && keys) {
      for (const item of x) {
        const key = itemKey(item, keys);
        if (!key) continue;
        const ip: Path = [...p, { item: key }];
        out.set(pathKey(ip), { path: ip, value: key });
        walk(item, ip);
      }
      return;
    }
    out.set(pathKey(p), { path: p, value: x });
  };
  walk(v, base);
  return out;
}

/** The applied configuration merged into live (maps and map-lists merge; everything else is replaced). */
export function mergeApplied(live: unknown, applied: unknown, lk: ListKeys, p: Path = []): unknown {
  if (isObj(applied)) {
    const out: Record<string, unknown> = isObj(live) ? { ...live } : {};
    for (const [k, v] of Object.entries(applied)) out[k] = mergeApplied(out[k], v, lk, [...p, { key: k }]);
    return out;
  }
  const keys = Array.isArray(applied) ? lk.get(schemaPath(p)) : undefined;
  if (Array.isArray(applied) && keys) {
    const out = Array.isArray(live) ? [...(live as unknown[])] : [];
    for (const item of applied) {
      const key = itemKey(item, keys)!;
      const i = out.findIndex((x) => {
        const k = itemKey(x, keys);
        return k !== undefined && sameKey(k, key);
      });
      if (i >= 0) out[i] = mergeApplied(out[i], item, lk, [...p, { item: key }]);
      else out.push(structuredClone(item));
    }
    return out;
  }
  return structuredClone(applied);
}

/** Removes the field at path from obj (in place); an item path removes the whole list item. */
export function removeAt(obj: unknown, path: Path): void {
  if (path.length === 0) return;
  const parent = getAt(obj, path.slice(0, -1));
  const last = path[path.length - 1]!;
  if ('key' in last) {
    if (isObj(parent)) delete parent[last.key];
    return;
  }
  if (Array.isArray(parent)) {
    const i = parent.findIndex(
      (x) => isObj(x) && Object.entries(last.item).every(([k, v]) => JSON.stringify(x[k]) === JSON.stringify(v)),
    );
    if (i >= 0) parent.splice(i, 1);
  }
}

function getAt(obj: unknown, path: Path): unknown {
  let cur = obj;
  for (const s of path) {
    if ('key' in s) cur = isObj(cur) ? cur[s.key] : undefined;
    else
      cur = Array.isArray(cur)
        ? cur.find(
            (x) => isObj(x) && Object.entries(s.item).every(([k, v]) => JSON.stringify(x[k]) === JSON.stringify(v)),
          )
        : undefined;
  }
  return cur;
}

/** True when b lies at or under a. */
export function isUnder(b: Path, a: Path): boolean {
  if (b.length < a.length) return false;
  return a.every((s, i) => JSON.stringify(s) === JSON.stringify(b[i]));
}
