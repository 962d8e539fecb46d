// One reconcile of one SixBed4Prefix: compare what should exist with what the
// caches say exists, and write only the differences.
//
//   1. metadata: the finalizer and the durable /64 allocation annotation
//      (JSON merge patch with a resourceVersion precondition: race-free);
//   2. the agent ConfigMap (server-side apply, field manager sixbed4-operator,
//      only when a field we set differs: drift repair); the node agents, one
//      DaemonSet for the cluster that the chart owns, follow it;
//   3. deletion: wait for the agents to revert their hosts, then drop the
//      finalizer (owner references let the garbage collector remove the rest);
//   4. status: conditions, nodesReady, node entries (server-side apply on the
//      status subresource; agents apply their own fields of their entries).
import type { Logger } from '../../lib/log.js';
import {
  ALLOCATIONS_ANNOTATION,
  API_VERSION,
  CLEANUP_TIMEOUT_ANNOTATION,
  FAILOVER_LEASE_COMPONENT,
  FIELD_MANAGER,
  FINALIZER,
  KIND,
  LABEL_COMPONENT,
  LABEL_MANAGED_BY,
  LABEL_NAME,
  LABEL_PREFIX,
  MANAGED_BY,
  failoverLeaseName,
  AGENT_REPORTS_ANNOTATION,
  agentConfigMapName,
  agentLeaseName,
  type AgentNodeConfig,
  type AgentReport,
  type KubeObject,
  type SixBed4Prefix,
} from '../../kube/api.js';
import { formatAllocations, parseAllocations } from '../../kube/subnets.js';
import { firstDrift } from './drift.js';
import type { Recorder } from '../../kube/events.js';
import { isNotFound, paths, type JsonPatchOp, type Kube } from '../../kube/client.js';
import { nodeInfo, plan, type Plan } from './plan.js';
import { renderConfigMap, type RenderOptions } from './render.js';
import { checkSpec, type Problem } from '../../kube/prefix-spec.js';
import { agentLastSeen, agentProblems, agentReady, agentView, computeStatus } from './status.js';
import type { PrefixView } from '../metrics.js';
import { failoverStatus, holderNode, membersOf, type GroupLease } from './failover.js';
import { ownerReference } from './render.js';

export interface Cache<T extends KubeObject> {
  get(name: string, namespace?: string): T | undefined;
  list(namespace?: string): readonly T[];
}

export interface ReconcileDeps {
  kube: Kube;
  namespace: string;
  render: RenderOptions;
  prefixes: Cache<SixBed4Prefix>;
  nodes: Cache<KubeObject>;
  daemonSets: Cache<KubeObject>;
  configMaps: Cache<KubeObject>;
  /** the agents' DaemonSet (the chart's), whose rollout the Progressing condition follows */
  agentDaemonSet: string;
  /** the node agents' heartbeat Leases (agentLeaseName), if watched */
  leases?: Cache<KubeObject>;
  /** the failover groups' Leases (failoverLeaseName), if watched */
  failoverLeases?: Cache<KubeObject>;
  /** failover Lease name -> the holder that last released it and its reason, as the watch saw (a handover, not a loss) */
  failoverReleases?: ReadonlyMap<string, { by: string; reason?: string }>;
  recorder: Recorder;
  log: Logger;
  cleanupTimeoutMs: number;
  staleAfterMs: number;
  now?: () => Date;
  /**
   * What this process last saw the server hold for each object it renders
   * (path -> rendered JSON): a difference to something that already matched
   * is drift; a difference to something new (spec change, operator upgrade)
   * is an update.
   */
  seen?: Map<string, string>;
}

export interface ReconcileResult {
  requeueAfterMs?: number;
  /** state for the prefixes gauge */
  state?: 'ready' | 'degraded' | 'progressing' | 'deleting';
  /** for the per-prefix gauges: its problems' reasons and its agents' reports */
  view?: PrefixView;
}

