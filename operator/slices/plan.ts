// What the slice allocator should do about one namespace, from what the
// caches hold. Pure: the API layer (allocator.ts) carries the plan out and
// turns AlreadyExists into "taken, try the next word".
//
//   * which SixBed4Prefix the namespace takes slices from (its label), or why none;
//   * which SixBed4Slices of its pods stay and which are released, and why;
//   * which of its SixBed4Range claims is its word A, which are surplus;
//   * which pods need a new slice, and the problems (Events, status reasons).
//
// Validity of a slice is checked against everything it depends on, so any
// change (pod gone or no longer asking, node no longer serving, prefix
// changed, a local address configured inside it, its word claimed by another
// namespace) releases it, and the pod, if it still asks, gets a new one.
import type { Prefix } from '../../lib/ip.js';
import { DEFAULT_NAMESPACE_LABEL, type SixBed4Range, type SixBed4Slice } from '../../kube/api.js';
import {
  isReserved,
  rangeName,
  rangePattern,
  reservedSlices,
  sliceAddress,
  sliceName,
  sliceText,
  sliceWords,
  type CheckedSlices,
} from '../../kube/slice-model.js';
import type { LocalAddressSpec } from '../../kube/prefix-spec.js';

/** A prefix that hands out slices now (enabled, valid, not being deleted). */
export interface SlicingPrefix {
  name: string;
  prefix: Prefix;
  slices: CheckedSlices;
  local: readonly LocalAddressSpec[];
  /** nodes that serve, with their /64 and its index in the prefix (only /64s already recorded) */
  serving: ReadonlyMap<string, { subnet: Prefix; index: number }>;
  /** nodes whose /64 is planned but not recorded yet: their pods wait (no Event) */
  pendingNodes?: ReadonlySet<string>;
  /** why a node serves no /64, for the message to the pod */
  notServing: (node: string) => string;
}

/** Any SixBed4Prefix, for messages about labels that name it. */
export interface PrefixRef {
  name: string;
  namespaceLabel: string;
  podAnnotation: string;
  /** why it hands out no slices, when it does not */
  why?: string;
}

export interface NamespaceInfo {
  name: string;
  uid: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  deleting: boolean;
}

export interface PodInfo {
  name: string;
  uid: string;
  node?: string;
  phase?: string;
  hostNetwork: boolean;
  deleting: boolean;
  annotations: Record<string, string>;
}

export interface SliceProblem {
  kind: 'Namespace' | 'Pod';
  /** name of the namespace or pod */
  name: string;
  reason: string;
  message: string;
}

export interface NamespaceInput {
  name: string;
  /** undefined: the Namespace is gone (the garbage collector releases what it owned) */
  ns: NamespaceInfo | undefined;
  slicing: ReadonlyMap<string, SlicingPrefix>;
  prefixes: readonly PrefixRef[];
  pods: readonly PodInfo[];
  /** SixBed4Slices whose pod is in this namespace */
  slices: readonly SixBed4Slice[];
  /** SixBed4Ranges held by a namespace of this name */
  ranges: readonly SixBed4Range[];
}

export interface Candidate {
  pod: PodInfo;
  node: string;
  subnet: Prefix;
  index: number;
}

export interface NamespacePlan {
  /** the prefix the namespace takes slices from */
  target?: SlicingPrefix;
  /** slices that stay, by pod UID */
  keep: Map<string, SixBed4Slice>;
  /**
   * slices to delete. check: the reason may be the cache lagging behind
   * another allocator's writes (pod: the pod is missing; range: the word's
   * claim is missing), so the API layer asks the API server first.
   */
  release: { slice: SixBed4Slice; why: string; check?: 'pod' | 'range' }[];
  /** the namespace's word A of target (its lowest valid claim), if it has one */
  word?: number;
  /** no claim yet: the API layer claims a word, then allocates for candidates */
  needWord: boolean;
  /** claims to delete (none of the namespace's slices remain in their word) */
  releaseRanges: { range: SixBed4Range; why: string }[];
  /** pods that ask, run on a serving node, and have no slice */
  candidates: Candidate[];
  /** pods that ask but are not scheduled yet, or whose node's /64 is still being recorded (no Event, counted as pending) */
  waiting: string[];
  problems: SliceProblem[];
}

