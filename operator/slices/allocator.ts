// The slice allocator's API layer: carries out plan.ts's plan for one
// namespace, and writes a prefix's slice status.
//
// The operator claims words A for namespaces and releases what is no longer
// used; the pods' slices are claimed by their nodes' agents when the runtime
// sets up the pod's network (agent/cluster/claim.ts), so a pod has its
// address before its containers start.
//
// Race-free by construction: a word A is claimed by creating the SixBed4Range
// named <prefix>-<A>, a slice by creating the SixBed4Slice named
// <prefix>-<index>-<A>-<B>. The API server lets exactly one create of a name
// succeed; the loser gets AlreadyExists, reads the object, and either adopts
// it (it was made for the same namespace or pod: another allocator was
// faster) or treats the word as taken and tries the next. The caches only
// make good first guesses; they are never trusted for uniqueness. So two
// replicas, a restart in the middle of an allocation, or a stale cache can
// cost a retry but never hand a word or a slice to two owners.
//
// A pod has one slice: if two slices name the same pod (a race of claims
// from different views), the first in text order is kept (the agent
// delivers that one too) and the other is deleted.
import type { Logger } from '../../lib/log.js';
import { parsePrefix } from '../../lib/ip.js';
import {
  ADDRESS_ANNOTATION,
  ALLOCATIONS_ANNOTATION,
  API_VERSION,
  ASSIGNED_SLICE_ANNOTATION,
  LABEL_MANAGED_BY,
  LABEL_NAMESPACE,
  LABEL_PREFIX,
  LABEL_RANGE,
  MANAGED_BY,
  RANGE_ANNOTATION,
  RANGE_KIND,
  SLICE_KIND,
  SLICES_CONDITION,
  SLICES_FIELD_MANAGER,
  KIND,
  type Condition,
  type KubeObject,
  type SixBed4Prefix,
  type SixBed4Range,
  type SixBed4Slice,
  type SlicesStatus,
} from '../../kube/api.js';
import { parseAllocations, subnetIndex } from '../../kube/subnets.js';
import type { Recorder } from '../../kube/events.js';
import { isAlreadyExists, isConflict, isNotFound, paths, type Kube } from '../../kube/client.js';
import type { OperatorMetrics, SliceUsage } from '../metrics.js';
import { nodeInfo, plan, selects } from '../prefix/plan.js';
import type { Cache } from '../prefix/reconcile.js';
import {
  planNamespace,
  rangeAnnotation,
  type NamespaceInfo,
  type NamespaceInput,
  type NamespacePlan,
  type PodInfo,
  type PrefixRef,
  type SliceProblem,
  type SlicingPrefix,
} from './plan.js';
import {
  checkSlices,
  chooseWord,
  preferredWord,
  rangeName,
  rangePattern,
  rangeSize,
  sliceWords,
} from '../../kube/slice-model.js';
import { checkSpec, type Problem } from '../../kube/prefix-spec.js';

export interface AllocatorCaches {
  prefixes: Cache<SixBed4Prefix>;
  nodes: Cache<KubeObject>;
  namespaces: Cache<KubeObject>;
  pods: Cache<KubeObject>;
  slices: Cache<SixBed4Slice>;
  ranges: Cache<SixBed4Range>;
}

export interface AllocatorDeps {
  kube: Kube;
  caches: AllocatorCaches;
  recorder: Recorder;
  log: Logger;
  metrics?: OperatorMetrics;
  now?: () => Date;
}

/** What one namespace reconcile left for its prefix's status. */
interface NamespaceState {
  prefix?: string;
  problems: SliceProblem[];
  /** pods that ask and hold no slice */
  pending: number;
}