export async function reconcilePrefix(d: ReconcileDeps, name: string): Promise<ReconcileResult> {
  const cached = d.prefixes.get(name);
  if (!cached) return {};
  const now = d.now?.() ?? new Date();
  const deleting = cached.metadata.deletionTimestamp !== undefined;
  if (deleting && !(cached.metadata.finalizers ?? []).includes(FINALIZER)) return {};
  const log = d.log.child({ prefix: name });

  const checked = checkSpec(cached.spec);
  const problems: Problem[] = [...checked.problems];
  const prev = parseAllocations(cached.metadata.annotations?.[ALLOCATIONS_ANNOTATION]);
  const pl = checked.spec ? planOf(d, name, cached, checked.spec, prev.record) : undefined;
  if (pl) problems.push(...pl.problems);

  // 1. metadata (every later step reads the prefix as this patch returned it)
  const p = await writeMetadata(d, name, cached, pl, prev.error);

  // 2. the failover group's Lease (before the shares that name it, so that agents find it), then the ConfigMap
  const serving: ReadonlyMap<string, AgentNodeConfig> = pl?.nodes ?? new Map();
  if (checked.spec?.failover && serving.size && !deleting) await ensureFailoverLease(d, p, log);
  if (checked.spec && pl) await ensureAgentConfigMap(d, name, p, checked.spec, serving, log);

  // 3. deletion
  const nodeExists = (n: string) => d.nodes.get(n) !== undefined;
  const agent = (node: string) => agentOnLease(d.leases?.get(agentLeaseName(node), d.namespace), name);
  let requeueAfterMs: number | undefined;
  let waitingRevert: string[] = [];
  if (deleting) {
    const del = await deletionStep(d, name, p, now, agent, nodeExists);
    if (del === 'done') return {};
    ({ waitingRevert, requeueAfterMs } = del);
  }

  // 4. status
  problems.push(...agentProblems(serving, agent));
  const fo =
    checked.spec?.failover && serving.size && !deleting
      ? failoverPart(d, name, p, now, serving, agent, nodeExists, checked.spec.failover.leaseDurationMs)
      : undefined;
  if (fo) {
    problems.push(...fo.problems);
    if (fo.requeueAfterMs !== undefined) requeueAfterMs = Math.min(requeueAfterMs ?? Infinity, fo.requeueAfterMs);
  }
  const st = computeStatus({
    generation: p.metadata.generation ?? 0,
    now,
    deleting,
    waitingRevert,
    problems,
    serving,
    actual: p.status,
    daemonSet: d.daemonSets.get(d.agentDaemonSet, d.namespace),
    staleAfterMs: d.staleAfterMs,
    nodeExists,
    agent,
    ...(fo ? { failover: fo.failover } : {}),
  });
  if (st.changed && !(await writeStatus(d, name, p, st, fo?.failedOver, log))) return {};
  if (st.staleEntries.length) await removeEntries(d, name, st.staleEntries, log);
  if (st.requeueAfterMs !== undefined) requeueAfterMs = Math.min(requeueAfterMs ?? Infinity, st.requeueAfterMs);

  const state = deleting
    ? 'deleting'
    : problems.length > 0
      ? 'degraded'
      : st.readyCount === serving.size && serving.size > 0
        ? 'ready'
        : 'progressing';
  return {
    ...(requeueAfterMs !== undefined ? { requeueAfterMs } : {}),
    state,
    view: { degraded: problems.map((x) => x.reason), agents: agentGauges(d, p, serving, agent) },
  };
}

/** The agent's report and heartbeat on its node's Lease. */
type AgentOf = (node: string) => ReturnType<typeof agentOnLease>;
type CheckedPrefixSpec = NonNullable<ReturnType<typeof checkSpec>['spec']>;

/**
 * The plan for a valid spec: which nodes serve which /64, against the other prefixes (their prefixes, and the
 * listen addresses their ConfigMaps hand out) and, with failover, the group's members and the Lease's holder.
 */
