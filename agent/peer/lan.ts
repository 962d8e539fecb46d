// `sixbed4 peer --lan IF`: the peer's /114 on a LAN. The peer puts its own address on IF as a /114 (so the kernel
// routes the /114's other lanips onto IF, answers NS for the peer's address there, and resolves the hosts by ND),
// forwards between IF and the tunnel, and sends Router Advertisements on IF (lan-advert.ts says what they carry):
// at start, on every Router Solicitation, every RA_INTERVAL_MS, and at once when the NAT mapping (so the /114)
// changes, withdrawing the old /114 with zero lifetimes. On stop: a last RA with zero lifetimes, the address off
// IF, the forwarding sysctls back as they were.
import { ip, ipJson } from '../host/ip.js';
import { readIpv6Conf, writeConf, type Ipv6Conf } from '../host/sysctl.js';
import { ND_ROUTER_SOLICIT } from '../protocol/constants.js';
import { formatIPv4, formatIPv6 } from '../../lib/ip.js';
import { InputError } from '../../lib/errors.js';
import { openNdSocket, type NdSocket } from '../ndp/socket.js';
import type { Logger } from '../../lib/log.js';
import { writeLanAdvert } from './lan-advert.js';

/** Unsolicited RAs: well inside the router lifetime, so a host that missed some keeps its default route. */
const RA_INTERVAL_MS = 60_000;
/** How many earlier /114s the RAs keep withdrawing (a host that missed one RA still hears of it). */
const WITHDRAWN_KEPT = 3;

/** Checks --lan: an existing interface, neither the tunnel nor the one towards the router. */
export async function checkLanInterface(lan: string, tun: string, routerV4: number): Promise<number> {
  if (lan === tun)
    throw new InputError(`--lan ${lan} is the peer's own tunnel interface (--tun): give the LAN's interface`);
  let link: { ifindex: number }[];
  try {
    link = await ipJson<{ ifindex: number }[]>('link', 'show', 'dev', lan);
  } catch {
    throw new InputError(`--lan ${lan}: no such interface (see 'ip link')`);
  }
  const route = await ipJson<{ dev?: string }[]>('route', 'get', formatIPv4(routerV4)).catch(() => []);
  if (route[0]?.dev === lan) {
    throw new InputError(
      `--lan ${lan} is the interface towards the router (${formatIPv4(routerV4)}): the LAN needs an interface of its own`,
    );
  }
  return link[0]!.ifindex;
}

export class LanSide {
  private socket: NdSocket | null = null;
  private current: Uint8Array | null = null;
  private address: string | null = null;
  private withdrawn: Uint8Array[] = [];
  private timer: NodeJS.Timeout | null = null;
  /** The sysctls as they were, to put back on stop (null: we changed none). */
  private saved: Ipv6Conf | null = null;

  constructor(
    private readonly lan: string,
    private readonly ifindex: number,
    private readonly tun: string,
    private readonly log: Logger,
  ) {}

  /** Forwarding on, the RS socket open. Throws (having undone what it did) when either cannot be. */
  async start(): Promise<void> {
    await this.enableForwarding();
    try {
      this.socket = openNdSocket(
        this.lan,
        this.ifindex,
        (err) => this.log.error(`LAN socket on ${this.lan}: ${err.message}`),
        ND_ROUTER_SOLICIT,
      );
    } catch (err) {
      await this.restoreForwarding();
      throw new InputError(`--lan ${this.lan}: cannot open a raw ICMPv6 socket on it: ${(err as Error).message}`);
    }
    this.socket.onSolicitation(() => this.advertise());
    // With forwarding on IF, the kernel has joined ff02::2 there: hosts' solicitations reach the socket.
    this.timer = setInterval(() => this.advertise(), RA_INTERVAL_MS);
  }

