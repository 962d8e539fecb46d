// The operator's part of a SixBed4Prefix status: observedGeneration,
// conditions, nodesReady, livePeers and the name/prefix/listen of each node entry (the
// agents own the rest of their entries). Pure: computes the desired status,
// whether it differs from what the server has, and when to look again.
import type {
  AgentNodeConfig,
  AgentReport,
  Condition,
  ConditionStatus,
  ConditionType,
  FailoverStatus,
  KubeObject,
  NodeStatus,
  SixBed4PrefixStatus,
} from '../../kube/api.js';
import type { Problem } from '../../kube/prefix-spec.js';

export interface StatusInput {
  generation: number;
  now: Date;
  /** the prefix has a deletionTimestamp */
  deleting: boolean;
  /** nodes still to revert while deleting (reported, node exists, not reverted) */
  waitingRevert: string[];
  problems: Problem[];
  /** nodes that serve, with their share */
  serving: ReadonlyMap<string, AgentNodeConfig>;
  actual: SixBed4PrefixStatus | undefined;
  daemonSet: KubeObject | undefined;
  /** a ready report older than this does not count */
  staleAfterMs: number;
  /** names of existing Node objects */
  nodeExists: (name: string) => boolean;
  /** a node agent's report on this prefix and its last heartbeat (from its Lease), if it has one */
  agent?: (node: string) => { report?: AgentReport; heartbeat?: string } | undefined;
  /** with spec.failover: the group's status (failover.ts) */
  failover?: { status: FailoverStatus };
}

/** The fields of the status the operator applies (server-side apply, field manager sixbed4-operator). */
export interface OperatorStatus {
  observedGeneration: number;
  nodesReady: string;
  /** live peers over the nodes whose agent counts as ready (a stale count is no count) */
  livePeers: number;
  conditions: Condition[];
  nodes: ({ name: string; prefix: string; listen: string } & AgentReport)[];
  failover?: FailoverStatus;
}

const AGENT_FIELDS = ['ready', 'livePeers', 'lastReport', 'reverted', 'message', 'reason', 'failover'] as const;

/** A node's entry as the agent reports it now: its Lease's report over what the status holds. */
export function agentView(
  inp: Pick<StatusInput, 'actual' | 'agent'>,
  node: string,
): { entry: NodeStatus | undefined; heartbeat?: string } {
  const held = (inp.actual?.nodes ?? []).find((n) => n.name === node);
  const a = inp.agent?.(node);
  if (!a?.report) return { entry: held, ...(a?.heartbeat ? { heartbeat: a.heartbeat } : {}) };
  return { entry: { ...held, name: node, ...a.report }, ...(a.heartbeat ? { heartbeat: a.heartbeat } : {}) };
}

export interface StatusResult {
  status: OperatorStatus;
  /** true when the server's status lacks or differs in any operator field */
  changed: boolean;
  /** conditions whose status or reason changed (for Events) */
  transitions: { type: string; status: ConditionStatus; reason: string; message: string; previous?: string }[];
  /** node entries the operator no longer wants and no live agent keeps: to remove */
  staleEntries: string[];
  /** look again after this long (a ready report will go stale), if set */
  requeueAfterMs?: number;
  readyCount: number;
}

function list(names: readonly string[], max = 8): string {
  return names.length <= max ? names.join(', ') : `${names.slice(0, max).join(', ')} and ${names.length - max} more`;
}

/** When an agent last reported on a prefix (its entry's lastReport or its node's heartbeat, the later), in ms. */
export function agentLastSeen(entry: NodeStatus | undefined, heartbeat?: string): number | undefined {
  const times = [entry?.lastReport, heartbeat]
    .map((x) => (x === undefined ? NaN : Date.parse(x)))
    .filter(Number.isFinite);
  return times.length ? Math.max(...times) : undefined;
}

/**
 * Whether an agent's entry counts as ready now, and until when. The agent writes its entry when it changes; it is
 * alive while its last write or its node's heartbeat (the agent's Lease) is younger than staleAfterMs.
 */