function planOf(
  d: ReconcileDeps,
  name: string,
  p: SixBed4Prefix,
  spec: CheckedPrefixSpec,
  record: Parameters<typeof plan>[4],
): Plan {
  const others = d.prefixes.list().map((o) => ({
    name: o.metadata.name ?? '',
    prefix: typeof o.spec?.prefix === 'string' ? o.spec.prefix : '',
    ...(o.metadata.creationTimestamp ? { creationTimestamp: o.metadata.creationTimestamp } : {}),
    listens: listensOf(d.configMaps.get(agentConfigMapName(o.metadata.name ?? ''), d.namespace)),
  }));
  const failoverState = spec.failover
    ? (() => {
        const members = membersOf(sharesOf(d.configMaps.get(agentConfigMapName(name), d.namespace)));
        const holder = holderNode(groupLease(d, name)?.holder);
        // Which members' agents are ready, and as what: a drained holder is told to step aside only once another
        // member can take over (planFailover).
        const now = d.now?.() ?? new Date();
        const agent = (n: string) => agentOnLease(d.leases?.get(agentLeaseName(n), d.namespace), name);
        const ready: Record<string, string> = {};
        for (const m of members ?? []) {
          const v = agentView({ actual: p.status, agent }, m);
          if (agentReady(v.entry, now, d.staleAfterMs, v.heartbeat).ready && v.entry?.failover)
            ready[m] = v.entry.failover;
        }
        return { ...(members ? { members } : {}), ...(holder ? { holder } : {}), ready };
      })()
    : {};
  return plan(name, p.metadata.creationTimestamp, spec, d.nodes.list().map(nodeInfo), record, others, failoverState);
}

/**
 * Step 1: the finalizer (added unless deleting) and the durable /64 allocation annotation, in one merge patch with a
 * resourceVersion precondition (a concurrent writer makes it fail and the reconcile retry), then an Event per
 * allocation change. Returns the prefix as the patch left it, or as it was when nothing needed writing.
 */
async function writeMetadata(
  d: ReconcileDeps,
  name: string,
  p: SixBed4Prefix,
  pl: Plan | undefined,
  allocationsError: string | undefined,
): Promise<SixBed4Prefix> {
  const finalizers = p.metadata.finalizers ?? [];
  const deleting = p.metadata.deletionTimestamp !== undefined;
  const wantAlloc = pl
    ? formatAllocations(pl.allocation.allocations)
    : p.metadata.annotations?.[ALLOCATIONS_ANNOTATION];
  const addFinalizer = !deleting && !finalizers.includes(FINALIZER);
  const allocChanged = wantAlloc !== undefined && wantAlloc !== p.metadata.annotations?.[ALLOCATIONS_ANNOTATION];
  if (!addFinalizer && !allocChanged) return p;
  const patch = {
    metadata: {
      resourceVersion: p.metadata.resourceVersion,
      ...(addFinalizer ? { finalizers: [...finalizers, FINALIZER] } : {}),
      ...(allocChanged ? { annotations: { [ALLOCATIONS_ANNOTATION]: wantAlloc } } : {}),
    },
  };
  const patched = await d.kube.mergePatch<SixBed4Prefix>(paths.prefix(name), patch, FIELD_MANAGER);
  if (allocationsError) d.recorder.event(patched, 'Warning', 'AllocationsReset', allocationsError);
  if (pl) {
    for (const msg of pl.allocation.dropped)
      d.recorder.event(patched, 'Warning', 'AllocationDropped', `dropped allocation ${msg}`);
    for (const n of pl.allocation.reclaimed)
      d.recorder.event(
        patched,
        'Normal',
        'AllocationReclaimed',
        `the /64 kept for node ${n} (no longer selected) was given to another node`,
      );
    for (const n of pl.allocation.added)
      d.recorder.event(patched, 'Normal', 'Allocated', `node ${n} serves ${pl.allocation.assigned.get(n)}`);
  }
  return patched;
}

