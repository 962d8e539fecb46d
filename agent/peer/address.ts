// The peer's address, as the router's RAs give it: the announced /114 with our lanip in its last 14 bits, on the
// tunnel interface with the routes the RA carries. A new /114 (the NAT mapping changed, so the router saw us at
// another IPv4:port) moves the address make-before-break; the hooks hear of it once the kernel has it.
// One change at a time, in the order the RAs came; a failed one is retried at the next RA.
import { formatIPv6 } from '../../lib/ip.js';
import type { Logger } from '../../lib/log.js';
import { equal16 } from '../protocol/ipv6.js';
import type { RouterAdvert } from '../protocol/nd.js';
import type { PeerConfig } from './config.js';
import type { HookEvents } from './hook-events.js';
import type { IpCommand, PeerLan } from './parts.js';

/** Who else must know the address: the engine and the router (own), and the LAN side. */
export interface AddressUsers {
  /** Our address is now addr (it is on the interface): called before the old one goes. */
  own(addr: Uint8Array): void;
  readonly lan: PeerLan | undefined;
}

/** The /114 and address an RA gives, in the forms the commands, hooks and log use. */
interface Target {
  prefix114: Uint8Array;
  addr: Uint8Array;
  text: string;
  prefixText: string;
  /** The routes the RA announced (none: keep those we have, see move()). */
  announced: string[];
}

export class PeerAddress {
  /** Our /114 as the router last announced it: configured or being configured; a failure clears it. */
  private current: Uint8Array | null = null;
  private text: string | null = null;
  private routes: string[] = [];
  /** What the hooks were last told was added. */
  private told: { address: string; prefix: string } | null = null;
  private changing = Promise.resolve();
  private resolveReady!: (a: string) => void;
  /** Resolves with the first address the router gave us. */
  readonly ready = new Promise<string>((r) => {
    this.resolveReady = r;
  });

  constructor(
    private readonly cfg: PeerConfig,
    private readonly ip: IpCommand,
    private readonly hooks: HookEvents,
    private readonly users: AddressUsers,
    private readonly routerText: string,
    private readonly log: Logger,
  ) {}

  /** The address now (text), null before the first RA. */
  get address(): string | null {
    return this.text;
  }

  /** Whether an RA has given us a /114 (the peer stops soliciting). */
  get held(): boolean {
    return this.current !== null;
  }

  /** An RA from the router: a /114 other than ours moves us there. */
  onAdvert(ra: RouterAdvert): void {
    if (ra.validLifetime === 0) return; // a withdrawal of a prefix we may not even hold
    if (this.current && equal16(this.current, 0, ra.prefix114, 0)) return;
    const t = this.target(ra);
    this.current = t.prefix114;
    this.changing = this.changing
      .then(() => this.move(t))
      .catch((err: Error) => {
        this.log.error(`cannot configure address ${t.text} (will retry at the next RA): ${err.message}`);
        if (this.current === t.prefix114) this.current = null;
      });
  }

  /** Resolves once the changes under way are done. */
  settle(): Promise<void> {
    return this.changing;
  }

  /** At an orderly stop, as the stock peer's del-offers: what the hooks were told of is gone. */
  withdraw(): void {
    if (this.told) this.hooks.address('remove', this.told.address, this.told.prefix);
    for (const r of this.routes) this.hooks.route('route-remove', r);
  }

  private target(ra: RouterAdvert): Target {
    // Our address is the announced /114 with our lanip in its last 14 bits.
    const addr = Uint8Array.from(ra.prefix114);
    addr[14] = (addr[14]! & 0xc0) | ((this.cfg.lanip >>> 8) & 0x3f);
    addr[15] = this.cfg.lanip & 0xff;
    return {
      prefix114: Uint8Array.from(ra.prefix114),
      addr,
      text: formatIPv6(addr),
      prefixText: `${formatIPv6(ra.prefix114)}/114`,
      announced: ra.routes.map((r) => `${formatIPv6(r.bytes)}/${r.length}`),
    };
  }

  private async move(t: Target): Promise<void> {
    const old = this.text;
    // The RA that tells a moved peer its new /114 carries only that (the router keeps answers to unverified
    // sources small): no route options there is no withdrawal of the routes an RS's RA brought.
    const newRoutes = t.announced.length ? t.announced : this.routes;
    await this.putAddress(t, old);
    await this.users.lan?.setAddress(t.addr);
    await this.putRoutes(newRoutes);
    this.tellHooks(t, newRoutes);
    this.routes = newRoutes;
    if (old)
      this.log.warn('router announced a new /114 (NAT mapping changed): address moved', { from: old, to: t.text });
    else this.log.info(`peer address ${t.text}`, { router: this.routerText, tun: this.cfg.tun });
    this.resolveReady(t.text);
  }

  /** Make before break: the new address is usable (and in use) before the old one goes. */
  private async putAddress(t: Target, old: string | null): Promise<void> {
    const { ip, cfg } = this;
    await ip('-6', 'addr', 'replace', `${t.text}/64`, 'dev', cfg.tun, 'nodad');
    this.text = t.text;
    this.users.own(t.addr);
    if (old && old !== t.text) await ip('-6', 'addr', 'del', `${old}/64`, 'dev', cfg.tun).catch(() => undefined);
  }

  private async putRoutes(newRoutes: string[]): Promise<void> {
    const { ip, cfg } = this;
    if (cfg.defaultRoute) await ip('-6', 'route', 'replace', 'default', 'dev', cfg.tun, 'metric', '1024');
    for (const r of newRoutes) await ip('-6', 'route', 'replace', r, 'dev', cfg.tun);
    for (const r of this.routes)
      if (!newRoutes.includes(r)) await ip('-6', 'route', 'del', r, 'dev', cfg.tun).catch(() => undefined);
  }

  /**
   * Once the kernel has it: a moved address as remove, then add (so a script that keeps one record ends with the
   * new one), and only the routes that changed.
   */
  private tellHooks(t: Target, newRoutes: string[]): void {
    if (this.told?.address !== t.text) {
      if (this.told) this.hooks.address('remove', this.told.address, this.told.prefix);
      this.hooks.address('add', t.text, t.prefixText);
      this.told = { address: t.text, prefix: t.prefixText };
    }
    for (const r of this.routes) if (!newRoutes.includes(r)) this.hooks.route('route-remove', r);
    for (const r of newRoutes) if (!this.routes.includes(r)) this.hooks.route('route-add', r);
  }
}
