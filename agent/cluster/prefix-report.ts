// What a prefix agent reports of itself (its entry in the node's Lease, which the operator copies into the prefix's
// status). Kept apart from the agent (prefix-agent.ts) as a function of what the agent holds: the report says only
// what that state says, and each case reads on its own.
import type { AgentReport } from '../../kube/api.js';
import type { PrefixMember, PrefixRouter } from './prefix-parts.js';

/** Why the node cannot serve its share, as its report shows it; reason is what the operator turns into Degraded. */
export interface Problem {
  message: string;
  reason: string;
}

export interface ReportedState {
  /** The host was given back (the prefix is being deleted): the operator's finalizer waits for this. */
  reverted: boolean;
  router: PrefixRouter | null;
  member: PrefixMember | null;
  /** how the router listens, when not simply on the share's address */
  listening: string;
  /** the last failure to serve ('' after a success) */
  problem: Problem;
}

export async function prefixReport(s: ReportedState): Promise<AgentReport> {
  if (s.reverted)
    return { ready: false, reverted: true, livePeers: 0, message: 'host reverted: the prefix is being deleted' };
  if (s.router && s.member) {
    const role = s.member.role === 'active' ? 'Active' : s.member.standbyReady ? 'Standby' : 'NotReady';
    return {
      ready: role !== 'NotReady',
      reverted: false,
      livePeers: (await s.router.counters()).livePeers,
      failover: role,
      message: role === 'Active' ? `forwarding; ${s.member.describe()}` : s.member.describe(),
      ...(role === 'NotReady' ? { reason: 'StandbyNotReady' } : {}),
    };
  }
  if (s.router)
    return {
      ready: true,
      reverted: false,
      livePeers: (await s.router.counters()).livePeers,
      message: s.listening ? `forwarding; ${s.listening}` : 'forwarding',
    };
  return {
    ready: false,
    reverted: false,
    livePeers: 0,
    message: (s.problem.message || 'starting').slice(0, 1024),
    ...(s.problem.reason ? { reason: s.problem.reason } : {}),
  };
}

/** The report of an agent that stopped for a restart (its host stays configured for the next agent). */
export const STOPPED_REPORT: AgentReport = { ready: false, reverted: false, livePeers: 0, message: 'agent stopped' };