/** Step 2's ConfigMap: what the agents read (each serving node's share), applied only when it differs. */
async function ensureAgentConfigMap(
  d: ReconcileDeps,
  name: string,
  p: SixBed4Prefix,
  spec: CheckedPrefixSpec,
  serving: ReadonlyMap<string, AgentNodeConfig>,
  log: Logger,
): Promise<void> {
  const cm = renderConfigMap(p, spec.prefix.text, spec.metricsPort, serving, d.render);
  await ensure(
    d,
    p,
    'ConfigMap',
    paths.configMap(d.namespace, agentConfigMapName(name)),
    d.configMaps.get(agentConfigMapName(name), d.namespace),
    cm,
    log,
  );
}

/**
 * Step 3, for a prefix being deleted: the finalizer stays until every node that configured its host (reported on
 * the prefix, in its status entry or its Lease, and still exists) has reverted it, or the cleanup timeout is over.
 * 'done' when the finalizer was removed; else the nodes still waited for and when to look again.
 */
async function deletionStep(
  d: ReconcileDeps,
  name: string,
  p: SixBed4Prefix,
  now: Date,
  agent: AgentOf,
  nodeExists: (n: string) => boolean,
): Promise<'done' | { waitingRevert: string[]; requeueAfterMs: number }> {
  // Every node that has reported on this prefix, in its status entry or its Lease.
  const reportedNodes = [...new Set([...(p.status?.nodes ?? []).map((e) => e.name), ...leaseNodesReporting(d, name)])];
  const view = (n: string) => agentView({ actual: p.status, agent }, n).entry;
  const waitingRevert = reportedNodes
    .filter((n) => view(n)?.lastReport !== undefined && view(n)?.reverted !== true && nodeExists(n))
    .sort();
  const timeoutMs = cleanupTimeout(p, d.cleanupTimeoutMs);
  const elapsed = now.getTime() - Date.parse(p.metadata.deletionTimestamp!);
  if (waitingRevert.length === 0) {
    const reported = reportedNodes.some((n) => view(n)?.lastReport !== undefined);
    d.recorder.event(
      p,
      'Normal',
      'HostsReverted',
      reported
        ? 'every node reverted its host configuration (or is gone); removing the finalizer'
        : 'no agent had configured a host; removing the finalizer',
    );
    await removeFinalizer(d, p);
    return 'done';
  }
  if (elapsed >= timeoutMs) {
    d.recorder.event(
      p,
      'Warning',
      'CleanupTimedOut',
      `gave up after ${Math.round(timeoutMs / 1000)}s waiting for ${waitingRevert.join(', ')} to revert the host configuration; removing the finalizer (revert those hosts by hand: sixbed4 host revert)`,
    );
    await removeFinalizer(d, p);
    return 'done';
  }
  return { waitingRevert, requeueAfterMs: Math.min(timeoutMs - elapsed + 50, 5_000) };
}

/**
 * Step 4's failover part, for a served prefix with failover: the group's status from its Lease and its members'
 * agents, its problems, a failover to announce, and when to look again while a node is active.
 */
function failoverPart(
  d: ReconcileDeps,
  name: string,
  p: SixBed4Prefix,
  now: Date,
  serving: ReadonlyMap<string, AgentNodeConfig>,
  agent: AgentOf,
  nodeExists: (n: string) => boolean,
  leaseDurationMs: number,
): {
  problems: Problem[];
  failover: NonNullable<Parameters<typeof computeStatus>[0]['failover']>;
  failedOver: ReturnType<typeof failoverStatus>['failover'];
  requeueAfterMs?: number;
} {
  const members = [...serving.values()][0]!.failover!.members;
  const fs = failoverStatus({
    now,
    members,
    lease: groupLease(d, name),
    previous: p.status?.failover,
    nodeExists,
    nodeCordoned: (n) => nodeInfo(d.nodes.get(n) ?? { metadata: {} }).cordoned === true,
    member: (n) => {
      const v = agentView({ actual: p.status, agent }, n);
      const r = agentReady(v.entry, now, d.staleAfterMs, v.heartbeat);
      return { entry: v.entry, ready: r.ready, why: r.why, heartbeatStale: r.why.startsWith('no report for') };
    },
  });
  return {
    problems: fs.problems,
    failover: { status: fs.status },
    failedOver: fs.failover,
    // Renewals are not watched one by one (controller.ts): look again in a while, so that an active node whose Lease
    // expired with nobody taking over is no longer shown active.
    ...(fs.active ? { requeueAfterMs: Math.max(5_000, leaseDurationMs + 1_000) } : {}),
  };
}