const TERMINAL = new Set(['Succeeded', 'Failed']);

/** How a pod's annotation reads: asks, does not ask, or a value we do not understand. */
export function podAsks(pod: PodInfo, key: string): 'yes' | 'no' | 'invalid' {
  const v = pod.annotations[key];
  if (v === undefined || v === 'false') return 'no';
  return v === 'true' ? 'yes' : 'invalid';
}

/** The prefix a namespace opted in to (or why none), from its labels. */
export function targetPrefix(
  ns: NamespaceInfo,
  slicing: ReadonlyMap<string, SlicingPrefix>,
  prefixes: readonly PrefixRef[],
): { target?: SlicingPrefix; problems: SliceProblem[] } {
  const keys = [
    ...new Set([
      DEFAULT_NAMESPACE_LABEL,
      ...prefixes.map((p) => p.namespaceLabel),
      ...[...slicing.values()].map((p) => p.slices.namespaceLabel),
    ]),
  ].sort();
  const found: SlicingPrefix[] = [];
  const wrong: SliceProblem[] = [];
  const bad = (reason: string, message: string) => wrong.push({ kind: 'Namespace', name: ns.name, reason, message });
  for (const key of keys) {
    const v = ns.labels[key];
    if (v === undefined) continue;
    const p = slicing.get(v);
    if (p && p.slices.namespaceLabel === key) {
      found.push(p);
      continue;
    }
    const ref = prefixes.find((r) => r.name === v);
    if (!ref) {
      // the default key is ours; other keys only matter when a prefix uses them
      bad('UnknownPrefix', `label ${key}=${v} names no SixBed4Prefix; the namespace gets no slices`);
    } else if (ref.why) {
      bad('SlicesDisabled', `SixBed4Prefix ${v} hands out no slices (${ref.why}); the namespace gets none`);
    } else if (ref.namespaceLabel !== key) {
      bad('WrongLabel', `SixBed4Prefix ${v} takes namespaces by the label ${ref.namespaceLabel}, not ${key}`);
    }
  }
  found.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  if (found.length > 1) {
    return {
      target: found[0]!,
      problems: [
        {
          kind: 'Namespace',
          name: ns.name,
          reason: 'MultiplePrefixes',
          message: `the namespace opts in to ${found.map((p) => p.name).join(', ')}; a pod has one slice, so it takes slices from ${found[0]!.name} only`,
        },
      ],
    };
  }
  return found.length ? { target: found[0]!, problems: [] } : { problems: wrong };
}

/** Why a slice must go, or undefined when it stays (not counting the one-slice-per-pod rule). */
export function judgeSlice(
  s: SixBed4Slice,
  inp: NamespaceInput,
  target: SlicingPrefix | undefined,
  heldWords: ReadonlySet<number>,
): { why: string; check?: 'pod' | 'range' } | undefined {
  const spec = s.spec;
  const w = typeof spec?.slice === 'string' ? sliceWords(spec.slice) : undefined;
  if (!w) return { why: `its spec.slice ${JSON.stringify(spec?.slice)} is not a port-0 /112` };
  const p = inp.slicing.get(spec.prefix);
  if (!p) return { why: `SixBed4Prefix ${spec.prefix} hands out no slices now` };
  if (p !== target) return { why: `namespace ${inp.name} no longer takes slices from ${p.name}` };
  const srv = p.serving.get(spec.node);
  if (!srv) return { why: `node ${spec.node} serves no /64 of ${p.name} now` };
  if (w.node64.text !== srv.subnet.text)
    return { why: `it is not inside ${srv.subnet.text}, the /64 node ${spec.node} serves now` };
  const name = sliceName(p.name, srv.index, w.a, w.b);
  if (s.metadata.name !== name) return { why: `its name does not match its slice (that slice's object is ${name})` };
  if (spec.slice !== sliceText(srv.subnet, w.a, w.b) || spec.address !== sliceAddress(srv.subnet, w.a, w.b)) {
    return { why: 'its slice or address is not in the canonical form the operator writes' };
  }
  if (isReserved(w.a, w.b, reservedSlices(srv.subnet, p.local)))
    return { why: `a local address of ${p.name} lies inside it` };
  const pod = inp.pods.find((x) => x.name === spec.pod?.name);
  if (!pod || pod.uid !== spec.pod.uid)
    return { why: `pod ${inp.name}/${spec.pod?.name} (${spec.pod?.uid}) is gone`, check: 'pod' };
  if (pod.phase && TERMINAL.has(pod.phase)) return { why: `pod ${inp.name}/${pod.name} has finished (${pod.phase})` };
  if (podAsks(pod, p.slices.podAnnotation) !== 'yes')
    return { why: `pod ${inp.name}/${pod.name} no longer asks for a slice` };
  if (pod.node !== spec.node)
    return { why: `pod ${inp.name}/${pod.name} runs on ${pod.node ?? 'no node'}, not ${spec.node}` };
  if (!heldWords.has(w.a))
    return { why: `namespace ${inp.name} does not hold word ${w.a} of ${p.name}`, check: 'range' };
  return undefined;
}

