// Bringing the node's slices to what the operator allocated for it.
//
// Input: the slices wanted on this node, each with the pod it belongs to
// (from the SixBed4Slice objects bound to this node). What exists is read
// from the node: our host links (s4<hash>) and the owner their alias
// records. planSlices is the pure diff; reconcileSlices carries it out,
// releases first (a slice that moved to another pod keeps its link name, so
// the old link must go before the new one is made), then deliveries.
//
// Nothing here throws for one bad slice: each gets a status (delivered,
// pending, hostNetwork, invalid, failed, released) with a reason, for logs,
// Events and the slice's status; the next pass tries again.
import { inPrefix, type Prefix } from '../../lib/ip.js';
import { InputError } from '../../lib/errors.js';
import type { Logger } from '../../lib/log.js';
import { normalizePodUid, type PodLocator } from './podns.js';
import { parseSlice, type Slice } from './slice.js';
import type { DeliveredSlice, Outcome, SliceDeliverer } from './deliver.js';

/** One slice the node should have: the contract with the operator's allocation. */
export interface DesiredSlice {
  /** The /112, e.g. 2001:db8:9:10:1:1::/112 (any valid spelling). */
  slice: string;
  podUid: string;
  podName?: string;
  namespace?: string;
}

export interface PlannedDelivery {
  want: DesiredSlice;
  slice: Slice;
  /** new: not on the node; present: our link for this pod exists (checked and topped up); moved: our link serves another pod. */
  why: 'new' | 'present' | 'moved';
  /** present, and made for a CNI ADD: the runtime owns it (CHECK, DEL), a pass does not re-enter the pod for it */
  viaCni?: boolean;
}

export interface PlannedRelease {
  hostIf: string;
  /** Null for a link without an alias (its slice is unknown; it is deleted by name). */
  slice: string | null;
  podUid: string | null;
  why: string;
}

export interface SlicePlan {
  deliver: PlannedDelivery[];
  release: PlannedRelease[];
  invalid: { want: DesiredSlice; reason: string }[];
}

/**
 * The diff between wanted and delivered slices. Pure. Wanted slices are
 * checked (a port-0 /112, inside the node's /64 when given, one pod per slice
 * and one slice per pod: the pod end has one name); a slice two pods claim is
 * delivered to neither and its existing link is left as it is, since the
 * API's one-object-per-slice rule makes that a transient state.
 */
export function planSlices(
  desired: readonly DesiredSlice[],
  delivered: readonly DeliveredSlice[],
  opts: { prefix?: Prefix } = {},
): SlicePlan {
  const plan: SlicePlan = { deliver: [], release: [], invalid: [] };
  const valid: { want: DesiredSlice; slice: Slice }[] = [];
  for (const want of desired) {
    try {
      const slice = parseSlice(want.slice);
      if (opts.prefix && !inPrefix(opts.prefix, slice.prefix.bytes))
        throw new InputError(`slice ${slice.text} is not inside this node's ${opts.prefix.text}`);
      if (!want.podUid || !/^[0-9a-f_-]+$/i.test(want.podUid))
        throw new InputError(`slice ${slice.text}: pod UID '${want.podUid}' is not a UID`);
      valid.push({ want: { ...want, podUid: normalizePodUid(want.podUid) }, slice });
    } catch (err) {
      if (!(err instanceof InputError)) throw err;
      plan.invalid.push({ want, reason: err.message });
    }
  }

  // One owner per slice.
  const bySlice = new Map<string, { want: DesiredSlice; slice: Slice }[]>();
  for (const v of valid) bySlice.set(v.slice.text, [...(bySlice.get(v.slice.text) ?? []), v]);
  const contested = new Set<string>();
  const owned: { want: DesiredSlice; slice: Slice }[] = [];
  for (const [text, claims] of bySlice) {
    const pods = [...new Set(claims.map((c) => c.want.podUid))];
    if (pods.length > 1) {
      contested.add(text);
      for (const c of claims)
        plan.invalid.push({
          want: c.want,
          reason: `slice ${text} is claimed by ${pods.length} pods (${pods.join(', ')}): delivered to none`,
        });
    } else {
      owned.push(claims[0]!);
    }
  }
  // One slice per pod: the first in text order, so every pass picks the same.
  owned.sort((a, b) => a.slice.text.localeCompare(b.slice.text));
  const podHas = new Map<string, string>();
  const chosen: { want: DesiredSlice; slice: Slice }[] = [];
  for (const o of owned) {
    const first = podHas.get(o.want.podUid);
    if (first) {
      plan.invalid.push({
        want: o.want,
        reason: `pod ${o.want.podUid} already gets slice ${first}; a pod has one slice`,
      });
      continue;
    }
    podHas.set(o.want.podUid, o.slice.text);
    chosen.push(o);
  }

  const byIf = new Map(delivered.map((d) => [d.hostIf, d]));
  const wantedIfs = new Set<string>();
  for (const c of chosen) {
    wantedIfs.add(c.slice.hostIf);
    const d = byIf.get(c.slice.hostIf);
    if (!d) {
      plan.deliver.push({ ...c, why: 'new' });
    } else if (d.owner && d.owner.slice === c.slice.text && normalizePodUid(d.owner.podUid) === c.want.podUid) {
      plan.deliver.push({ ...c, why: 'present', ...(d.owner.cni ? { viaCni: true } : {}) });
    } else {
      plan.release.push({
        hostIf: d.hostIf,
        slice: d.owner?.slice ?? null,
        podUid: d.owner?.podUid ?? null,
        why: d.owner ? `slice moved from pod ${d.owner.podUid} to ${c.want.podUid}` : 'link records no owner',
      });
      plan.deliver.push({ ...c, why: 'moved' });
    }
  }
  for (const d of delivered) {
    if (wantedIfs.has(d.hostIf)) continue;
    if (d.owner && contested.has(parseOrNull(d.owner.slice) ?? '')) continue;
    plan.release.push({
      hostIf: d.hostIf,
      slice: d.owner?.slice ?? null,
      podUid: d.owner?.podUid ?? null,
      why: d.owner ? 'no longer allocated to this node' : 'link records no owner',
    });
  }
  return plan;
}

