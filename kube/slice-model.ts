// Arithmetic and names of /112 slices (issue 6). Pure.
//
// A node serves a /64 of a prefix. Its port-0 addresses <node /64>:A:B:0:x
// can never be a 6bed4 peer's (a peer's port word is never 0), so the /64
// holds 2^32 /112 slices free for local use:
//
//   group  1  2  3  4 | 5 | 6 | 7 | 8
//          node /64   | A | B | 0 | host (the pod's address is ::1)
//
// A namespace claims one word A of the prefix (the same A in every node's
// /64); each of its pods gets one word B in the /64 of the node it runs on.
// A = 0 is never handed out: <node /64>:0:0:0::/112 holds the host's own
// local addresses (::11 ...), and a slice that contains any configured local
// address is skipped as well.
//
// Names: a SixBed4Slice is named <prefix>-<index>-<A>-<B> (index: the node's
// /64 inside the prefix; four lowercase hex digits each, in address order), a
// SixBed4Range <prefix>-<A>. The name IS the claim: the API server refuses a
// second object of the same name, which is what makes allocation race-free.
// Prefix names have at most 48 characters (CRD rule), so names stay <= 63.
import { fnv1a } from './hash.js';
import { formatIPv6, inPrefix, parsePrefix, type Prefix } from '../lib/ip.js';
import {
  DEFAULT_NAMESPACE_LABEL,
  DEFAULT_POD_ANNOTATION,
  ADDRESS_ANNOTATION,
  ASSIGNED_SLICE_ANNOTATION,
} from './api.js';
import type { LocalAddressSpec, Problem } from './prefix-spec.js';
import { isObj } from '../lib/guards.js';

export const SLICE_LENGTH = 112;
export const WORD_MAX = 0xffff;

export interface WordRange {
  first: number;
  last: number;
}

export interface CheckedSlices {
  enabled: boolean;
  /** label key by which a namespace opts in (value: the prefix's name) */
  namespaceLabel: string;
  /** annotation key by which a pod asks (value "true") */
  podAnnotation: string;
  namespaceWords: WordRange;
  podWords: WordRange;
  /** what may reach a pod at its slice address (agent/slices/inbound.ts) */
  inbound: 'filtered' | 'open';
}

/** A Kubernetes label or annotation key: [prefix/]name. */
export function isQualifiedName(key: string): boolean {
  const i = key.lastIndexOf('/');
  const name = i < 0 ? key : key.slice(i + 1);
  const prefix = i < 0 ? undefined : key.slice(0, i);
  if (!/^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/.test(name)) return false;
  if (prefix === undefined) return true;
  return prefix.length <= 253 && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/.test(prefix);
}

function words(raw: unknown, what: string, min: number, problems: Problem[]): WordRange {
  const dflt = { first: min, last: WORD_MAX };
  if (raw === undefined) return dflt;
  if (!isObj(raw)) {
    problems.push({ reason: 'InvalidSlices', message: `spec.slices.${what} must be an object with first and last` });
    return dflt;
  }
  const get = (k: 'first' | 'last', d: number) => {
    const v = raw[k];
    if (v === undefined) return d;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > WORD_MAX) {
      problems.push({
        reason: 'InvalidSlices',
        message: `spec.slices.${what}.${k} ${JSON.stringify(v)} is not a word from ${min} to ${WORD_MAX}`,
      });
      return d;
    }
    return v;
  };
  const r = { first: get('first', min), last: get('last', WORD_MAX) };
  if (r.first > r.last) {
    problems.push({
      reason: 'InvalidSlices',
      message: `spec.slices.${what}: first ${r.first} is greater than last ${r.last}`,
    });
    return dflt;
  }
  return r;
}

/**
 * spec.slices with defaults. CEL refuses most mistakes first; what is left
 * (an object older than the CRD's rules) becomes problems, and a spec whose
 * keys are unusable hands out nothing (enabled false).
 */
export function checkSlices(raw: unknown): { slices: CheckedSlices; problems: Problem[] } {
  const problems: Problem[] = [];
  const off: CheckedSlices = {
    enabled: false,
    namespaceLabel: DEFAULT_NAMESPACE_LABEL,
    podAnnotation: DEFAULT_POD_ANNOTATION,
    namespaceWords: { first: 1, last: WORD_MAX },
    podWords: { first: 0, last: WORD_MAX },
    inbound: 'filtered',
  };
  if (raw === undefined) return { slices: off, problems };
  if (!isObj(raw))
    return { slices: off, problems: [{ reason: 'InvalidSlices', message: 'spec.slices must be an object' }] };
  const enabled = raw.enabled === true;
  const key = (k: 'namespaceLabel' | 'podAnnotation', d: string): string | undefined => {
    const v = raw[k];
    if (v === undefined) return d;
    if (typeof v !== 'string' || !isQualifiedName(v)) {
      problems.push({
        reason: 'InvalidSlices',
        message: `spec.slices.${k} ${JSON.stringify(v)} is not a valid ${k === 'podAnnotation' ? 'annotation' : 'label'} key`,
      });
      return undefined;
    }
    return v;
  };
  const namespaceLabel = key('namespaceLabel', DEFAULT_NAMESPACE_LABEL);
  let podAnnotation = key('podAnnotation', DEFAULT_POD_ANNOTATION);
  if (podAnnotation === ASSIGNED_SLICE_ANNOTATION || podAnnotation === ADDRESS_ANNOTATION) {
    problems.push({
      reason: 'InvalidSlices',
      message: `spec.slices.podAnnotation ${podAnnotation} is an annotation the operator writes itself`,
    });
    podAnnotation = undefined;
  }
  const namespaceWords = words(raw.namespaceWords, 'namespaceWords', 1, problems);
  const podWords = words(raw.podWords, 'podWords', 0, problems);
  // An unknown value filters: the safe side for a globally routed address.
  let inbound: 'filtered' | 'open' = 'filtered';
  if (raw.inbound === 'Open') inbound = 'open';
  else if (raw.inbound !== undefined && raw.inbound !== 'Filtered') {
    problems.push({
      reason: 'InvalidSlices',
      message: `spec.slices.inbound ${JSON.stringify(raw.inbound)} is neither Filtered nor Open (filtering)`,
    });
  }
  if (namespaceLabel === undefined || podAnnotation === undefined) return { slices: off, problems };
  return { slices: { enabled, namespaceLabel, podAnnotation, namespaceWords, podWords, inbound }, problems };
}