export function agentReady(
  entry: NodeStatus | undefined,
  now: Date,
  staleAfterMs: number,
  heartbeat?: string,
): { ready: boolean; why: string; untilMs?: number } {
  if (!entry || entry.lastReport === undefined) return { ready: false, why: 'no report yet' };
  const beat = heartbeat === undefined ? NaN : Date.parse(heartbeat);
  const t = Math.max(Date.parse(entry.lastReport), Number.isFinite(beat) ? beat : -Infinity);
  if (!Number.isFinite(t)) return { ready: false, why: 'bad lastReport' };
  const age = now.getTime() - t;
  if (age >= staleAfterMs) return { ready: false, why: `no report for over ${Math.round(staleAfterMs / 1000)}s` };
  if (entry.ready !== true) return { ready: false, why: entry.message ? `not ready: ${entry.message}` : 'not ready' };
  return { ready: true, why: 'ready', untilMs: staleAfterMs - age };
}

export function computeStatus(inp: StatusInput): StatusResult {
  const actualNodes = new Map((inp.actual?.nodes ?? []).map((n) => [n.name, n]));
  const actualConds = new Map((inp.actual?.conditions ?? []).map((c) => [c.type, c]));
  const servingNames = [...inp.serving.keys()].sort();
  const tally = agentTally(inp, servingNames);
  const { conditions, transitions } = conditionsOf(inp, wantedConditions(inp, servingNames, tally), actualConds);
  const nodes = nodeEntries(inp, servingNames);
  const status: OperatorStatus = {
    observedGeneration: inp.generation,
    nodesReady: `${tally.readyCount}/${servingNames.length}`,
    livePeers: tally.livePeers,
    conditions,
    nodes,
    ...(inp.failover ? { failover: inp.failover.status } : {}),
  };
  const wanted = new Set(servingNames);
  return {
    status,
    changed: differs(inp.actual ?? {}, status, actualConds, actualNodes, wanted),
    transitions,
    staleEntries: staleEntries(inp, actualNodes, wanted),
    ...(tally.requeueAfterMs !== undefined ? { requeueAfterMs: tally.requeueAfterMs } : {}),
    readyCount: tally.readyCount,
  };
}

interface AgentTally {
  readyCount: number;
  /** the ready agents' live peers (of a failover group: the active node's only) */
  livePeers: number;
  /** the soonest a ready agent's report goes stale (+100 ms): look again then */
  requeueAfterMs?: number;
  /** `node (why)` of each serving node whose agent is not ready */
  notReady: string[];
}

/** The serving nodes' agents: how many are ready, their live peers, when one goes stale, and why others are not. */
function agentTally(inp: StatusInput, servingNames: readonly string[]): AgentTally {
  const t: AgentTally = { readyCount: 0, livePeers: 0, notReady: [] };
  for (const n of servingNames) {
    const v = agentView(inp, n);
    const r = agentReady(v.entry, inp.now, inp.staleAfterMs, v.heartbeat);
    if (r.ready) {
      t.readyCount++;
      // A failover group's peers are the active node's (a standby's count is what it saw while it was active).
      const counts = !inp.failover || inp.failover.status.active === n;
      if (counts)
        t.livePeers += Number.isInteger(v.entry?.livePeers) && v.entry!.livePeers! > 0 ? v.entry!.livePeers! : 0;
      if (r.untilMs !== undefined) t.requeueAfterMs = Math.min(t.requeueAfterMs ?? Infinity, r.untilMs + 100);
    } else t.notReady.push(`${n} (${r.why})`);
  }
  return t;
}

type WantedCondition = { status: ConditionStatus; reason: string; message: string };

/** Each condition's status, reason and message as they should be now. */
function wantedConditions(
  inp: StatusInput,
  servingNames: readonly string[],
  tally: AgentTally,
): Record<ConditionType, WantedCondition> {
  return {
    Degraded: inp.problems.length
      ? { status: 'True', reason: inp.problems[0]!.reason, message: inp.problems.map((p) => p.message).join('; ') }
      : {
          status: 'False',
          reason: 'AsExpected',
          message: servingNames.length ? `every selected node serves its share` : 'nothing to report',
        },
    Progressing: progressing(inp),
    Ready: readyCondition(inp, servingNames.length, tally),
  };
}