/** Objects this process created or deleted that its caches may not show yet (watch lag). */
class Overlay<T extends KubeObject> {
  private readonly created = new Map<string, { obj: T; at: number }>();
  private readonly deleted = new Map<string, { uid: string; at: number }>();
  constructor(private readonly ttlMs = 60_000) {}
  add(obj: T): void {
    this.created.set(obj.metadata.name!, { obj, at: Date.now() });
    this.deleted.delete(obj.metadata.name!);
  }
  remove(obj: T): void {
    this.deleted.set(obj.metadata.name!, { uid: obj.metadata.uid ?? '', at: Date.now() });
    this.created.delete(obj.metadata.name!);
  }
  /** the cache's list with our own recent writes applied */
  view(list: readonly T[], cache: Cache<T>): T[] {
    const now = Date.now();
    const out: T[] = [];
    for (const o of list) {
      const d = this.deleted.get(o.metadata.name!);
      if (d && (d.uid === '' || d.uid === o.metadata.uid) && now - d.at < this.ttlMs) continue;
      out.push(o);
    }
    for (const [name, c] of this.created) {
      if (cache.get(name) || now - c.at > this.ttlMs) {
        this.created.delete(name);
        continue;
      }
      if (!this.deleted.has(name)) out.push(c.obj);
    }
    for (const [name, d] of this.deleted) {
      const cur = cache.get(name);
      if (!cur || cur.metadata.uid !== d.uid || now - d.at > this.ttlMs) this.deleted.delete(name);
    }
    return out;
  }
}

const TERMINAL = new Set(['Succeeded', 'Failed']);
/** AlreadyExists losses in one allocation before giving up for this round (the next round starts from a fresher cache). */
const MAX_CONFLICTS = 32;

function list(names: readonly string[], max = 5): string {
  return names.length <= max ? names.join(', ') : `${names.slice(0, max).join(', ')} and ${names.length - max} more`;
}

export function namespaceInfo(o: KubeObject): NamespaceInfo {
  return {
    name: o.metadata.name ?? '',
    uid: o.metadata.uid ?? '',
    labels: o.metadata.labels ?? {},
    annotations: o.metadata.annotations ?? {},
    deleting:
      o.metadata.deletionTimestamp !== undefined ||
      (o.status as { phase?: string } | undefined)?.phase === 'Terminating',
  };
}

export function podInfo(o: KubeObject): PodInfo {
  const spec = (o.spec ?? {}) as { nodeName?: string; hostNetwork?: boolean };
  const phase = (o.status as { phase?: string } | undefined)?.phase;
  return {
    name: o.metadata.name ?? '',
    uid: o.metadata.uid ?? '',
    hostNetwork: spec.hostNetwork === true,
    deleting: o.metadata.deletionTimestamp !== undefined,
    annotations: o.metadata.annotations ?? {},
    ...(spec.nodeName ? { node: spec.nodeName } : {}),
    ...(phase ? { phase } : {}),
  };
}

export class SliceAllocator {
  private readonly sliceOverlay = new Overlay<SixBed4Slice>();
  private readonly rangeOverlay = new Overlay<SixBed4Range>();
  private readonly states = new Map<string, NamespaceState>();
  /** last problem reported per object, so a resync does not repeat its Event */
  private readonly reported = new Map<string, string>();
  /** per prefix: [fingerprint, context] */
  private readonly contexts = new Map<string, { key: string; ctx: SlicingPrefix | { why: string } }>();
  /** counters of this instance (tests read them) */
  readonly stats = { created: 0, adopted: 0, taken: 0, conflicts: 0, released: 0, rangesCreated: 0, rangesReleased: 0 };

  constructor(private readonly d: AllocatorDeps) {}

  // ------------------------------------------------------------------ views

  slicesView(): SixBed4Slice[] {
    return this.sliceOverlay.view(this.d.caches.slices.list(), this.d.caches.slices);
  }

  rangesView(): SixBed4Range[] {
    return this.rangeOverlay.view(this.d.caches.ranges.list(), this.d.caches.ranges);
  }

  /** Whether a prefix hands out slices now, and its serving nodes (memoized on what it depends on). */
  slicing(p: SixBed4Prefix): SlicingPrefix | { why: string } {
    const name = p.metadata.name ?? '';
    const nodes = this.d.caches.nodes.list();
    const others = this.d.caches.prefixes.list();
    const key = JSON.stringify([
      p.metadata.resourceVersion,
      nodes.map((n) => n.metadata.resourceVersion),
      others.map((o) => o.metadata.resourceVersion),
    ]);
    const memo = this.contexts.get(name);
    if (memo?.key === key) return memo.ctx;
    const ctx = this.computeSlicing(p, nodes, others);
    this.contexts.set(name, { key, ctx });
    return ctx;
  }