/**
 * Writes a changed status (server-side apply on the status subresource) and announces its transitions and a
 * failover as Events. False when the prefix is gone meanwhile: then there is nothing more to do.
 */
async function writeStatus(
  d: ReconcileDeps,
  name: string,
  p: SixBed4Prefix,
  st: ReturnType<typeof computeStatus>,
  failedOver: ReturnType<typeof failoverStatus>['failover'] | undefined,
  log: Logger,
): Promise<boolean> {
  try {
    await d.kube.apply(
      paths.prefixStatus(name),
      { apiVersion: API_VERSION, kind: KIND, metadata: { name }, status: st.status },
      FIELD_MANAGER,
    );
  } catch (e) {
    if (isNotFound(e)) return false;
    throw e;
  }
  for (const t of st.transitions) {
    const ev = transitionEvent(t, t.previous?.startsWith('True/') ?? false);
    if (ev) d.recorder.event(p, ev.type, ev.reason, ev.message);
  }
  if (failedOver) {
    // A loss is a Warning; a planned handover and the first election are Normal.
    const planned = failedOver.reason === 'Handover' || failedOver.reason === 'Elected';
    log.info(`failover: ${failedOver.message}`, { reason: failedOver.reason });
    d.recorder.event(
      p,
      planned ? 'Normal' : 'Warning',
      failedOver.reason === 'Elected' ? 'ActiveElected' : 'FailedOver',
      `${failedOver.reason}: ${failedOver.message}`,
    );
  }
  return true;
}

/**
 * The serving nodes' agents for the per-prefix gauges, read when the gauges are scraped: heartbeats renew the node
 * Leases (the cache) without a reconcile.
 */
function agentGauges(
  d: ReconcileDeps,
  p: SixBed4Prefix,
  serving: ReadonlyMap<string, AgentNodeConfig>,
  agent: AgentOf,
): PrefixView['agents'] {
  const nodes = [...serving.keys()].sort();
  return () =>
    nodes.map((node) => {
      const v = agentView({ actual: p.status, agent }, node);
      const lastSeenMs = agentLastSeen(v.entry, v.heartbeat);
      return {
        node,
        ready: agentReady(v.entry, d.now?.() ?? new Date(), d.staleAfterMs, v.heartbeat).ready,
        ...(lastSeenMs !== undefined ? { lastSeenMs } : {}),
      };
    });
}

/** Applies desired unless actual already carries every field of it. */
async function ensure(
  d: ReconcileDeps,
  p: SixBed4Prefix,
  kind: string,
  path: string,
  actual: KubeObject | undefined,
  desired: KubeObject,
  log: Logger,
): Promise<void> {
  // list items carry no apiVersion/kind: compare the rest
  const { apiVersion: _a, kind: _k, ...compared } = desired;
  const key = JSON.stringify(compared);
  const drift = actual ? firstDrift(actual, compared) : '(missing)';
  const matchedBefore = d.seen?.get(path) === key;
  if (drift === undefined) {
    d.seen?.set(path, key);
    return;
  }
  await d.kube.apply(path, desired, FIELD_MANAGER);
  d.seen?.set(path, key);
  const what = `${kind} ${d.namespace}/${desired.metadata.name}`;
  if (!actual) {
    d.recorder.event(
      p,
      matchedBefore ? 'Warning' : 'Normal',
      'Created',
      `${matchedBefore ? 're-created (it had been deleted)' : 'created'} ${what}`,
    );
  } else if (matchedBefore) {
    // the server held exactly this before: someone else changed it since
    log.warn(`restored ${what}: ${drift} had been changed`);
    d.recorder.event(p, 'Warning', 'DriftRepaired', `restored ${what}: ${drift} had been changed by someone else`);
  } else {
    log.info(`updated ${what} (${drift})`);
    d.recorder.event(p, 'Normal', 'Updated', `updated ${what} (${drift})`);
  }
}