/** Ready: while deleting, never; of a failover group, its active node's; else every serving node's agent's. */
function readyCondition(inp: StatusInput, serving: number, { readyCount, notReady }: AgentTally): WantedCondition {
  if (inp.deleting) return { status: 'False', reason: 'Deleting', message: 'the prefix is being deleted' };
  if (inp.failover && serving > 0) return failoverReady(inp, inp.failover.status, readyCount, serving, notReady);
  if (serving === 0)
    return { status: 'False', reason: 'NoNodes', message: 'no node serves this prefix (see the Degraded condition)' };
  if (readyCount < serving)
    return {
      status: 'False',
      reason: 'AgentsNotReady',
      message: `${readyCount} of ${serving} agents ready; waiting for ${list(notReady)}`,
    };
  return { status: 'True', reason: 'AgentsReady', message: `${readyCount} of ${serving} agents ready` };
}

/**
 * The conditions to apply, in the order Ready, Progressing, Degraded: lastTransitionTime kept while the status stays,
 * now when it changes. A transition (for an Event) whenever the status or the reason changes.
 */
function conditionsOf(
  inp: StatusInput,
  conds: Record<ConditionType, WantedCondition>,
  actualConds: ReadonlyMap<string, Condition>,
): { conditions: Condition[]; transitions: StatusResult['transitions'] } {
  const transitions: StatusResult['transitions'] = [];
  const nowText = inp.now.toISOString().replace(/\.\d{3}Z$/, 'Z');
  const conditions: Condition[] = (['Ready', 'Progressing', 'Degraded'] as const).map((type) => {
    const want = conds[type];
    const have = actualConds.get(type);
    const same = have && have.status === want.status;
    if (!have || have.status !== want.status || have.reason !== want.reason) {
      transitions.push({ type, ...want, ...(have ? { previous: `${have.status}/${have.reason}` } : {}) });
    }
    return {
      type,
      status: want.status,
      observedGeneration: inp.generation,
      lastTransitionTime: same ? have.lastTransitionTime : nowText,
      reason: want.reason,
      message: want.message.slice(0, 32768),
    };
  });
  return { conditions, transitions };
}

/** The serving nodes' entries: the operator's name, prefix and listen, with the agent's fields as its Lease has them. */
function nodeEntries(inp: StatusInput, servingNames: readonly string[]): OperatorStatus['nodes'] {
  return servingNames.map((n) => {
    const c = inp.serving.get(n)!;
    const rep = inp.agent?.(n)?.report;
    const agentPart: AgentReport = {};
    for (const k of AGENT_FIELDS) if (rep?.[k] !== undefined) (agentPart as Record<string, unknown>)[k] = rep[k];
    // Where peers send: the advertised address when a DNAT forwards it to the node.
    return {
      name: n,
      prefix: c.prefix,
      listen: c.listen.advertise ?? `${c.listen.address}:${c.listen.port}`,
      ...agentPart,
    };
  });
}

/**
 * Whether the server's status lacks or differs in any operator field: the figures, a condition, a wanted node's
 * entry, the failover group, or our fields still on an entry no longer wanted (applying drops them).
 */
function differs(
  a: SixBed4PrefixStatus,
  status: OperatorStatus,
  actualConds: ReadonlyMap<string, Condition>,
  actualNodes: ReadonlyMap<string, NodeStatus>,
  wanted: ReadonlySet<string>,
): boolean {
  if (
    a.observedGeneration !== status.observedGeneration ||
    a.nodesReady !== status.nodesReady ||
    a.livePeers !== status.livePeers
  )
    return true;
  for (const c of status.conditions) {
    const h = actualConds.get(c.type);
    if (
      !h ||
      h.status !== c.status ||
      h.reason !== c.reason ||
      h.message !== c.message ||
      h.observedGeneration !== c.observedGeneration ||
      !h.lastTransitionTime
    )
      return true;
  }
  for (const n of status.nodes) {
    const h = actualNodes.get(n.name);
    if (!h || h.prefix !== n.prefix || h.listen !== n.listen) return true;
    if (AGENT_FIELDS.some((k) => n[k] !== undefined && n[k] !== h[k])) return true;
  }
  // An emptied block reads as none: once the apply stops setting status.failover (the prefix being deleted), a server
  // may keep `failover: {}`, and a write to remove what is already gone would repeat on every pass.
  const failoverOf = (f: object | undefined) => (f && Object.keys(f).length ? f : null);
  if (sorted(failoverOf(a.failover)) !== sorted(failoverOf(status.failover))) return true;
  for (const [name, h] of actualNodes)
    if (!wanted.has(name) && (h.prefix !== undefined || h.listen !== undefined)) return true;
  return false;
}