  private computeSlicing(
    p: SixBed4Prefix,
    nodes: readonly KubeObject[],
    others: readonly SixBed4Prefix[],
  ): SlicingPrefix | { why: string } {
    const name = p.metadata.name ?? '';
    const sl = checkSlices(p.spec?.slices);
    if (!sl.slices.enabled)
      return {
        why: sl.problems.length ? sl.problems.map((x) => x.message).join('; ') : 'spec.slices.enabled is not true',
      };
    if (p.metadata.deletionTimestamp) return { why: 'it is being deleted' };
    const checked = checkSpec(p.spec);
    if (!checked.spec) return { why: `its spec is invalid: ${checked.problems.map((x) => x.message).join('; ')}` };
    const spec = checked.spec;
    const record = parseAllocations(p.metadata.annotations?.[ALLOCATIONS_ANNOTATION]).record;
    const infos = nodes.map(nodeInfo);
    const pl = plan(
      name,
      p.metadata.creationTimestamp,
      spec,
      infos,
      record,
      others.map((o) => ({
        name: o.metadata.name ?? '',
        prefix: typeof o.spec?.prefix === 'string' ? o.spec.prefix : '',
        ...(o.metadata.creationTimestamp ? { creationTimestamp: o.metadata.creationTimestamp } : {}),
      })),
    );
    const serving = new Map<string, { subnet: ReturnType<typeof parsePrefix>; index: number }>();
    const pendingNodes = new Set<string>();
    for (const [node, share] of pl.nodes) {
      // only /64s already recorded on the prefix: a slice must not be cut from a /64 the prefix reconciler may still choose differently
      if (record[node] !== share.prefix) {
        pendingNodes.add(node);
        continue;
      }
      serving.set(node, { subnet: parsePrefix(share.prefix), index: subnetIndex(spec.prefix, share.prefix) });
    }
    const selector = Object.keys(spec.nodeSelector).length
      ? `spec.nodeSelector ${JSON.stringify(spec.nodeSelector)}`
      : 'spec.nodeSelector';
    const notServing = (node: string): string => {
      if (pendingNodes.has(node)) return 'its /64 is being allocated';
      const info = infos.find((n) => n.name === node);
      if (!info) return `there is no Node ${node}`;
      if (!selects(spec.nodeSelector, info.labels)) return `the node is not selected by ${selector}`;
      const why = pl.problems.map((x) => x.reason).join(', ');
      return `the node is selected but has no /64${why ? `: the prefix is Degraded (${why})` : ''}`;
    };
    return {
      name,
      prefix: spec.prefix,
      slices: sl.slices,
      local: spec.localAddresses,
      serving,
      notServing,
      pendingNodes,
    };
  }

  /**
   * Words held against words there are, per slicing prefix (the operator's slice gauges): namespaces' words A, and
   * words B in the fullest pair of a namespace's word and a node (where a pod's CNI ADD fails first).
   */
  usage(): SliceUsage[] {
    const out: SliceUsage[] = [];
    const ranges = this.rangesView(),
      slices = this.slicesView();
    for (const p of this.d.caches.prefixes.list()) {
      const name = p.metadata.name ?? '';
      const ctx = this.slicing(p);
      if (!('slices' in ctx)) continue;
      const perPair = new Map<string, number>();
      for (const s of slices) {
        if (s.spec?.prefix !== name) continue;
        const w = sliceWords(s.spec.slice);
        if (w) perPair.set(`${s.spec.node}/${w.a}`, (perPair.get(`${s.spec.node}/${w.a}`) ?? 0) + 1);
      }
      out.push(
        {
          prefix: name,
          kind: 'namespace',
          used: ranges.filter((r) => r.spec?.prefix === name).length,
          capacity: rangeSize(ctx.slices.namespaceWords),
        },
        { prefix: name, kind: 'pod', used: Math.max(0, ...perPair.values()), capacity: rangeSize(ctx.slices.podWords) },
      );
    }
    return out;
  }

  // -------------------------------------------------------------- namespace