export function planNamespace(inp: NamespaceInput): NamespacePlan {
  const plan: NamespacePlan = {
    keep: new Map(),
    release: [],
    needWord: false,
    releaseRanges: [],
    candidates: [],
    waiting: [],
    problems: [],
  };
  const ns = inp.ns;
  // A namespace that is gone: its SixBed4Ranges and SixBed4Slices are owned
  // by it, so the garbage collector removes them; nothing to decide here.
  if (!ns) return plan;

  const t = targetPrefix(ns, inp.slicing, inp.prefixes);
  plan.problems.push(...t.problems);
  const target = t.target;
  if (target) plan.target = target;

  const held = heldWords(inp.ranges, ns, target);
  const words = [...held].sort((a, b) => a - b);
  if (target && words.length) plan.word = words[0]!;
  judgeSlices(inp, target, held, plan);
  plan.releaseRanges.push(...rangesToRelease(inp.ranges, ns, target, plan.word, plan.keep));

  if (!target) {
    plan.problems.push(...podsNotOptedIn(inp, ns));
    return plan;
  }
  if (!ns.deleting && plan.word === undefined) plan.needWord = true;
  for (const pod of [...inp.pods].sort((a, b) => (a.name < b.name ? -1 : 1))) placePod(pod, ns, target, plan);
  return plan;
}

/** The words the namespace validly claims of the target: claims named after their word, of this namespace's UID. */
function heldWords(ranges: readonly SixBed4Range[], ns: NamespaceInfo, target: SlicingPrefix | undefined): Set<number> {
  const validClaim = (r: SixBed4Range) =>
    r.spec?.namespace?.uid === ns.uid &&
    r.spec.prefix === target?.name &&
    Number.isInteger(r.spec.word) &&
    r.spec.word >= 1 &&
    r.spec.word <= 0xffff &&
    r.metadata.name === rangeName(r.spec.prefix, r.spec.word);
  return new Set(ranges.filter(validClaim).map((r) => r.spec.word));
}

/**
 * Slices: judges each (plan.release with the reason), then keeps one per pod, the first in text order, as the agent
 * picks; the others are released too.
 */
function judgeSlices(
  inp: NamespaceInput,
  target: SlicingPrefix | undefined,
  held: ReadonlySet<number>,
  plan: NamespacePlan,
): void {
  const byPod = new Map<string, SixBed4Slice[]>();
  for (const s of inp.slices) {
    const j = judgeSlice(s, inp, target, held);
    if (j) {
      plan.release.push({ slice: s, ...j });
      continue;
    }
    byPod.set(s.spec.pod.uid, [...(byPod.get(s.spec.pod.uid) ?? []), s]);
  }
  for (const [uid, list] of byPod) {
    list.sort((a, b) => a.spec.slice.localeCompare(b.spec.slice));
    plan.keep.set(uid, list[0]!);
    for (const extra of list.slice(1))
      plan.release.push({
        slice: extra,
        why: `pod ${inp.name}/${extra.spec.pod.name} holds ${list[0]!.spec.slice} already (a pod has one slice)`,
      });
  }
}

/**
 * Claims to release: of another prefix than the target, misnamed, or surplus (a race left the namespace two
 * words), and no slice left in them. A claim of an earlier namespace of the same name (another UID) is left to the
 * garbage collector: its owner reference points at that namespace.
 */