  /**
   * Our address (and so /114) is now `address`: it goes on IF as a /114 (make before break: the old one goes
   * after), and an RA says so, withdrawing the old /114.
   */
  async setAddress(address: Uint8Array): Promise<void> {
    const text = formatIPv6(address);
    if (text === this.address) return;
    await ip('-6', 'addr', 'replace', `${text}/114`, 'dev', this.lan, 'nodad');
    const old = this.address;
    if (old) await ip('-6', 'addr', 'del', `${old}/114`, 'dev', this.lan).catch(() => undefined);
    if (this.current) this.withdrawn = [this.current, ...this.withdrawn].slice(0, WITHDRAWN_KEPT);
    this.current = Uint8Array.from(address);
    this.address = text;
    const p = Uint8Array.from(address);
    p[14] = p[14]! & 0xc0;
    p[15] = 0;
    this.log.info(`LAN ${this.lan}: ${formatIPv6(p)}/114 announced${old ? ` (was ${old}'s, now withdrawn)` : ''}`, {
      lan: this.lan,
    });
    this.advertise();
  }

  /** A last RA (zero lifetimes), the address off IF, forwarding as it was. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    if (this.socket) {
      await this.send(writeLanAdvert({ current: this.current, withdrawn: this.withdrawn, routing: false }));
      this.socket.close();
      this.socket = null;
    }
    if (this.address) await ip('-6', 'addr', 'del', `${this.address}/114`, 'dev', this.lan).catch(() => undefined);
    await this.restoreForwarding();
  }

  private advertise(): void {
    if (!this.socket || !this.current) return;
    void this.send(writeLanAdvert({ current: this.current, withdrawn: this.withdrawn, routing: true }));
  }

  private async send(body: Uint8Array): Promise<void> {
    try {
      await this.socket?.send(body, 'ff02::1');
    } catch (err) {
      this.log.warn(`LAN ${this.lan}: cannot send a Router Advertisement: ${(err as Error).message}`, {
        lan: this.lan,
      });
    }
  }

  /**
   * Linux forwards IPv6 only with net.ipv6.conf.all.forwarding on, and turning that on turns forwarding on for
   * every interface (and makes them ignore RAs). So: all on, then every other interface back to what it was (the
   * uplink keeps taking its RAs), IF on (a router there, in the all-routers group).
   */
  private async enableForwarding(): Promise<void> {
    const before = await readIpv6Conf();
    if (!before[this.lan])
      throw new InputError(`--lan ${this.lan}: IPv6 is disabled on it (net.ipv6.conf.${this.lan}.disable_ipv6?)`);
    this.saved = before;
    try {
      if (before.all?.forwarding !== '1') {
        await writeConf({ conf: 'all', param: 'forwarding' }, '1');
        for (const [conf, v] of Object.entries(before)) {
          if (conf !== 'all' && conf !== this.lan && conf !== this.tun && v.forwarding === '0') {
            await writeConf({ conf, param: 'forwarding' }, '0').catch(() => undefined); // an interface gone since
          }
        }
      }
      await writeConf({ conf: this.lan, param: 'forwarding' }, '1');
    } catch (err) {
      await this.restoreForwarding();
      throw err;
    }
  }

  private async restoreForwarding(): Promise<void> {
    const before = this.saved;
    if (!before) return;
    this.saved = null;
    const now = await readIpv6Conf();
    // `all` first: writing it resets every interface, whose own values then go back.
    if (before.all?.forwarding !== undefined && now.all?.forwarding !== before.all.forwarding) {
      await writeConf({ conf: 'all', param: 'forwarding' }, before.all.forwarding).catch((err: Error) =>
        this.log.error(err.message),
      );
    }
    const after = await readIpv6Conf();
    for (const [conf, v] of Object.entries(before)) {
      if (conf === 'all' || !after[conf] || v.forwarding === undefined || after[conf]!.forwarding === v.forwarding)
        continue;
      await writeConf({ conf, param: 'forwarding' }, v.forwarding).catch((err: Error) => this.log.error(err.message));
    }
  }
}
