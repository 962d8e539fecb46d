// A running 6bed4 peer: solicits the router until it learns its /114, puts its address on a TUN interface, keeps
// the NAT mapping alive, follows the router when an RA brings a new /114 (the NAT mapping changed), and removes
// its interface on stop. Its parts (parts.ts: the I/O backend, `ip`, the LAN side) are handed in, so a test without
// root runs the same peer on FakeIO.
import { formatIPv4 } from '../../lib/ip.js';
import { InputError } from '../../lib/errors.js';
import type { Logger } from '../../lib/log.js';
import { TUNNEL_MTU } from '../protocol/constants.js';
import type { PeerConfig } from './config.js';
import { DirectPaths, type PathWhy } from './direct.js';
import { PeerEngine } from './engine.js';
import { HookEvents } from './hook-events.js';
import { PeerLoop } from './loop.js';
import { PeerAddress } from './address.js';
import type { PeerLan, PeerParts } from './parts.js';
import { openPeerPort } from './ports.js';
import { RouterLink } from './router-link.js';

export interface RunningPeer {
  /** Resolves with the first address the router gave us. */
  readonly ready: Promise<string>;
  address(): string | null;
  readonly engine: PeerEngine;
  stop(): Promise<void>;
}

/** What the log says when a direct path goes back to the router. */
const GONE_WHY: Record<PathWhy, string> = {
  answered: 'answered',
  quiet: 'our probes went unanswered',
  'via-router': 'its data came through the router again',
  forgotten: 'forgotten',
  moved: 'our address moved',
};

/** The peer's two descriptors: its UDP socket (to the router and other peers) and its TUN queue. */
interface PeerFds {
  udp: number;
  tun: number;
  /** The TUN queue has the offload (IFF_VNET_HDR + TUNSETOFFLOAD: super-packets in, loop.ts). */
  offload: boolean;
}

export class Peer implements RunningPeer {
  readonly engine: PeerEngine;
  private readonly routerText: string;
  private readonly hooks: HookEvents;
  private readonly addr: PeerAddress;
  private readonly link: RouterLink;
  private readonly loop: PeerLoop;
  private readonly direct: DirectPaths | undefined;
  private stopped = false;

  private constructor(
    private readonly cfg: PeerConfig,
    private readonly log: Logger,
    private readonly parts: PeerParts,
    private readonly fds: PeerFds,
    private readonly lan: PeerLan | undefined,
  ) {
    this.routerText = `${formatIPv4(cfg.routerV4)}:${cfg.routerPort}`;
    this.hooks = new HookEvents(cfg, this.routerText, log);
    this.link = new RouterLink(cfg, parts.io, fds.udp, this.routerText, log);
    this.addr = new PeerAddress(
      cfg,
      parts.ip,
      this.hooks,
      {
        own: (a) => {
          this.engine.setOwn(a);
          this.link.setOwn(a);
        },
        lan,
      },
      this.routerText,
      log,
    );
    this.direct = cfg.direct ? this.directPaths() : undefined;
    this.engine = new PeerEngine(cfg.routerV4, cfg.routerPort, (ra) => this.addr.onAdvert(ra), 64, this.direct);
    this.engine.serveLan = !!cfg.lan;
    const router = { v4: cfg.routerV4, port: cfg.routerPort, text: this.routerText };
    this.loop = new PeerLoop(parts.io, this.engine, fds.udp, fds.tun, router, log);
  }

  /** Opens the socket and the tunnel, brings the interface up and starts soliciting; a failed start closes both. */
  static async start(cfg: PeerConfig, log: Logger, parts: PeerParts): Promise<Peer> {
    if (!parts.privileged())
      throw new InputError('sixbed4 peer needs root (or CAP_NET_ADMIN) to create its tunnel interface');
    const lanIndex = cfg.lan ? await parts.checkLan(cfg.lan, cfg.tun, cfg.routerV4) : 0;
    const fds = openFds(cfg, parts);
    const lan = cfg.lan ? parts.newLan(cfg.lan, lanIndex, cfg.tun, log) : undefined;
    const peer = new Peer(cfg, log, parts, fds, lan);
    peer.sayOffload();
    try {
      await parts.ip('link', 'set', 'dev', cfg.tun, 'mtu', String(TUNNEL_MTU), 'up');
      await lan?.start();
    } catch (err) {
      peer.closeFds();
      throw err;
    }
    peer.loop.start();
    peer.link.start(
      () => peer.addr.held,
      () => peer.direct?.sweep(Date.now()),
    );
    return peer;
  }

  get ready(): Promise<string> {
    return this.addr.ready;
  }

  address(): string | null {
    return this.addr.address;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.link.stop();
    this.loop.stop();
    await this.addr.settle();
    await this.lan?.stop();
    this.closeFds(); // removes the interface with its address and routes
    this.addr.withdraw();
    await this.hooks.idle();
    // What went through (the peer has no metrics endpoint): for a look with --log-level debug.
    this.log.debug('peer counters', { ...this.engine.counters });
    this.log.info('peer stopped; tunnel removed', { tun: this.cfg.tun });
  }

  /** Whether the TUN's offload is on; asked for and not had (the kernel refused it) is said once, as the router does. */
  private sayOffload(): void {
    const { cfg, loop } = this;
    if (cfg.tunOffload && !this.fds.offload)
      this.log.warn(`tunnel ${cfg.tun}: without the TUN offload (the kernel refused it): one packet per read and send`);
    else if (loop.vnet && !loop.udpGso[0])
      this.log.info(`tunnel ${cfg.tun}: TUN offload on; the kernel takes no UDP_SEGMENT: one datagram per send`);
    else this.log.debug(`tunnel ${cfg.tun}`, { offload: loop.vnet, udpSegment: loop.udpGso[0] === 1 });
  }

  private closeFds(): void {
    this.parts.io.close(this.fds.tun);
    this.parts.io.close(this.fds.udp);
  }

  /** Straight paths to other peers of the /64 (direct.ts); the log says when one comes and goes. */
  private directPaths(): DirectPaths {
    const { log } = this;
    return new DirectPaths((v4, port, on, why) => {
      const peer = `${formatIPv4(v4)}:${port}`;
      if (on) log.info(`direct path to ${peer}: it answered from the IPv4:port its address embeds`, { peer });
      else log.info(`direct path to ${peer} gone (${GONE_WHY[why]}): through the router`, { peer, why });
    });
  }
}

/** The UDP socket, then the TUN (whose failure closes the socket again). */
function openFds(cfg: PeerConfig, parts: PeerParts): PeerFds {
  const { io } = parts;
  const udp = openPeerPort(cfg, io);
  try {
    const t = io.tunOpen(cfg.tun, false, cfg.tunOffload);
    return { udp, tun: t.fd, offload: t.offload === true };
  } catch (err) {
    io.close(udp);
    const e = err as NodeJS.ErrnoException;
    throw new InputError(
      e.code === 'EBUSY'
        ? `interface ${cfg.tun} is in use: is another peer running? (--tun NAME)`
        : `cannot create TUN interface ${cfg.tun}: ${e.message}`,
    );
  }
}