  /**
   * Reconciles one namespace: releases what is no longer valid, claims the
   * namespace's word, allocates slices for its pods, writes annotations and
   * Events. Returns the prefixes whose status may have changed.
   */
  async reconcileNamespace(name: string): Promise<string[]> {
    const log = this.d.log.child({ namespace: name });
    const { input, nsObj } = this.namespaceInput(name);
    const ns = input.ns;
    const pl = planNamespace(input);
    // The prefix statuses to rewrite: the namespace's target now and before, and every prefix it releases from.
    const touched = new Set<string>();
    if (pl.target) touched.add(pl.target.name);
    const before = this.states.get(name);
    if (before?.prefix) touched.add(before.prefix);

    // 1. release slices; 2. release claims that no slice uses
    await this.releaseSlices(name, ns, pl, touched, log);
    await this.releaseRanges(pl, touched, log);

    const problems = [...pl.problems];
    const target = pl.target;
    let word = pl.word;

    // 3. claim a word A for the namespace
    if (target && ns && pl.needWord) {
      const got = await this.claimWord(target, ns, log);
      if (typeof got === 'number') word = got;
      else problems.push(got);
    }

    // 4. the namespace's annotation shows its range
    if (nsObj && ns) await this.annotateNamespace(name, ns, target, word);

    // 5. pods that ask and hold no slice yet
    const pending = this.pendingPods(name, pl, word, problems);

    // 6. pods carry their slice and address (and lose them with the slice)
    await this.annotatePods(name, input.pods, pl.keep);

    // 7. Events for problems that are new or changed; state for the status
    this.report(name, problems, nsObj);
    this.states.set(name, { ...(target ? { prefix: target.name } : {}), problems, pending });
    if (!ns) this.states.delete(name);
    return [...touched];
  }

  /**
   * What planNamespace needs, from the caches (with this process's own recent writes applied): every prefix (the
   * namespace's label may name one that does not slice, which the plan reports), the namespace's pods, and the
   * slices and claims it holds. Objects being deleted are left out: they are on their way and hold nothing.
   */
  private namespaceInput(name: string): { input: NamespaceInput; nsObj: KubeObject | undefined } {
    const c = this.d.caches;
    const slicing = new Map<string, SlicingPrefix>();
    const refs: PrefixRef[] = [];
    for (const p of c.prefixes.list()) {
      const ctx = this.slicing(p);
      const sl = checkSlices(p.spec?.slices).slices;
      refs.push({
        name: p.metadata.name ?? '',
        namespaceLabel: sl.namespaceLabel,
        podAnnotation: sl.podAnnotation,
        ...('why' in ctx ? { why: ctx.why } : {}),
      });
      if (!('why' in ctx)) slicing.set(ctx.name, ctx);
    }
    const nsObj = c.namespaces.get(name);
    const ns = nsObj ? namespaceInfo(nsObj) : undefined;
    const pods = c.pods.list(name).map(podInfo);
    const slices = this.slicesView().filter((s) => s.spec?.pod?.namespace === name && !s.metadata.deletionTimestamp);
    const ranges = this.rangesView().filter((r) => r.spec?.namespace?.name === name && !r.metadata.deletionTimestamp);
    return { input: { name, ns, slicing, prefixes: refs, pods, slices, ranges }, nsObj };
  }

  /**
   * Step 1: deletes the slices the plan releases. Where the reason may be our cache lagging behind another allocator
   * (pod or claim not seen yet), the API server is asked first, and a slice it vouches for is kept instead.
   */
  private async releaseSlices(
    name: string,
    ns: NamespaceInfo | undefined,
    pl: NamespacePlan,
    touched: Set<string>,
    log: Logger,
  ): Promise<void> {
    for (const r of pl.release) {
      if (await this.sliceStillHeld(name, ns, r, pl.keep)) continue;
      if (await this.deleteObject(paths.slice(r.slice.metadata.name!), r.slice)) {
        this.sliceOverlay.remove(r.slice);
        this.stats.released++;
        this.d.metrics?.slicesReleased.inc({ kind: SLICE_KIND });
        log.info(`released slice ${r.slice.spec.slice} of pod ${name}/${r.slice.spec.pod.name}: ${r.why}`, {
          slice: r.slice.metadata.name,
        });
      }
      touched.add(r.slice.spec.prefix);
    }
  }