/** Entries of nodes no longer wanted whose node is gone or whose agent is gone (silent, or reverted): to remove. */
function staleEntries(
  inp: StatusInput,
  actualNodes: ReadonlyMap<string, NodeStatus>,
  wanted: ReadonlySet<string>,
): string[] {
  const out: string[] = [];
  for (const name of actualNodes.keys()) {
    if (wanted.has(name)) continue;
    const v = agentView(inp, name);
    const r = agentReady(v.entry, inp.now, inp.staleAfterMs, v.heartbeat);
    const agentGone =
      v.entry?.lastReport === undefined || r.why.startsWith('no report for') || v.entry.reverted === true;
    if (!inp.nodeExists(name) || agentGone) out.push(name);
  }
  return out;
}

/** Ready of a failover group: its active node holds the Lease and forwards (the standbys are NoStandbyReady's). */
function failoverReady(
  inp: StatusInput,
  f: FailoverStatus,
  readyCount: number,
  members: number,
  notReady: readonly string[],
): { status: ConditionStatus; reason: string; message: string } {
  if (!f.active)
    return {
      status: 'False',
      reason: 'NoActiveNode',
      message: `no member holds the failover Lease; ${readyCount} of ${members} agents ready`,
    };
  const activeDown = notReady.find((n) => n.startsWith(`${f.active} (`));
  if (activeDown)
    return { status: 'False', reason: 'ActiveNotReady', message: `the active node ${activeDown} does not forward yet` };
  return {
    status: 'True',
    reason: 'ActiveReady',
    message: `${f.active} is active and forwards; ${f.standbysReady ?? '0/0'} standbys ready`,
  };
}

function progressing(inp: StatusInput): { status: ConditionStatus; reason: string; message: string } {
  if (inp.deleting) {
    return inp.waitingRevert.length
      ? {
          status: 'True',
          reason: 'RevertingHosts',
          message: `waiting for ${list(inp.waitingRevert)} to revert the host configuration`,
        }
      : { status: 'True', reason: 'RevertingHosts', message: 'every node reverted; removing the finalizer' };
  }
  const ds = inp.daemonSet;
  if (!ds) return { status: 'True', reason: 'RollingOut', message: 'creating the agent DaemonSet' };
  const st = (ds.status ?? {}) as {
    observedGeneration?: number;
    desiredNumberScheduled?: number;
    updatedNumberScheduled?: number;
    numberAvailable?: number;
  };
  if ((st.observedGeneration ?? 0) < (ds.metadata.generation ?? 1)) {
    return {
      status: 'True',
      reason: 'RollingOut',
      message: 'the DaemonSet controller has not yet seen the current agent DaemonSet',
    };
  }
  const desired = st.desiredNumberScheduled ?? 0;
  const updated = st.updatedNumberScheduled ?? 0;
  const available = st.numberAvailable ?? 0;
  if (updated < desired || available < desired) {
    return {
      status: 'True',
      reason: 'RollingOut',
      message: `${updated} of ${desired} agent pods updated, ${available} available`,
    };
  }
  return { status: 'False', reason: 'RolledOut', message: `all ${desired} agent pods updated and available` };
}

/** Problems that agents report (a reason in their report): Degraded, with the node and what it said. */
export function agentProblems(serving: ReadonlyMap<string, AgentNodeConfig>, agent: StatusInput['agent']): Problem[] {
  const byReason = new Map<string, string[]>();
  for (const [node, share] of serving) {
    const r = agent?.(node)?.report;
    if (!r?.reason || r.ready) continue;
    const listen = `${share.listen.address}:${share.listen.port}`;
    byReason.set(r.reason, [
      ...(byReason.get(r.reason) ?? []),
      `node ${node} cannot serve on ${listen}: ${r.message ?? r.reason}`,
    ]);
  }
  return [...byReason].map(([reason, msgs]) => ({ reason, message: msgs.join('; ') }));
}

/** JSON with object keys sorted: the server returns what it merged in its own order. */
function sorted(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x && typeof x === 'object' && !Array.isArray(x)
      ? Object.fromEntries(Object.entries(x as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : 1)))
      : x,
  );
}
