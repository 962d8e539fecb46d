// A /64 served by a group of nodes, one active at a time (spec.failover): which nodes are the group, what each one's
// share says, what the operator can see that makes a group unable to fail over (refused, never half-served), and
// the group's status from its Lease and the members' reports. Pure.
//
// What the operator can see: the Node objects (their addresses: a 1:1-NAT ExternalIP means a cloud without a shared
// layer 2; a next hop or floating address that is a node's own address cannot move) and the spec. What only the
// agents can see (the floating address outside the uplink's subnet, a next hop not on the uplink's link, an uplink
// that is no Ethernet, announcements refused) they report with a reason, and agentProblems() makes it Degraded.
import {
  failoverLeaseName,
  tunnelName,
  type AgentNodeConfig,
  type FailoverStatus,
  type NodeStatus,
} from '../../kube/api.js';
import { formatIPv6, parseIPv6, parsePrefix } from '../../lib/ip.js';
import type { AllocationResult } from '../../kube/subnets.js';
import type { CheckedSpec, Problem } from '../../kube/prefix-spec.js';
import type { NodeInfo } from './plan.js';

/** What the operator knows of a group from before: the members in its ConfigMap, and the Lease's holder. */
export interface FailoverState {
  /** the members of the current share, in their order of preference */
  members?: readonly string[];
  /** the node holding the group's Lease now, if any */
  holder?: string;
  /**
   * The members whose agents are ready, with the part they report (Active, Standby). Unknown (undefined): a drained
   * member is marked whenever another member's node is not cordoned, as before the operator read the reports.
   */
  ready?: Readonly<Record<string, string>>;
}

export interface FailoverPlan {
  allocation: AllocationResult;
  nodes: Map<string, AgentNodeConfig>;
  problems: Problem[];
}

function list(names: readonly string[]): string {
  return names.length <= 8 ? names.join(', ') : `${names.slice(0, 8).join(', ')} and ${names.length - 8} more`;
}

/**
 * The group: the members from before that are still selected, in their order, then the other selected nodes by
 * name; 1 + standbys of them. The order never follows the Lease (a failover must not change the members' shares,
 * which would restart their routers), but the holder is never left out when the group shrinks: a change of members
 * never moves the /64 by itself. Cordoned nodes (kubectl cordon, drain) come last: a drained member leaves the
 * group when another node can take its place, and its agent, whose share goes, hands the /64 over as it stops.
 */
export function chooseMembers(
  selected: readonly string[],
  want: number,
  state: FailoverState,
  cordoned: ReadonlySet<string> = new Set(),
): string[] {
  const sel = new Set(selected);
  const order = [...(state.members ?? []), ...(state.holder ? [state.holder] : []), ...[...selected].sort()];
  const out: string[] = [];
  for (const pass of [false, true]) {
    for (const n of order)
      if (sel.has(n) && cordoned.has(n) === pass && !out.includes(n) && out.length < want) out.push(n);
  }
  const h = state.holder;
  if (h && sel.has(h) && !cordoned.has(h) && !out.includes(h) && out.length > 0) out[out.length - 1] = h;
  // The members that stay keep their order (the shares' text stays the same), the new ones after them.
  const before = (state.members ?? []).filter((m) => out.includes(m));
  return [...before, ...out.filter((m) => !before.includes(m))];
}