  /**
   * Whether the API server shows a released slice as still valid after all: its pod exists (same UID) and has not
   * ended, or its word's claim exists and belongs to this namespace (then that claim joins the overlay, since the
   * cache has not shown it yet). A slice held so goes into keep (the first for its pod wins).
   */
  private async sliceStillHeld(
    name: string,
    ns: NamespaceInfo | undefined,
    r: NamespacePlan['release'][number],
    keep: Map<string, SixBed4Slice>,
  ): Promise<boolean> {
    if (r.check === 'pod') {
      const pod = await this.d.kube.get<KubeObject>(paths.pod(name, r.slice.spec.pod.name));
      if (pod && pod.metadata.uid === r.slice.spec.pod.uid) {
        const info = podInfo(pod);
        if (!(info.phase && TERMINAL.has(info.phase))) {
          keep.set(info.uid, r.slice);
          return true;
        }
      }
    } else if (r.check === 'range') {
      const w = sliceWords(r.slice.spec.slice)!;
      const claim = await this.d.kube.get<SixBed4Range>(paths.range(rangeName(r.slice.spec.prefix, w.a)));
      if (claim && ns && claim.spec.namespace.uid === ns.uid) {
        this.rangeOverlay.add(claim);
        if (!keep.has(r.slice.spec.pod.uid)) keep.set(r.slice.spec.pod.uid, r.slice);
        return true;
      }
    }
    return false;
  }

  /**
   * Step 2: deletes the claims the plan releases, asking the API server, not the cache, whether a slice still uses
   * the word: another allocator (an agent's CNI ADD) may have just cut one from it.
   */
  private async releaseRanges(pl: NamespacePlan, touched: Set<string>, log: Logger): Promise<void> {
    for (const r of pl.releaseRanges) {
      const users = await this.d.kube.list<SixBed4Slice>(paths.slices, {
        labelSelector: `${LABEL_RANGE}=${r.range.metadata.name}`,
      });
      if (users.items.some((x) => !x.metadata.deletionTimestamp)) {
        log.info(
          `keeping word ${r.range.spec.word} of ${r.range.spec.prefix} for now (${r.why}): ${users.items.length} slices still use it`,
        );
        continue;
      }
      if (await this.deleteObject(paths.range(r.range.metadata.name!), r.range)) {
        this.rangeOverlay.remove(r.range);
        this.stats.rangesReleased++;
        this.d.metrics?.slicesReleased.inc({ kind: RANGE_KIND });
        log.info(`released word ${r.range.spec.word} of ${r.range.spec.prefix}: ${r.why}`);
      }
      touched.add(r.range.spec.prefix);
    }
  }

  /** Step 4: the namespace's range annotation, written only when it differs (absent and unwanted counts as equal). */
  private async annotateNamespace(
    name: string,
    ns: NamespaceInfo,
    target: SlicingPrefix | undefined,
    word: number | undefined,
  ): Promise<void> {
    const want = rangeAnnotation(target, word);
    if (ns.annotations[RANGE_ANNOTATION] !== want && !(want === undefined && !(RANGE_ANNOTATION in ns.annotations))) {
      await this.patchAnnotations(paths.namespace(name), { [RANGE_ANNOTATION]: want ?? null });
    }
  }

  /**
   * Step 5: how many pods ask and hold no slice (the prefix status's pending count). A pod that asks gets its slice
   * from its node's agent (claim.ts in the agent: at CNI ADD, before its containers start); until then it is
   * pending. Drops from pl.candidates the pods whose slice step 1 kept after asking the API server, and adds to
   * problems one per candidate when the namespace has no range (the agents have nothing to cut from). Pods on a
   * node that does not serve, and host-network pods, count as pending too.
   */
  private pendingPods(name: string, pl: NamespacePlan, word: number | undefined, problems: SliceProblem[]): number {
    pl.candidates = pl.candidates.filter((cand) => !pl.keep.has(cand.pod.uid));
    let pending = pl.waiting.length + pl.candidates.length;
    const target = pl.target;
    if (target && word === undefined) {
      for (const cand of pl.candidates) {
        problems.push({
          kind: 'Pod',
          name: cand.pod.name,
          reason: 'NoNamespaceRange',
          message: `namespace ${name} has no range of ${target.name} (see its Events), so the pod gets no slice`,
        });
      }
    }
    for (const p of problems)
      if (p.kind === 'Pod' && ['NodeNotServing', 'HostNetworkPod'].includes(p.reason)) pending++;
    return pending;
  }