export const hex4 = (n: number): string => n.toString(16).padStart(4, '0');

/** Name of the SixBed4Slice that claims (index, A, B) of a prefix. */
export function sliceName(prefixName: string, index: number, a: number, b: number): string {
  return `${prefixName}-${hex4(index)}-${hex4(a)}-${hex4(b)}`;
}

/** Name of the SixBed4Range that claims word A of a prefix. */
export function rangeName(prefixName: string, a: number): string {
  return `${prefixName}-${hex4(a)}`;
}

/** The 16 bytes of slice (A, B) of a node's /64. */
export function sliceBytes(node64: Prefix, a: number, b: number): Uint8Array {
  const out = new Uint8Array(16);
  out.set(node64.bytes.subarray(0, 8));
  out[8] = a >> 8;
  out[9] = a & 0xff;
  out[10] = b >> 8;
  out[11] = b & 0xff;
  return out;
}

/** Canonical text of a slice, e.g. 2001:db8:9:10:5:1::/112 (the form the agent uses too). */
export function sliceText(node64: Prefix, a: number, b: number): string {
  return `${formatIPv6(sliceBytes(node64, a, b))}/${SLICE_LENGTH}`;
}

/** The pod's address: the first of the slice, <node /64>:A:B:0:1. */
export function sliceAddress(node64: Prefix, a: number, b: number): string {
  const x = sliceBytes(node64, a, b);
  x[15] = 1;
  return formatIPv6(x);
}

/** Words of a slice's text, or undefined unless it is a /112 with port word 0. */
export function sliceWords(text: string): { node64: Prefix; a: number; b: number } | undefined {
  let p: Prefix;
  try {
    p = parsePrefix(text);
  } catch {
    return undefined;
  }
  if (p.length !== SLICE_LENGTH || p.bytes[12] !== 0 || p.bytes[13] !== 0) return undefined;
  const node = new Uint8Array(16);
  node.set(p.bytes.subarray(0, 8));
  return {
    node64: { bytes: node, length: 64, text: `${formatIPv6(node)}/64` },
    a: (p.bytes[8]! << 8) | p.bytes[9]!,
    b: (p.bytes[10]! << 8) | p.bytes[11]!,
  };
}

/**
 * The range of word A as a pattern for people: the prefix's first three
 * groups, the node's group (`*` when the prefix is split among nodes), A, `*`
 * for B, the port word 0, and 0 for the host part: 2001:db8:9:*:5:*:0:0/112.
 */
export function rangePattern(prefix: Prefix, a: number): string {
  const g = (i: number) => ((prefix.bytes[2 * i]! << 8) | prefix.bytes[2 * i + 1]!).toString(16);
  const node = prefix.length >= 64 ? g(3) : '*';
  return `${g(0)}:${g(1)}:${g(2)}:${node}:${a.toString(16)}:*:0:0/${SLICE_LENGTH}`;
}

/** Key of (A, B) in a set of reserved slices. */
export const sliceKey = (a: number, b: number): number => a * 0x10000 + b;

/**
 * Slices of a node's /64 that hold a configured local address: per-node
 * addresses (::x, in every /64) and full addresses inside this /64. A local
 * address has port word 0 (CRD rule), so it always lies in some (A, B).
 */
export function reservedSlices(node64: Prefix, local: readonly LocalAddressSpec[]): Set<number> {
  const out = new Set<number>();
  for (const l of local) {
    if (!l.perNode && !inPrefix(node64, l.bytes)) continue;
    out.add(sliceKey((l.bytes[8]! << 8) | l.bytes[9]!, (l.bytes[10]! << 8) | l.bytes[11]!));
  }
  return out;
}

/** Whether (A, B) may never be handed out: A = 0 (the host's own range) or a local address inside. */
export function isReserved(a: number, b: number, reserved: ReadonlySet<number>): boolean {
  return a === 0 || reserved.has(sliceKey(a, b));
}

export { fnv1a };

/**
 * First choice of a word in a range for a key (a namespace's or pod's name):
 * deterministic, so that two allocators racing for the same object try the
 * same word first (and the loser adopts the winner's object), and a pod
 * re-created with the same name (a StatefulSet's web-0) gets its address back
 * when it lands on the same node and the word is still free.
 */
export function preferredWord(key: string, range: WordRange): number {
  return range.first + (fnv1a(key) % (range.last - range.first + 1));
}

/** The first word from `preferred` upwards (wrapping inside range) that is not unusable, or undefined when none is left. */
export function chooseWord(preferred: number, range: WordRange, unusable: (w: number) => boolean): number | undefined {
  const size = range.last - range.first + 1;
  const start = Math.min(Math.max(preferred, range.first), range.last) - range.first;
  for (let k = 0; k < size; k++) {
    const w = range.first + ((start + k) % size);
    if (!unusable(w)) return w;
  }
  return undefined;
}

/** Words of a range that are usable at all (for messages about exhaustion). */
export function rangeSize(range: WordRange): number {
  return range.last - range.first + 1;
}
