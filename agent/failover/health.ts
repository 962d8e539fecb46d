// Whether this member's data path works, apart from the API: the uplink has carrier (its link and the lower
// layer up) and its router runs. An announcer that keeps its Lease while its NIC is down is the trap (cilium
// #35507): the Lease says nothing about the path the packets take.
import { ipJson } from '../host/ip.js';

export interface DataPathState { ok: boolean; why?: string }

/** The uplink's state as `ip -j link` says it. */
export async function uplinkState(uplink: string): Promise<DataPathState> {
  let links: { operstate?: string; flags?: string[] }[];
  try {
    links = await ipJson('link', 'show', 'dev', uplink);
  } catch {
    return { ok: false, why: `the uplink ${uplink} is gone` };
  }
  const l = links[0];
  if (!l?.flags?.includes('UP')) return { ok: false, why: `the uplink ${uplink} is down` };
  if (!l.flags.includes('LOWER_UP') || l.operstate === 'DOWN' || l.operstate === 'LOWERLAYERDOWN') return { ok: false, why: `the uplink ${uplink} has no carrier` };
  return { ok: true };
}

/**
 * Whether the node can reach beyond the segment: a default route for IPv4 (replies to peers) and for IPv6 (the /64's
 * traffic). A link that went down and came back has lost both (Linux drops routes through a device that goes down,
 * and its IPv6 addresses with them) until the node's network configuration puts them back.
 */
export async function routesState(): Promise<DataPathState> {
  for (const family of ['-4', '-6']) {
    let routes: unknown[];
    try {
      routes = await ipJson(family, 'route', 'show', 'default');
    } catch (err) {
      return { ok: false, why: `cannot read the routes: ${(err as Error).message}` };
    }
    if (!routes.length) return { ok: false, why: `no IPv${family === '-4' ? 4 : 6} default route` };
  }
  return { ok: true };
}

/** Resolves within ms or says it did not: a router that does not answer its counters is not forwarding either. */
export async function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((r) => { t = setTimeout(() => r(undefined), ms); });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(t);
  }
}