  /** Step 6: each pod's slice and address annotations, as its kept slice says (or none); only what differs is patched. */
  private async annotatePods(
    name: string,
    pods: readonly PodInfo[],
    keep: ReadonlyMap<string, SixBed4Slice>,
  ): Promise<void> {
    for (const pod of pods) {
      const s = keep.get(pod.uid);
      const want: Record<string, string | null> = s
        ? { [ASSIGNED_SLICE_ANNOTATION]: s.spec.slice, [ADDRESS_ANNOTATION]: s.spec.address }
        : { [ASSIGNED_SLICE_ANNOTATION]: null, [ADDRESS_ANNOTATION]: null };
      const diff: Record<string, string | null> = {};
      for (const [k, v] of Object.entries(want)) {
        if (v === null ? k in pod.annotations : pod.annotations[k] !== v) diff[k] = v;
      }
      if (Object.keys(diff).length) await this.patchAnnotations(paths.pod(name, pod.name), diff);
    }
  }

  private async claimWord(target: SlicingPrefix, ns: NamespaceInfo, log: Logger): Promise<number | SliceProblem> {
    const taken = new Set(
      this.rangesView()
        .filter((r) => r.spec?.prefix === target.name)
        .map((r) => r.spec.word),
    );
    const range = target.slices.namespaceWords;
    const preferred = preferredWord(ns.name, range);
    for (let conflicts = 0; conflicts <= MAX_CONFLICTS;) {
      const w = chooseWord(preferred, range, (x) => taken.has(x));
      if (w === undefined) {
        return {
          kind: 'Namespace',
          name: ns.name,
          reason: 'NamespaceRangesExhausted',
          message: `every word A of SixBed4Prefix ${target.name} (${range.first} to ${range.last}, ${rangeSize(range)} namespaces) is held by another namespace; the namespace gets no range until one is released`,
        };
      }
      const obj: SixBed4Range = {
        apiVersion: API_VERSION,
        kind: RANGE_KIND,
        metadata: {
          name: rangeName(target.name, w),
          labels: { [LABEL_MANAGED_BY]: MANAGED_BY, [LABEL_PREFIX]: target.name, [LABEL_NAMESPACE]: ns.name },
          // the Namespace owns its word: the garbage collector releases it with the namespace
          ownerReferences: [{ apiVersion: 'v1', kind: 'Namespace', name: ns.name, uid: ns.uid }],
        },
        spec: {
          prefix: target.name,
          word: w,
          namespace: { name: ns.name, uid: ns.uid },
          range: rangePattern(target.prefix, w),
        },
      };
      try {
        const made = await this.d.kube.create<SixBed4Range>(paths.ranges, obj);
        this.rangeOverlay.add(made);
        this.stats.rangesCreated++;
        this.d.metrics?.slicesAllocated.inc({ kind: RANGE_KIND });
        log.info(`namespace ${ns.name} holds word ${w} of ${target.name}: ${obj.spec.range}`);
        this.d.recorder.event(
          nsRef(ns),
          'Normal',
          'RangeAssigned',
          `slices of SixBed4Prefix ${target.name}: ${obj.spec.range} (word ${w})`,
        );
        return w;
      } catch (e) {
        if (!isAlreadyExists(e)) throw e;
        conflicts++;
        this.stats.conflicts++;
        this.d.metrics?.sliceConflicts.inc({ kind: RANGE_KIND });
        const cur = await this.d.kube.get<SixBed4Range>(paths.range(obj.metadata.name!));
        if (cur && cur.spec.namespace.uid === ns.uid && cur.spec.prefix === target.name) {
          this.rangeOverlay.add(cur);
          this.stats.adopted++;
          return w; // another allocator claimed it for this very namespace
        }
        this.stats.taken++;
        taken.add(w);
      }
    }
    throw new Error(`namespace ${ns.name}: lost ${MAX_CONFLICTS} races for a word of ${target.name}; retrying`);
  }

