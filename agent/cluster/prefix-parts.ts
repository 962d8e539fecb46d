// What a prefix agent (prefix-agent.ts) is made of besides the API: the host (apply, revert, the saved state), the
// router, the failover member, the node's slices and a clock. realPrefixParts are the real ones; the lifecycle table
// (test/cluster/prefix-lifecycle.test.ts) hands in fakes that record what is asked of them, in which order, without
// root, as MetalLB's layer2 controller test hands its announcer in. Each part is only as wide as the agent uses it:
// a fake then cannot drift from what the agent relies on.
import { access } from 'node:fs/promises';
import type { Logger } from '../../lib/log.js';
import { applyHost, revertHost } from '../host/apply.js';
import type { HostConfig } from '../host/config.js';
import { ipJson } from '../host/ip.js';
import { readSavedState } from '../host/statefile.js';
import { startRouter, type RouterConfig, type RunningRouter } from '../router/router.js';
import { FailoverMember, type MemberOptions } from '../failover/member.js';
import type { SliceAgent } from './slices.js';

/** What the agent needs of its router: counters for the report, the proxy for the slices, metrics, stop. */
export type PrefixRouter = Pick<RunningRouter, 'counters' | 'stop' | 'proxy' | 'fastPath' | 'registry'>;

/** What the agent needs of its failover member (agent/failover/member.ts). */
export type PrefixMember = Pick<FailoverMember, 'role' | 'standbyReady' | 'describe' | 'prepare' | 'start' | 'stop'>;

/** What the agent needs of its slices (slices.ts): start delivering, release them all, stop. */
export type PrefixSlices = Pick<SliceAgent, 'start' | 'releaseAll' | 'stop'>;

/** The uplink as `ip -j link show` gives it: what layer2Refusal looks at. */
export interface UplinkLink {
  link_type?: string;
  flags?: string[];
}

export interface PrefixParts<S extends PrefixSlices = SliceAgent> {
  /** This prefix's slices on the node (the CNI server hands requests to the same object). */
  readonly slices: S;
  applyHost(host: HostConfig, opts: { log: Logger; statePath: string }): Promise<{ plan: HostPlanned }>;
  revertHost(opts: { log: Logger; statePath: string }): Promise<unknown>;
  /** The prefix the saved host state (the state file) was made for; undefined without one. */
  savedPrefix(statePath: string): Promise<string | undefined>;
  /** Whether a state file is there: a host configured by an agent before this one (a restart) is reverted too. */
  stateExists(statePath: string): Promise<boolean>;
  /** startRouter of agent/router/router.ts. */
  startRouter(cfg: RouterConfig, log: Logger): Promise<PrefixRouter>;
  /** The uplink's link, undefined when `ip` cannot say (layer2Refusal then decides on nothing). */
  uplinkLink(name: string): Promise<UplinkLink | undefined>;
  failoverMember(o: MemberOptions, log: Logger): PrefixMember;
  /** Runs fn every ms until the returned function is called (the report's heartbeat). */
  every(ms: number, fn: () => void): () => void;
}

/** What the agent reads of a host plan once applied. */
export interface HostPlanned {
  uplink: string;
  steps: readonly unknown[];
}

export function realPrefixParts<S extends PrefixSlices>(slices: S): PrefixParts<S> {
  return {
    slices,
    applyHost: (host, opts) => applyHost(host, opts),
    revertHost,
    savedPrefix: async (path) => (await readSavedState(path))?.prefix,
    stateExists: exists,
    startRouter,
    uplinkLink: async (name) => {
      const [link] = await ipJson<UplinkLink[]>('link', 'show', 'dev', name).catch(() => []);
      return link;
    },
    failoverMember: (o, log) => new FailoverMember(o, log),
    every: (ms, fn) => {
      const t = setInterval(fn, ms);
      return () => clearInterval(t);
    },
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