export function planFailover(
  name: string,
  spec: CheckedSpec,
  selected: readonly NodeInfo[],
  previous: Record<string, string>,
  state: FailoverState,
  selectorText: string,
): FailoverPlan {
  const f = spec.failover!;
  const problems: Problem[] = [];
  const sub = `${spec.prefix.text.replace(/\/\d+$/, '')}/64`;
  const members = chooseMembers(
    selected.map((n) => n.name),
    1 + f.standbys,
    state,
    new Set(selected.filter((n) => n.cordoned).map((n) => n.name)),
  );
  const empty = (): FailoverPlan => ({
    allocation: {
      allocations: previous,
      assigned: new Map(),
      unassigned: selected.map((n) => n.name),
      dropped: [],
      reclaimed: [],
      added: [],
    },
    nodes: new Map(),
    problems,
  });
  if (members.length === 0) {
    problems.push({
      reason: 'NoNodesSelected',
      message: `${selectorText} matches no node; nothing serves ${spec.prefix.text}`,
    });
    return empty();
  }

  // Refusals: a group that could not move its addresses is not served at all (one node serving alone would look
  // like failover and not be).
  const byName = new Map(selected.map((n) => [n.name, n]));
  const infos = members.map((m) => byName.get(m)!);
  const natted = infos.filter((n) => n.internal !== undefined);
  if (natted.length) {
    problems.push({
      reason: 'FailoverNeedsLayer2',
      message:
        `failover cannot serve ${spec.prefix.text}: node ${list(natted.map((n) => `${n.name} (ExternalIP ${n.address} in front of InternalIP ${n.internal})`))} ` +
        'sits behind a 1:1 NAT, as in a cloud without a shared layer 2, where no announcement can move the floating address; ' +
        "use the provider's own address failover, or nodes on one Ethernet segment with the provider's router",
    });
  }
  const floating = spec.listenAddress!;
  const ownsFloating = infos.filter((n) => n.address === floating || n.internal === floating);
  if (ownsFloating.length) {
    problems.push({
      reason: 'FloatingAddressIsNodeAddress',
      message:
        `listen.address ${floating} is node ${list(ownsFloating.map((n) => n.name))}'s own address, which cannot move to another node; ` +
        "choose a free address on the nodes' segment as the floating one",
    });
  }
  if (f.nextHop) {
    const hop = formatIPv6(parseIPv6(f.nextHop));
    const owner = infos.filter((n) => (n.v6 ?? []).includes(hop));
    if (owner.length) {
      problems.push({
        reason: 'NextHopNotMovable',
        message:
          `failover.nextHop ${hop} is node ${list(owner.map((n) => n.name))}'s own address: the provider routes ${spec.prefix.text} to that ` +
          'machine, and no announcement can move it; ask the provider to route the /64 to an address of its own for the group ' +
          '(failover.nextHop), or put the /64 on-link (upstream OnLink)',
      });
    }
  }
  if (problems.length) return empty();

  if (members.length < 1 + f.standbys) {
    problems.push({
      reason: 'TooFewNodes',
      message:
        `spec.failover.standbys ${f.standbys} needs ${1 + f.standbys} nodes, but ${selectorText} matches ${selected.length} ` +
        `(${list(selected.map((n) => n.name))}); ${members.length === 1 ? `${members[0]} serves alone, with no standby` : `${members.length} nodes serve`}`,
    });
  }
  const leaseName = failoverLeaseName(name);
  const nodes = new Map<string, AgentNodeConfig>();
  // A drained member (its node cordoned) is told so in its share once another member can do without it: its agent
  // restarts the member, which withdraws and releases the Lease and stands aside, and the standby takes over at once.
  // Holding the Lease, it is told only once another member is a ready standby (one whose agent is starting would
  // leave the /64 without a node, and the drained one would take it back); standing by, once another member is
  // ready at all. Without the reports (state.ready unknown): whenever another member's node is not cordoned.
  const cordoned = new Set(infos.filter((n) => n.cordoned).map((n) => n.name));
  const ready = state.ready;
  const replaceable = (m: string) =>
    members.some(
      (o) =>
        o !== m &&
        !cordoned.has(o) &&
        (ready === undefined || (m === state.holder ? ready[o] === 'Standby' : ready[o] !== undefined)),
    );
  for (const m of members) {
    nodes.set(m, {
      prefix: sub,
      listen: { address: floating, port: spec.port, ...(spec.advertise ? { advertise: spec.advertise } : {}) },
      ...(spec.uplink ? { uplink: spec.uplink } : {}),
      localAddresses: spec.localAddresses.map((a) =>
        a.perNode
          ? formatIPv6(Uint8Array.from([...parsePrefix(sub).bytes.subarray(0, 8), ...a.bytes.subarray(8)]))
          : a.text,
      ),
      localAddressMode: spec.localAddressMode,
      routes: spec.routes,
      // On-link at the provider: the active node answers for the peers' addresses (WhenOnLink stays as asked).
      ndpProxy: f.upstream === 'OnLink' && spec.ndpProxy === 'off' ? 'on' : spec.ndpProxy,
      ...(spec.fastPath !== 'off' ? { fastPath: spec.fastPath } : {}),
      ...(spec.fastPathDirect ? { fastPathDirect: true as const } : {}),
      ...(spec.fastPathXdp ? { fastPathXdp: true as const } : {}),
      tunnel: tunnelName(name),
      failover: {
        address: floating,
        leaseName,
        members,
        upstream: f.upstream,
        ...(f.nextHop ? { nextHop: f.nextHop } : {}),
        virtualRouterId: f.virtualRouterId,
        leaseDurationMs: f.leaseDurationMs,
        renewIntervalMs: f.renewIntervalMs,
        fenceAfterMs: f.fenceAfterMs,
        ...(cordoned.has(m) && replaceable(m) ? { cordoned: true as const } : {}),
      },
    });
  }
  const allocations: Record<string, string> = {};
  for (const m of [...members].sort()) allocations[m] = sub;
  const assigned = new Map(members.map((m) => [m, sub]));
  return {
    allocation: {
      allocations,
      assigned,
      unassigned: selected.map((n) => n.name).filter((n) => !assigned.has(n)),
      dropped: [],
      reclaimed: [],
      added: members.filter((m) => previous[m] !== sub),
    },
    nodes,
    problems,
  };
}