function cleanupTimeout(p: SixBed4Prefix, fallbackMs: number): number {
  const v = p.metadata.annotations?.[CLEANUP_TIMEOUT_ANNOTATION];
  if (v !== undefined && /^\d+(\.\d+)?$/.test(v)) return Number(v) * 1000;
  return fallbackMs;
}

async function removeFinalizer(d: ReconcileDeps, p: SixBed4Prefix): Promise<void> {
  const i = (p.metadata.finalizers ?? []).indexOf(FINALIZER);
  if (i < 0) return;
  const ops: JsonPatchOp[] = [
    { op: 'test', path: `/metadata/finalizers/${i}`, value: FINALIZER },
    { op: 'remove', path: `/metadata/finalizers/${i}` },
  ];
  try {
    await d.kube.jsonPatch(paths.prefix(p.metadata.name!), ops, FIELD_MANAGER);
  } catch (e) {
    if (!isNotFound(e)) throw e;
  }
}

/** Removes node entries that nobody serves or reports any more (JSON patch, guarded by a test of the name). */
async function removeEntries(d: ReconcileDeps, name: string, entries: string[], log: Logger): Promise<void> {
  const fresh = await d.kube.get<SixBed4Prefix>(paths.prefix(name));
  const nodes = fresh?.status?.nodes ?? [];
  const ops: JsonPatchOp[] = [];
  // highest index first so earlier indexes stay valid
  const idx = entries
    .map((n) => nodes.findIndex((e) => e.name === n))
    .filter((i) => i >= 0)
    .sort((a, b) => b - a);
  for (const i of idx)
    ops.push(
      { op: 'test', path: `/status/nodes/${i}/name`, value: nodes[i]!.name },
      { op: 'remove', path: `/status/nodes/${i}` },
    );
  if (!ops.length) return;
  log.info(`removing stale node entries: ${entries.join(', ')}`);
  await d.kube.jsonPatch(paths.prefixStatus(name), ops, FIELD_MANAGER);
}

function transitionEvent(
  t: { type: string; status: string; reason: string; message: string },
  wasTrue: boolean,
): { type: 'Normal' | 'Warning'; reason: string; message: string } | undefined {
  if (t.type === 'Degraded') {
    if (t.status === 'True') return { type: 'Warning', reason: t.reason, message: t.message };
    if (wasTrue) return { type: 'Normal', reason: 'Recovered', message: 'no longer degraded: ' + t.message };
  }
  if (t.type === 'Ready') {
    if (t.status === 'True') return { type: 'Normal', reason: 'Ready', message: t.message };
    if (wasTrue && t.reason !== 'Deleting') return { type: 'Warning', reason: 'NotReady', message: t.message };
  }
  return undefined;
}

type LeaseObject = KubeObject & { spec?: { renewTime?: string; holderIdentity?: string } };

/** A node agent's Lease, read for one prefix: its report on it (if any) and its last renewal. */
export function agentOnLease(
  lease: KubeObject | undefined,
  prefixName: string,
): { report?: AgentReport; heartbeat?: string } | undefined {
  if (!lease) return undefined;
  const l = lease as LeaseObject;
  let report: AgentReport | undefined;
  try {
    report = (JSON.parse(l.metadata.annotations?.[AGENT_REPORTS_ANNOTATION] ?? '{}') as Record<string, AgentReport>)[
      prefixName
    ];
  } catch {
    /* an unreadable annotation counts as no report */
  }
  return { ...(report ? { report } : {}), ...(l.spec?.renewTime ? { heartbeat: l.spec.renewTime } : {}) };
}