function rangesToRelease(
  ranges: readonly SixBed4Range[],
  ns: NamespaceInfo,
  target: SlicingPrefix | undefined,
  word: number | undefined,
  keep: ReadonlyMap<string, SixBed4Slice>,
): NamespacePlan['releaseRanges'] {
  const out: NamespacePlan['releaseRanges'] = [];
  const usedWords = new Set([...keep.values()].map((s) => sliceWords(s.spec.slice)!.a));
  for (const r of ranges) {
    if (r.spec?.namespace?.uid !== ns.uid) continue;
    if (r.metadata.name !== rangeName(r.spec.prefix ?? '', r.spec.word ?? -1)) {
      out.push({
        range: r,
        why: `its name does not match its word (${rangeName(r.spec.prefix ?? '', r.spec.word ?? 0)})`,
      });
    } else if (!target || r.spec.prefix !== target.name) {
      out.push({
        range: r,
        why: target
          ? `namespace ${ns.name} takes slices from ${target.name} now`
          : `namespace ${ns.name} takes no slices now`,
      });
    } else if (r.spec.word !== word && !usedWords.has(r.spec.word)) {
      out.push({ range: r, why: `namespace ${ns.name} holds word ${word} of ${target.name} already` });
    }
  }
  return out;
}

/** Pods that ask although their namespace takes no slices: a problem each, with the label to set when it is clear. */
function podsNotOptedIn(inp: NamespaceInput, ns: NamespaceInfo): SliceProblem[] {
  const out: SliceProblem[] = [];
  for (const pod of inp.pods) {
    const asking = inp.prefixes.filter((p) => !p.why && podAsks(pod, p.podAnnotation) === 'yes');
    if (!asking.length || pod.deleting) continue;
    const hint = asking.length === 1 ? ` (label it ${asking[0]!.namespaceLabel}=${asking[0]!.name})` : '';
    out.push({
      kind: 'Pod',
      name: pod.name,
      reason: 'NamespaceNotOptedIn',
      message: `the pod asks for a slice but namespace ${ns.name} does not take slices from any SixBed4Prefix${hint}`,
    });
  }
  return out;
}

/**
 * One pod of a namespace with a target: nothing when it does not ask, holds a slice already or is ending; else a
 * problem (bad annotation, host network, node that does not serve), waiting (no node yet, or its node's /64 is
 * still being recorded) or a candidate for a slice on its node.
 */
function placePod(pod: PodInfo, ns: NamespaceInfo, target: SlicingPrefix, plan: NamespacePlan): void {
  const asks = podAsks(pod, target.slices.podAnnotation);
  if (asks === 'no') return;
  if (asks === 'invalid') {
    plan.problems.push({
      kind: 'Pod',
      name: pod.name,
      reason: 'InvalidSliceAnnotation',
      message: `annotation ${target.slices.podAnnotation}: ${JSON.stringify(pod.annotations[target.slices.podAnnotation])} is neither "true" (give the pod a /112) nor "false"`,
    });
    return;
  }
  if (plan.keep.has(pod.uid) || pod.deleting || ns.deleting || (pod.phase && TERMINAL.has(pod.phase))) return;
  if (pod.hostNetwork) {
    plan.problems.push({
      kind: 'Pod',
      name: pod.name,
      reason: 'HostNetworkPod',
      message: 'the pod uses the host network: it has no network namespace of its own to put a slice in',
    });
    return;
  }
  if (!pod.node || target.pendingNodes?.has(pod.node)) {
    plan.waiting.push(pod.name);
    return;
  }
  const srv = target.serving.get(pod.node);
  if (!srv) {
    plan.problems.push({
      kind: 'Pod',
      name: pod.name,
      reason: 'NodeNotServing',
      message: `node ${pod.node} serves no /64 of SixBed4Prefix ${target.name} (${target.notServing(pod.node)}), so it has no slice to give; the pod runs without one`,
    });
    return;
  }
  plan.candidates.push({ pod, node: pod.node, subnet: srv.subnet, index: srv.index });
}

/** The namespace's range annotation value, or undefined for none. */
export function rangeAnnotation(target: SlicingPrefix | undefined, word: number | undefined): string | undefined {
  return target && word !== undefined ? rangePattern(target.prefix, word) : undefined;
}