// ---------------------------------------------------------------------------
// Status

/** The group's Lease as the operator reads it. */
export interface GroupLease {
  holder?: string;
  renewTime?: string;
  acquireTime?: string;
  leaseDurationSeconds?: number;
  transitions?: number;
  /** the holder that released the Lease last, and the reason it wrote (sixbed4.io/release-reason), seen by the watch */
  released?: { by: string; reason?: string };
}

export interface FailoverStatusInput {
  now: Date;
  members: readonly string[];
  lease: GroupLease | undefined;
  /** what the status held before (the operator's memory across restarts) */
  previous: FailoverStatus | undefined;
  /** a member's entry as its agent reports it, whether it counts as ready (fresh and ready), and why not */
  member: (node: string) => { entry: NodeStatus | undefined; ready: boolean; why: string; heartbeatStale: boolean };
  nodeExists: (node: string) => boolean;
  /** the Node is cordoned (spec.unschedulable: kubectl drain) */
  nodeCordoned?: (node: string) => boolean;
}

export interface FailoverStatusResult {
  status: FailoverStatus;
  problems: Problem[];
  /** the active node changed since the status was written: an Event */
  failover?: NonNullable<FailoverStatus['lastFailover']>;
  /** the active node, if it holds a Lease that has not expired and is a member */
  active?: string;
}

/**
 * The node a Lease holder identity names: the agents hold it as <node>_<8 hex digits> (two agents of one node during
 * a rollout are two candidates); node names never hold an underscore (DNS subdomains), so the node is what precedes it.
 */
export function holderNode(holder: string | undefined): string | undefined {
  return holder ? holder.split('_')[0] : undefined;
}

export function failoverStatus(inp: FailoverStatusInput): FailoverStatusResult {
  const problems: Problem[] = [];
  const lease = inp.lease;
  const holder = holderNode(lease?.holder);
  const renewed = lease?.renewTime ? Date.parse(lease.renewTime) : NaN;
  const durationMs = (lease?.leaseDurationSeconds ?? 0) * 1000;
  // A Lease whose holder has not renewed it for its duration (on the operator's clock, loosely: a status, not a
  // fence) has no active node, whatever holderIdentity still says.
  const expired = !Number.isFinite(renewed) || inp.now.getTime() - renewed > durationMs + 1000;
  const active = holder && !expired ? holder : undefined;

  // A standby is ready when its agent, alive, says so (failover Standby: router bound, data path up, API answering).
  const standbys = inp.members.filter((m) => m !== active);
  const standbyReady = (m: string) => {
    const x = inp.member(m);
    return !x.heartbeatStale && x.entry?.failover === 'Standby';
  };
  const standbyWhy = (m: string) => {
    const x = inp.member(m);
    if (x.heartbeatStale || !x.entry?.lastReport) return x.why;
    if (x.entry.failover === 'Active') return 'reports itself active';
    return `${x.entry.failover ?? 'no role reported'}${x.entry.message ? `: ${x.entry.message}` : ''}`;
  };
  const ready = standbys.filter(standbyReady);
  const status: FailoverStatus = {
    ...(active ? { active } : {}),
    standbysReady: `${ready.length}/${standbys.length}`,
    ...(lease?.transitions !== undefined ? { transitions: lease.transitions } : {}),
    ...(inp.previous?.lastFailover ? { lastFailover: inp.previous.lastFailover } : {}),
  };
  if (active && standbys.length > 0 && ready.length === 0) {
    problems.push({
      reason: 'NoStandbyReady',
      message: `${active} serves the /64 and no standby is ready to take over: ${standbys.map((m) => `${m} (${standbyWhy(m)})`).join(', ')}`,
    });
  }

  let failover: FailoverStatusResult['failover'];
  // The node active before: the one shown, or, after a moment with none (a released Lease), the last one that was.
  const before = inp.previous?.active ?? inp.previous?.lastFailover?.to;
  if (active && active !== before) {
    const time = inp.now.toISOString().replace(/\.\d{3}Z$/, 'Z');
    if (!before) {
      failover = { time, to: active, reason: 'Elected', message: `${active} holds the Lease and serves the /64` };
    } else {
      const why = whyMoved(before, inp);
      failover = {
        time,
        from: before,
        to: active,
        reason: why.reason,
        message: `${active} took over from ${before}: ${why.message}`,
      };
    }
    status.lastFailover = failover;
  }
  return { status, problems, ...(failover ? { failover } : {}), ...(active ? { active } : {}) };
}