/** Nodes whose agent's Lease carries a report on this prefix. */
function leaseNodesReporting(d: ReconcileDeps, prefixName: string): string[] {
  const out: string[] = [];
  for (const l of d.leases?.list(d.namespace) ?? []) {
    const node = (l as LeaseObject).spec?.holderIdentity;
    if (node && agentOnLease(l, prefixName)?.report) out.push(node);
  }
  return out;
}

/** node -> "address:port" of each share in a prefix's agent ConfigMap. */
function listensOf(cm: KubeObject | undefined): Map<string, string> {
  const out = new Map<string, string>();
  for (const [key, text] of Object.entries((cm as { data?: Record<string, string> } | undefined)?.data ?? {})) {
    const m = /^node\.(.+)\.json$/.exec(key);
    if (!m) continue;
    try {
      const share = JSON.parse(text) as AgentNodeConfig;
      out.set(m[1]!, `${share.listen.address}:${share.listen.port}`);
    } catch {
      /* not ours to judge: the drift repair rewrites it */
    }
  }
  return out;
}

/** The shares in a prefix's agent ConfigMap. */
function sharesOf(cm: KubeObject | undefined): AgentNodeConfig[] {
  const out: AgentNodeConfig[] = [];
  for (const [key, text] of Object.entries((cm as { data?: Record<string, string> } | undefined)?.data ?? {})) {
    if (!/^node\..+\.json$/.test(key)) continue;
    try {
      out.push(JSON.parse(text) as AgentNodeConfig);
    } catch {
      /* the drift repair rewrites it */
    }
  }
  return out;
}

type FailoverLease = KubeObject & {
  spec?: {
    holderIdentity?: string;
    renewTime?: string;
    acquireTime?: string;
    leaseDurationSeconds?: number;
    leaseTransitions?: number;
  };
};

/** A failover group's Lease as the operator's cache holds it. */
function groupLease(d: ReconcileDeps, prefixName: string): GroupLease | undefined {
  const leaseName = failoverLeaseName(prefixName);
  const l = d.failoverLeases?.get(leaseName, d.namespace) as FailoverLease | undefined;
  if (!l) return undefined;
  const sp = l.spec ?? {};
  const released = d.failoverReleases?.get(leaseName);
  return {
    ...(sp.holderIdentity ? { holder: sp.holderIdentity } : {}),
    ...(sp.renewTime ? { renewTime: sp.renewTime } : {}),
    ...(sp.acquireTime ? { acquireTime: sp.acquireTime } : {}),
    ...(sp.leaseDurationSeconds !== undefined ? { leaseDurationSeconds: sp.leaseDurationSeconds } : {}),
    ...(sp.leaseTransitions !== undefined ? { transitions: sp.leaseTransitions } : {}),
    ...(released ? { released } : {}),
  };
}

/**
 * Creates the group's Lease, held by nobody, owned by the prefix (the garbage collector deletes it with the prefix)
 * and labelled for the operator's watch. The members write only its spec; one that finds it missing may create it
 * the same way.
 */
async function ensureFailoverLease(d: ReconcileDeps, p: SixBed4Prefix, log: Logger): Promise<void> {
  const leaseName = failoverLeaseName(p.metadata.name!);
  if (!d.failoverLeases || d.failoverLeases.get(leaseName, d.namespace)) return;
  try {
    await d.kube.create(paths.leases(d.namespace), {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: {
        name: leaseName,
        namespace: d.namespace,
        ownerReferences: [ownerReference(p)],
        labels: {
          [LABEL_NAME]: 'sixbed4',
          [LABEL_COMPONENT]: FAILOVER_LEASE_COMPONENT,
          [LABEL_PREFIX]: p.metadata.name!,
          [LABEL_MANAGED_BY]: MANAGED_BY,
        },
      },
      spec: {},
    });
    log.info(`created the failover Lease ${d.namespace}/${leaseName}`);
  } catch (e) {
    if ((e as { status?: number }).status !== 409) throw e; // a member created it first: the same Lease
  }
}
