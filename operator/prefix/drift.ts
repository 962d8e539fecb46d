// Does an object on the server still carry everything the operator rendered?
import { isObj } from '../../lib/guards.js';
// "Covers" means: every field of the desired object is present in the actual
// one with the same value. Fields the server defaults (imagePullPolicy ...),
// fields others add (a rollout-restart annotation, an extra label) and status
// are not drift; a changed or removed field we set is. Lists whose items have
// a name (containers, env, volumes, ports ...) are matched by name, like
// server-side apply merges them; other lists (args, capabilities) must be equal.

/** Path of the first desired field the actual object lacks or differs in, or undefined when it covers desired. */
export function firstDrift(actual: unknown, desired: unknown, path = ''): string | undefined {
  if (desired === null || desired === undefined) return undefined;
  if (Array.isArray(desired)) {
    if (desired.length === 0)
      return actual === undefined || actual === null || (Array.isArray(actual) && actual.length === 0)
        ? undefined
        : path || '/';
    if (!Array.isArray(actual)) return path || '/';
    const keyed = desired.every((d) => isObj(d) && listKey(d) !== undefined);
    if (keyed) {
      for (const d of desired as Record<string, unknown>[]) {
        const k = listKey(d)!;
        const a = (actual as unknown[]).find((x) => isObj(x) && listKey(x) === k);
        if (a === undefined) return `${path}[${k}]`;
        const sub = firstDrift(a, d, `${path}[${k}]`);
        if (sub !== undefined) return sub;
      }
      return undefined;
    }
    if (actual.length !== desired.length) return path || '/';
    for (let i = 0; i < desired.length; i++) {
      const sub = firstDrift(actual[i], desired[i], `${path}[${i}]`);
      if (sub !== undefined) return sub;
    }
    return undefined;
  }
  if (isObj(desired)) {
    if (Object.keys(desired).length === 0) return actual === undefined || isObj(actual) ? undefined : path || '/';
    if (!isObj(actual)) return path || '/';
    for (const [k, v] of Object.entries(desired)) {
      const sub = firstDrift(actual[k], v, `${path}.${k}`);
      if (sub !== undefined) return sub;
    }
    return undefined;
  }
  return actual === desired ? undefined : path || '/';
}

export function covers(actual: unknown, desired: unknown): boolean {
  return firstDrift(actual, desired) === undefined;
}

/** The merge key of a list item: name, else containerPort/protocol (ports), else uid (ownerReferences). */
function listKey(o: Record<string, unknown>): string | undefined {
  if (typeof o.name === 'string' && o.containerPort === undefined) return o.name;
  if (typeof o.containerPort === 'number')
    return `${o.containerPort}/${typeof o.protocol === 'string' ? o.protocol : 'TCP'}`;
  if (typeof o.uid === 'string') return o.uid;
  return undefined;
}