function parseOrNull(text: string): string | null {
  try {
    return parseSlice(text).text;
  } catch {
    return null;
  }
}

export type SliceState = 'delivered' | 'pending' | 'hostNetwork' | 'invalid' | 'failed' | 'released';

export interface SliceStatus {
  slice: string | null;
  hostIf?: string;
  podUid?: string | null;
  state: SliceState;
  outcome?: Outcome;
  address?: string;
  /** Where the pod's namespace was found. */
  via?: 'proc' | 'docker' | 'cni';
  reason?: string;
}

export interface ReconcileDeps {
  deliverer: SliceDeliverer;
  /** Make a fresh one per pass (the /proc locator scans once per instance). */
  locator: PodLocator;
  log?: Logger;
  /** The node's /64: wanted slices outside it are refused. */
  prefix?: Prefix;
}

/** One reconcile pass. Never throws for a single slice; see the statuses. */
export async function reconcileSlices(
  desired: readonly DesiredSlice[],
  deps: ReconcileDeps,
): Promise<{ plan: SlicePlan; statuses: SliceStatus[] }> {
  const { deliverer, locator, log } = deps;
  const plan = planSlices(desired, await deliverer.list(), { prefix: deps.prefix });
  const statuses: SliceStatus[] = plan.invalid.map((i) => ({
    slice: i.want.slice,
    podUid: i.want.podUid,
    state: 'invalid',
    reason: i.reason,
  }));
  for (const i of plan.invalid)
    log?.warn(`slice not delivered: ${i.reason}`, { slice: i.want.slice, pod: i.want.podUid });

  for (const r of plan.release) {
    try {
      if (r.slice === null) {
        await deliverer.removeLink(r.hostIf);
      } else {
        // The old pod, if it still runs, gets its source rule back out.
        const found = r.podUid ? await locator.find(r.podUid) : null;
        const netns = found?.kind === 'found' ? found.netns : undefined;
        try {
          await deliverer.release(r.slice, netns?.path);
        } finally {
          await netns?.close();
        }
      }
      statuses.push({ slice: r.slice, hostIf: r.hostIf, podUid: r.podUid, state: 'released', reason: r.why });
    } catch (err) {
      log?.error(`cannot release ${r.slice ?? r.hostIf}: ${(err as Error).message}`);
      statuses.push({
        slice: r.slice,
        hostIf: r.hostIf,
        podUid: r.podUid,
        state: 'failed',
        reason: (err as Error).message,
      });
    }
  }

  const deliveredNow = new Set<string>();
  for (const d of plan.deliver) {
    const base = { slice: d.slice.text, hostIf: d.slice.hostIf, podUid: d.want.podUid, address: d.slice.address };
    if (d.viaCni) {
      // Delivered through CNI: the pod's namespace may not be findable from here (a private cgroup namespace, a VM
      // sandbox), and the runtime checks it (CNI CHECK). Only the node's ND answers are this pass's business.
      deliverer.keep(d.slice.text);
      deliveredNow.add(d.slice.text);
      statuses.push({ ...base, state: 'delivered', outcome: 'unchanged', via: 'cni' });
      continue;
    }
    try {
      const found = await locator.find(d.want.podUid);
      if (found.kind !== 'found') {
        // A pod that is not running yet, or whose namespace went away (and
        // took the veth with it): nothing to deliver into; try again later.
        statuses.push({
          ...base,
          state: found.kind === 'hostNetwork' ? 'hostNetwork' : 'pending',
          reason: found.reason,
        });
        continue;
      }
      try {
        const res = await deliverer.deliver(
          d.slice.text,
          { uid: d.want.podUid, name: d.want.podName, namespace: d.want.namespace },
          found.netns.path,
        );
        deliveredNow.add(d.slice.text);
        statuses.push({ ...base, state: 'delivered', outcome: res.outcome, via: found.netns.source });
      } finally {
        await found.netns.close();
      }
    } catch (err) {
      log?.error(`cannot deliver ${d.slice.text} to pod ${d.want.podUid}: ${(err as Error).message}`);
      statuses.push({ ...base, state: 'failed', reason: (err as Error).message });
    }
  }
  // Stop answering ND for slices whose veth is gone or that are no longer ours.
  for (const s of deliverer.proxiedSlices()) if (!deliveredNow.has(s)) deliverer.unproxy(s);
  return { plan, statuses };
}