/** Why the active node changed, as far as the operator can tell from the old one's Node, report and heartbeat. */
function whyMoved(from: string, inp: FailoverStatusInput): { reason: string; message: string } {
  if (!inp.nodeExists(from)) return { reason: 'ActiveLost', message: `node ${from} is gone` };
  const m = inp.member(from);
  // What the old holder did itself comes first: a restarting agent also reports itself not ready for a moment.
  const rel = inp.lease?.released;
  if (rel && holderNode(rel.by) === from) {
    if (rel.reason === 'DataPathDown') {
      return {
        reason: 'DataPathDown',
        message: `${from} gave up and released the Lease: its data path failed${m.entry?.message ? ` (${m.entry.message})` : ''}`,
      };
    }
    if (inp.nodeCordoned?.(from))
      return { reason: 'Handover', message: `${from} is cordoned (kubectl drain) and handed the Lease over` };
    return {
      reason: 'Handover',
      message: `${from} released the Lease (its agent stopped: a drain, an upgrade or its Pod deleted)`,
    };
  }
  // Stopped renewing, and no release of its own: lost, cordoned or not (a drained node that then crashed or was
  // rebooted while still active is a crash, not a handover).
  if (m.heartbeatStale)
    return {
      reason: 'ActiveLost',
      message: `${from}'s agent stopped renewing (node or agent down, or cut off from the API server)`,
    };
  // A drain: the operator's own memory of the release may be gone (a drain evicts the operator's Pod too); the
  // drained node's agent (a DaemonSet Pod, not evicted) still renews its heartbeat.
  if (inp.nodeCordoned?.(from))
    return { reason: 'Handover', message: `${from} is cordoned (kubectl drain) and handed the Lease over` };
  // It says it is a standby again (its member restarted: a changed share, a new agent), not that its path failed.
  if (m.entry?.failover === 'Standby' || m.entry?.reason === 'StandbyNotReady') {
    return { reason: 'Handover', message: `${from} stepped down (its agent restarted its member and stands by)` };
  }
  if (m.entry?.reason && m.entry.ready !== true) {
    return {
      reason: 'DataPathDown',
      message: `${from} gave up (${m.entry.reason}${m.entry.message ? `: ${m.entry.message}` : ''})`,
    };
  }
  if (!inp.members.includes(from)) return { reason: 'Handover', message: `${from} is no longer a member of the group` };
  if (m.entry?.ready === false)
    return { reason: 'DataPathDown', message: `${from} is not ready${m.entry.message ? `: ${m.entry.message}` : ''}` };
  return {
    reason: 'ActiveLost',
    message: `${from} stopped renewing the Lease (its agent restarted, or lost the API server)`,
  };
}

/** The members of a group from its ConfigMap's shares (any share: all carry the same list). */
export function membersOf(shares: Iterable<AgentNodeConfig>): string[] | undefined {
  for (const s of shares) if (s.failover) return [...s.failover.members];
  return undefined;
}
