// The moving half of a failover member on the node: the group's macvlan on the uplink, carrying the VRRP-style
// virtual MAC, and the addresses that move (the floating IPv4 /32; with upstream RoutedNextHop the /64's next hop,
// nodad: a moved address must never sit `dadfailed`). The macvlan exists on every member, down on standbys; the
// active member adds the addresses, sets it up and announces them (gratuitous ARP, unsolicited NA) at once, then
// about every second for several seconds, then periodically while it stays active, so that caches that missed
// one (a switch's FDB, a provider that ages its ARP entries) are set right again. Probes (unicast ARP, NS) are the
// kernel's: it answers for addresses on the macvlan, from the virtual MAC. Withdrawing closes the fence first,
// then sets the macvlan down and takes the addresses off.
import { ip, ipJson } from '../host/ip.js';
import { packetSend } from '../io/native.js';
import type { Logger } from '../../lib/log.js';
import { formatIPv4, formatIPv6 } from '../../lib/ip.js';
import { writeFile } from 'node:fs/promises';
import type { FailoverPlan } from './config.js';
import { closeFence, ensureFence, extendFence, fenceOpen, removeFence } from './fence.js';
import { formatMac, gratuitousArp, unsolicitedAdvert, virtualMac } from './frames.js';

/** Announcements after taking over: at once, then this many more, spaced by REPEAT_MS (MetalLB: 1.1 s for 5 s). */
const REPEATS = 5;
const REPEAT_MS = 1000;
/** While active, announcements again this often (caches that age entries, a switch that lost its FDB). */
export const REFRESH_MS = 10_000;

/** The metric of the uplink's on-link prefixes copied onto the macvlan (the kernel's own are 256). */
const ONLINK_METRIC = 4096;

const PROC_SYS = process.env.SIXBED4_PROC_SYS ?? '/proc/sys';

export class Announcer {
  private timers: NodeJS.Timeout[] = [];
  private active = false;
  readonly mac: Uint8Array;
  /** Announcements sent (frames), for the log and tests. */
  sent = 0;

  constructor(
    private readonly p: FailoverPlan,
    private readonly log: Logger,
  ) {
    this.mac = virtualMac(p.config.virtualRouterId);
  }

  /**
   * Makes the macvlan (down) and the fence (closed), or adopts them from a previous agent of this node: the
   * macvlan and the tables outlive an agent's restart (as the router's tunnel does), so that a new agent beside the
   * old one (a rollout's surge) never takes them from under it. Left up by an agent that crashed: its fence has
   * closed (the kernel's timeout) and it is taken down; while the fence is open a member of this node is active, and
   * it is left alone.
   */
  async prepare(): Promise<void> {
    const { macvlan, uplink } = this.p;
    const links = await ipJson<{ ifname: string; address?: string }[]>('link', 'show');
    let old = links.find((l) => l.ifname === macvlan);
    if (old && old.address !== formatMac(this.mac)) {
      await ip('link', 'del', 'dev', macvlan);
      this.log.info(`removed ${macvlan}: it carried ${old.address ?? 'no MAC'}, not ${formatMac(this.mac)}`);
      old = undefined;
    }
    if (!old)
      await ip(
        'link',
        'add',
        'link',
        uplink,
        'name',
        macvlan,
        'address',
        formatMac(this.mac),
        'type',
        'macvlan',
        'mode',
        'bridge',
      );
    // Nothing of the kernel's own on it: no DAD (moved addresses are nodad; the link-local derives from the virtual
    // MAC, the same on every member), no RAs, and loose reverse-path checks (peers' packets come in here, the
    // routes to them go out of the uplink).
    await sysctl(`net/ipv6/conf/${macvlan}/accept_dad`, '0');
    await sysctl(`net/ipv6/conf/${macvlan}/accept_ra`, '0');
    await sysctl(`net/ipv4/conf/${macvlan}/rp_filter`, '2');
    const [own] = await ipJson<{ addr_info?: { local: string }[] }[]>('-4', 'addr', 'show', 'dev', uplink);
    const uplinkIPv4 = own?.addr_info?.find((a) => a.local !== formatIPv4(this.p.ipv4))?.local;
    if (!uplinkIPv4)
      this.log.warn(
        `${uplink} has no IPv4 address of its own: the kernel's ARP requests there will name the floating address`,
      );
    await ensureFence(this.p, uplinkIPv4);
    if (old && !(await fenceOpen(this.p))) {
      await ip('link', 'set', 'dev', macvlan, 'down');
      await ip('addr', 'flush', 'dev', macvlan);
      this.log.info(`adopted ${macvlan} from a previous agent of this node, down and without addresses`);
    } else if (old) {
      this.log.info(`adopted ${macvlan} from the agent this one replaces, which is active: left as it is`);
    }
  }

