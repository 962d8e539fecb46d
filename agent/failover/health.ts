// Whether this member's data path works, apart from the API: the uplink has carrier (its link and the lower
// layer up) and its router runs. An announcer that keeps its Lease while its NIC is down is the trap (cilium
// #35507): the Lease says nothing about the path the packets take.
import { readFile } from 'node:fs/promises';
import { ipJson } from '../host/ip.js';

export interface DataPathState {
  ok: boolean;
  why?: string;
}

const SYS_NET = '/sys/class/net';
const IFF_UP = 0x1;
/** /proc/net/ipv6_route flags: RTF_UP, RTF_REJECT (the kernel's own unreachable defaults on lo). */
const RTF_UP = 0x1,
  RTF_REJECT = 0x200;

/**
 * The uplink's state, from sysfs (no process per round: this runs every renewIntervalMs for every prefix); from
 * `ip -j link` where sysfs does not show it (a /sys of another network namespace).
 */
export async function uplinkState(uplink: string): Promise<DataPathState> {
  let flags: number, carrier: string, operstate: string;
  try {
    flags = parseInt((await readFile(`${SYS_NET}/${uplink}/flags`, 'utf8')).trim(), 16);
    operstate = (await readFile(`${SYS_NET}/${uplink}/operstate`, 'utf8')).trim();
    // EINVAL while the link is down: no carrier to speak of.
    carrier = await readFile(`${SYS_NET}/${uplink}/carrier`, 'utf8').then(
      (t) => t.trim(),
      () => '0',
    );
  } catch {
    return uplinkStateByIp(uplink);
  }
  if (!(flags & IFF_UP)) return { ok: false, why: `the uplink ${uplink} is down` };
  if (carrier !== '1' || operstate === 'down' || operstate === 'lowerlayerdown')
    return { ok: false, why: `the uplink ${uplink} has no carrier` };
  return { ok: true };
}

async function uplinkStateByIp(uplink: string): Promise<DataPathState> {
  let links: { operstate?: string; flags?: string[] }[];
  try {
    links = await ipJson('link', 'show', 'dev', uplink);
  } catch {
    return { ok: false, why: `the uplink ${uplink} is gone` };
  }
  const l = links[0];
  if (!l?.flags?.includes('UP')) return { ok: false, why: `the uplink ${uplink} is down` };
  if (!l.flags.includes('LOWER_UP') || l.operstate === 'DOWN' || l.operstate === 'LOWERLAYERDOWN')
    return { ok: false, why: `the uplink ${uplink} has no carrier` };
  return { ok: true };
}

/**
 * Whether the node can reach beyond the segment: a default route for IPv4 (replies to peers) and for IPv6 (the /64's
 * traffic), from /proc/net (the main table). A link that went down and came back has lost both (Linux drops routes
 * through a device that goes down, and its IPv6 addresses with them) until the node's network configuration puts
 * them back.
 */
export async function routesState(): Promise<DataPathState> {
  try {
    const v4 = (await readFile('/proc/net/route', 'utf8'))
      .split('\n')
      .slice(1)
      .map((l) => l.trim().split(/\s+/));
    // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
    if (!v4.some((f) => f.length > 7 && f[1] === '00000000' && f[7] === '00000000' && parseInt(f[3]!, 16) & RTF_UP)) {
      return { ok: false, why: 'no IPv4 default route' };
    }
    const v6 = (await readFile('/proc/net/ipv6_route', 'utf8')).split('\n').map((l) => l.trim().split(/\s+/));
    // dst plen src plen nexthop metric refcnt use flags dev
    const zero = '0'.repeat(32);
    if (
      !v6.some(
        (f) =>
          f.length > 9 &&
          f[0] === zero &&
          f[1] === '00' &&
          f[9] !== 'lo' &&
          parseInt(f[8]!, 16) & RTF_UP &&
          !(parseInt(f[8]!, 16) & RTF_REJECT),
      )
    ) {
      return { ok: false, why: 'no IPv6 default route' };
    }
    return { ok: true };
  } catch (err) {
    return { ok: false, why: `cannot read the routes: ${(err as Error).message}` };
  }
}

/** Resolves within ms or says it did not: a router that does not answer its counters is not forwarding either. */
export async function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((r) => {
    t = setTimeout(() => r(undefined), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(t);
  }
}