  /** Deletes an object if it is still the one we judged (UID precondition); false when it was gone or replaced. */
  private async deleteObject(path: string, obj: KubeObject): Promise<boolean> {
    try {
      await this.d.kube.request('DELETE', path, {
        body: {
          apiVersion: 'v1',
          kind: 'DeleteOptions',
          ...(obj.metadata.uid ? { preconditions: { uid: obj.metadata.uid } } : {}),
        },
      });
      return true;
    } catch (e) {
      if (isNotFound(e) || isConflict(e)) return false;
      throw e;
    }
  }

  private async patchAnnotations(path: string, annotations: Record<string, string | null>): Promise<void> {
    try {
      await this.d.kube.mergePatch(path, { metadata: { annotations } }, SLICES_FIELD_MANAGER);
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
  }

  private report(namespace: string, problems: SliceProblem[], nsObj: KubeObject | undefined): void {
    const seen = new Set<string>();
    for (const p of problems) {
      const key = `${namespace}|${p.kind}|${p.name}`;
      seen.add(key);
      const text = `${p.reason}|${p.message}`;
      if (this.reported.get(key) === text) continue;
      this.reported.set(key, text);
      this.d.log.warn(`${p.kind === 'Pod' ? `pod ${namespace}/${p.name}` : `namespace ${p.name}`}: ${p.message}`, {
        reason: p.reason,
      });
      if (p.kind === 'Namespace') {
        if (nsObj) this.d.recorder.event(nsRef(namespaceInfo(nsObj)), 'Warning', p.reason, p.message);
      } else {
        const pod = this.d.caches.pods.get(p.name, namespace);
        if (pod) this.d.recorder.event(podRef(namespace, podInfo(pod)), 'Warning', p.reason, p.message);
      }
    }
    for (const key of this.reported.keys())
      if (key.startsWith(`${namespace}|`) && !seen.has(key)) this.reported.delete(key);
  }

  /** Forgets a namespace that is gone. */
  forget(namespace: string): void {
    this.states.delete(namespace);
    for (const key of this.reported.keys()) if (key.startsWith(`${namespace}|`)) this.reported.delete(key);
  }

  // ----------------------------------------------------------------- status

  /** Desired status.slices and SlicesAllocated condition of a prefix, or undefined when slices are off. */
  desiredStatus(
    p: SixBed4Prefix,
  ): { slices: SlicesStatus; condition: Omit<Condition, 'lastTransitionTime'> } | undefined {
    const name = p.metadata.name ?? '';
    const sl = checkSlices(p.spec?.slices);
    if (!sl.slices.enabled && !sl.problems.length) return undefined;
    const ctx = this.slicing(p);
    const slices = this.slicesView().filter((s) => s.spec?.prefix === name && !s.metadata.deletionTimestamp);
    const words = new Map<string, number>();
    for (const r of this.rangesView()) {
      if (r.spec?.prefix !== name || r.metadata.deletionTimestamp) continue;
      const ns = this.d.caches.namespaces.get(r.spec.namespace.name);
      if (!ns || ns.metadata.uid !== r.spec.namespace.uid || this.states.get(r.spec.namespace.name)?.prefix !== name)
        continue;
      const w = words.get(r.spec.namespace.name);
      if (w === undefined || r.spec.word < w) words.set(r.spec.namespace.name, r.spec.word);
    }
    const podsOf = new Map<string, number>();
    for (const s of slices) podsOf.set(s.spec.pod.namespace, (podsOf.get(s.spec.pod.namespace) ?? 0) + 1);
    const prefix = 'why' in ctx ? undefined : ctx.prefix;
    const namespaces = [...words.keys()].sort().map((n) => ({
      name: n,
      word: words.get(n)!,
      pods: podsOf.get(n) ?? 0,
      ...(prefix ? { range: rangePattern(prefix, words.get(n)!) } : {}),
    }));
    let pending = 0;
    const problems: Problem[] = sl.problems.map((x) => ({ reason: x.reason, message: x.message }));
    for (const [ns, st] of this.states) {
      if (st.prefix !== name) continue;
      pending += st.pending;
      for (const x of st.problems)
        problems.push({
          reason: x.reason,
          message: x.kind === 'Pod' ? `pod ${ns}/${x.name}: ${x.message}` : `namespace ${x.name}: ${x.message}`,
        });
    }
    const status: SlicesStatus = { allocated: slices.length, pending, namespaces };
    const summary = `${slices.length} slices in ${namespaces.length} namespaces`;
    const condition =
      'why' in ctx && sl.slices.enabled
        ? {
            type: SLICES_CONDITION,
            status: 'False' as const,
            reason: 'SlicesUnavailable',
            message: `no slices are handed out: ${ctx.why}`,
          }
        : problems.length
          ? {
              type: SLICES_CONDITION,
              status: 'False' as const,
              reason: problems[0]!.reason,
              message: `${summary}; ${problems.length} problem${problems.length > 1 ? 's' : ''}: ${list(
                problems.map((x) => x.message),
                10,
              )}`.slice(0, 32768),
            }
          : {
              type: SLICES_CONDITION,
              status: 'True' as const,
              reason: 'AllAllocated',
              message: `${summary}${pending ? `; ${pending} pods wait for a slice (to be scheduled, or for their node's agent to set up their network; see their Events)` : ''}; no problem to report`,
            };
    return { slices: status, condition: { ...condition, observedGeneration: p.metadata.generation ?? 0 } };
  }

  /** Writes status.slices and the SlicesAllocated condition when they differ (server-side apply, own field manager). */
  async reconcileStatus(name: string): Promise<void> {
    const p = this.d.caches.prefixes.get(name);
    if (!p) return;
    const want = this.desiredStatus(p);
    const have = p.status ?? {};
    const haveCond = (have.conditions ?? []).find((c) => c.type === SLICES_CONDITION);
    if (!want) {
      // slices turned off: drop what this field manager wrote, if anything
      if (have.slices === undefined && !haveCond) return;
      await this.applyStatus(name, {});
      return;
    }
    const same =
      haveCond &&
      haveCond.status === want.condition.status &&
      haveCond.reason === want.condition.reason &&
      haveCond.message === want.condition.message &&
      haveCond.observedGeneration === want.condition.observedGeneration &&
      JSON.stringify(normalize(have.slices)) === JSON.stringify(normalize(want.slices));
    if (same) return;
    const now = (this.d.now?.() ?? new Date()).toISOString().replace(/\.\d{3}Z$/, 'Z');
    const lastTransitionTime =
      haveCond && haveCond.status === want.condition.status ? haveCond.lastTransitionTime : now;
    await this.applyStatus(name, { slices: want.slices, conditions: [{ ...want.condition, lastTransitionTime }] });
    if (!haveCond || haveCond.status !== want.condition.status || haveCond.reason !== want.condition.reason) {
      const ev =
        want.condition.status === 'True'
          ? haveCond
            ? { type: 'Normal' as const, reason: 'SlicesAllocated', message: want.condition.message }
            : undefined
          : { type: 'Warning' as const, reason: want.condition.reason, message: want.condition.message };
      if (ev)
        this.d.recorder.event(
          { apiVersion: API_VERSION, kind: KIND, metadata: p.metadata },
          ev.type,
          ev.reason,
          ev.message,
        );
    }
  }

  private async applyStatus(name: string, status: Record<string, unknown>): Promise<void> {
    try {
      await this.d.kube.apply(
        paths.prefixStatus(name),
        { apiVersion: API_VERSION, kind: KIND, metadata: { name }, status },
        SLICES_FIELD_MANAGER,
      );
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
  }
}

/** status.slices in a comparable form (sorted, defaults filled). */
function normalize(s: SlicesStatus | undefined): unknown {
  if (!s) return null;
  return {
    allocated: s.allocated ?? 0,
    pending: s.pending ?? 0,
    namespaces: [...(s.namespaces ?? [])]
      .sort((a, b) => (a.name < b.name ? -1 : 1))
      .map((n) => ({ name: n.name, word: n.word, pods: n.pods ?? 0, range: n.range ?? '' })),
  };
}

function nsRef(ns: NamespaceInfo): KubeObject {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns.name, uid: ns.uid } };
}

function podRef(namespace: string, pod: PodInfo): KubeObject {
  return { apiVersion: 'v1', kind: 'Pod', metadata: { name: pod.name, namespace, uid: pod.uid } };
}