  /** Takes the addresses, fence open until remainingMs from now, and announces them. */
  async activate(remainingMs: number): Promise<void> {
    const { macvlan, ipv4, nextHop } = this.p;
    await extendFence(this.p, remainingMs);
    await ip('addr', 'replace', `${formatIPv4(ipv4)}/32`, 'dev', macvlan);
    if (nextHop) await ip('-6', 'addr', 'replace', `${formatIPv6(nextHop)}/128`, 'dev', macvlan, 'nodad');
    await ip('link', 'set', 'dev', macvlan, 'up');
    if (this.p.config.upstream === 'OnLink') await this.onLinkRoutes();
    this.active = true;
    this.announce();
    for (let i = 1; i <= REPEATS; i++) this.timers.push(setTimeout(() => this.announce(), i * REPEAT_MS));
    const refresh = setInterval(() => this.announce(), REFRESH_MS);
    this.timers.push(refresh);
  }

  /** The deadline moved on (a renew succeeded). */
  extend(remainingMs: number): Promise<void> {
    return extendFence(this.p, remainingMs);
  }

  /** Stops answering now: the fence first (the kernel drops everything for the macvlan), then the link and addresses. */
  async withdraw(): Promise<void> {
    this.active = false;
    for (const t of this.timers.splice(0)) clearTimeout(t);
    await closeFence(this.p).catch((err: Error) => this.log.error(`closing the fence: ${err.message}`));
    await ip('link', 'set', 'dev', this.p.macvlan, 'down').catch((err: Error) =>
      this.log.error(`setting ${this.p.macvlan} down: ${err.message}`),
    );
    await ip('addr', 'flush', 'dev', this.p.macvlan).catch(() => undefined);
  }

  /**
   * The member stops: withdraws if it was active. With keep (the agent restarts: an upgrade, a drain) the macvlan
   * and the tables stay for the next agent of this node (down, the fence closed); without (the share is gone) they go.
   */
  async stop(keep: boolean): Promise<void> {
    if (this.active || !keep) await this.withdraw();
    if (keep) return;
    await removeFence(this.p).catch((err: Error) => this.log.warn(`removing the fence tables: ${err.message}`));
    await ip('link', 'del', 'dev', this.p.macvlan).catch(() => undefined);
  }

  /**
   * The neighbour proxy answers on the macvlan with a socket bound to it, so its unicast answers to a solicitor's
   * global address need a route there: the uplink's on-link prefixes, again on the macvlan behind the uplink's own
   * (a higher metric: everything else still leaves by the uplink). They go when the macvlan goes down.
   */
  private async onLinkRoutes(): Promise<void> {
    const routes = await ipJson<{ dst: string; gateway?: string; protocol?: string }[]>(
      '-6',
      'route',
      'show',
      'dev',
      this.p.uplink,
    );
    for (const r of routes) {
      if (r.gateway || r.dst === 'default' || r.dst.startsWith('fe80:') || !r.dst.includes('/')) continue;
      await ip('-6', 'route', 'replace', r.dst, 'dev', this.p.macvlan, 'metric', String(ONLINK_METRIC));
    }
  }

  private announce(): void {
    if (!this.active) return;
    try {
      packetSend(this.p.macvlan, gratuitousArp(this.p.ipv4, this.mac));
      this.sent++;
      if (this.p.nextHop) {
        packetSend(this.p.macvlan, unsolicitedAdvert(this.p.nextHop, this.mac));
        this.sent++;
      }
    } catch (err) {
      this.log.warn(`announcing ${formatIPv4(this.p.ipv4)}: ${(err as Error).message}`);
    }
  }
}

async function sysctl(key: string, value: string): Promise<void> {
  await writeFile(`${PROC_SYS}/${key}`, value);
}
