// The router's data path (Engine + Datapath) with peers and a native IPv6
// host around it, on one of two backends:
// - fakeRig(): the in-memory FakeIO (agent/io/fake.ts), in this process, no root;
// - realRig(): the addon on real UDP sockets and a real TUN (the router's own
//   openTunnel), as root inside a network namespace the test made (the test
//   runs datapath-real.js there).
// Peers are the same code on both: UDP sockets opened through the backend's
// NativeIO. Only the native host differs: on the fake it puts packets into
// the TUN and reads what the router wrote; on the real one it is a UDP socket
// the kernel routes through the tunnel.
import dgram from 'node:dgram';
import { once } from 'node:events';

import { FakeIO, type FakeTun } from '../../agent/io/fake.js';
import { native, newBatch, type NativeIO, type PollHandle } from '../../agent/io/native.js';
import { TOPO } from '../../lab/topology.js';
import { createLogger } from '../../lib/log.js';
import { makeAddress } from '../../agent/protocol/address.js';
import { upperChecksum } from '../../agent/protocol/checksum.js';
import { IPV6_HEADER, NH_UDP } from '../../agent/protocol/constants.js';
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6, parsePrefix64 } from '../../lib/ip.js';
import { Datapath } from '../../agent/router/datapath.js';
import { Engine } from '../../agent/router/engine.js';
import { openTunnel } from '../../agent/router/tunnel.js';
import { runCommand } from '../../agent/host/command.js';
import { systemTool } from '../../agent/host/tools.js';
import { parseUdp6, udp6, type Udp6 } from '../helpers/packets.js';

/** The reference topology's addresses, all on one host here (the namespace's lo, or the fake host). */
export const NET = {
  prefix: parsePrefix64(TOPO.prefix),
  router: { v4: TOPO.routerV4, port: 25790 },
  A: { v4: TOPO.natV4, port: 40000 },
  B: { v4: TOPO.peerCV4, port: 51000 },
  /** A local address where nothing listens on the port: the kernel answers with ICMP port unreachable. */
  vanished: { v4: '203.0.113.9', port: 9999 },
  /** No route to it: the kernel refuses sends (ENETUNREACH). */
  unroutable: { v4: '192.0.2.55', port: 5000 },
  /** The native IPv6 host and its UDP port. */
  isp: TOPO.ispV6,
  ispPort: 9,
  tun: 's4dp0',
} as const;

const LOCAL_V4 = [NET.router.v4, NET.A.v4, NET.B.v4, NET.vanished.v4];

/** The 6bed4 address of v4:port (lanip 1, as peers use; 0 is the router side). */
export const sixbed4 = (e: { v4: string; port: number }, lanip = 1) =>
  makeAddress(NET.prefix.bytes, parseIPv4(e.v4), e.port, lanip);
export const routerAddress = () => sixbed4(NET.router, 0);

export interface Datagram {
  from: string;
  bytes: Buffer;
}

/** A waiting list with a timeout: what arrived, in order, and who waits for the next. */
class Inbox<T> {
  private readonly items: T[] = [];
  private wake: (() => void) | null = null;
  push(x: T): void {
    this.items.push(x);
    this.wake?.();
  }
  /** Everything that arrived and was not taken yet. */
  drain(): T[] {
    return this.items.splice(0);
  }
  async next(what: string, timeoutMs = 5000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    while (this.items.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = null;
    }
    return this.items.shift()!;
  }
}

/** A 6bed4 peer's UDP socket (no peer logic: the scenarios craft what it sends). */
export class Peer {
  readonly fd: number;
  readonly address: Uint8Array;
  private readonly rx = newBatch(8, 2048);
  private readonly tx = newBatch(8, 2048);
  private readonly errs = newBatch(4, 64);
  private readonly errInfo = new Uint32Array(4);
  private readonly inbox = new Inbox<Datagram>();
  private readonly poll: PollHandle;

  constructor(
    private readonly io: NativeIO,
    readonly v4: string,
    readonly port: number,
  ) {
    this.fd = io.udpOpen(v4, port, false).fd;
    this.address = sixbed4({ v4, port });
    this.poll = io.poll(this.fd, () => this.receive());
  }

  /** Sends the packets to the router in one batch. */
  send(...packets: Uint8Array[]): void {
    packets.forEach((p, i) => {
      this.tx.data.set(p, i * this.tx.slot);
      this.tx.off[i] = i * this.tx.slot;
      this.tx.len[i] = p.length;
      this.tx.addr[i] = parseIPv4(NET.router.v4);
      this.tx.port[i] = NET.router.port;
    });
    const sent = this.io.udpSend(this.fd, this.tx, packets.length);
    if (sent !== packets.length || this.tx.refused[0])
      throw new Error(`peer ${this.v4}: sent ${sent} of ${packets.length}, ${this.tx.refused[0]} refused`);
  }

  next(timeoutMs?: number): Promise<Datagram> {
    return this.inbox.next(`a datagram at ${this.v4}:${this.port}`, timeoutMs);
  }

  /** What arrived and was not taken, including anything still in the socket now. */
  pending(): Datagram[] {
    this.receive();
    return this.inbox.drain();
  }

  close(): void {
    this.poll.close();
    this.io.close(this.fd);
  }

  private receive(): void {
    // Peers never send anywhere but to the router; read any error anyway, so it cannot keep the poll spinning.
    this.io.udpRecvErrors(this.fd, this.errs, this.errInfo);
    const n = this.io.udpRecv(this.fd, this.rx);
    for (let i = 0; i < n; i++) {
      const off = this.rx.off[i]!;
      this.inbox.push({
        from: `${formatIPv4(this.rx.addr[i]!)}:${this.rx.port[i]}`,
        bytes: Buffer.from(this.rx.data.subarray(off, off + this.rx.len[i]!)),
      });
    }
  }
}

/** The native IPv6 host (NET.isp, UDP port NET.ispPort) on the far side of the router's tunnel. */
export interface NativeHost {
  /** Sends a UDP datagram from NET.isp:NET.ispPort to dst:dport, which the kernel routes into the tunnel. */
  send(dst: Uint8Array, dport: number, payload: Uint8Array): Promise<void>;
  /** The next datagram delivered to NET.isp:NET.ispPort: one the router wrote into the tunnel. */
  next(timeoutMs?: number): Promise<{ src: string; sport: number; payload: string }>;
  close(): Promise<void>;
}

export interface Rig {
  readonly backend: 'fake' | 'real';
  readonly io: NativeIO;
  readonly engine: Engine;
  /** The router's UDP sockets (replies and relays leave through the first). */
  readonly routerFds: readonly number[];
  readonly host: NativeHost;
  /** A peer socket at v4:port; closed with the rig. */
  peer(e: { v4: string; port: number }): Peer;
  close(): Promise<void>;
}

/** Router sockets: two SO_REUSEPORT sockets, as the router runs several (datapath.ts says why). */
const ROUTER_SOCKETS = 2;

async function rig(
  backend: Rig['backend'],
  io: NativeIO,
  tunFd: number,
  host: NativeHost,
  closeTun: () => void,
): Promise<Rig> {
  const udpFds: number[] = [];
  for (let i = 0; i < ROUTER_SOCKETS; i++) udpFds.push(io.udpOpen(NET.router.v4, NET.router.port, true).fd);
  // No local table: every address here is local, and relays between them are what the tests send.
  const engine = new Engine(
    { prefix: NET.prefix, listenIPv4: parseIPv4(NET.router.v4), port: NET.router.port, routes: [] },
    16,
  );
  const datapath = new Datapath(engine, udpFds, tunFd, io);
  datapath.start();
  const peers: Peer[] = [];
  return {
    backend,
    io,
    engine,
    host,
    routerFds: udpFds,
    peer(e) {
      const p = new Peer(io, e.v4, e.port);
      peers.push(p);
      return p;
    },
    async close() {
      datapath.stop();
      for (const p of peers) p.close();
      for (const fd of udpFds) io.close(fd);
      await host.close();
      closeTun();
    },
  };
}

/** The data path on the in-memory FakeIO. */
export async function fakeRig(): Promise<Rig> {
  const io = new FakeIO({ addresses: LOCAL_V4 });
  const tunFd = io.tunOpen(NET.tun, false).fd;
  const dev = io.tun(NET.tun)!;
  dev.up = true;
  return rig('fake', io, tunFd, fakeHost(dev), () => io.close(tunFd));
}

/** The native host on a FakeTun: packets in through inject(), out of `written`, checked as the kernel would. */
function fakeHost(dev: FakeTun): NativeHost {
  const inbox = new Inbox<Udp6>();
  const isp = parseIPv6(NET.isp);
  const onWritten = () => {
    for (const p of dev.written.splice(0)) {
      const u = parseUdp6(p);
      // The kernel delivers only what is addressed to the socket and checksums right.
      if (
        u &&
        u.dst === formatIPv6(isp) &&
        u.dport === NET.ispPort &&
        upperChecksum(p, 0, NH_UDP, IPV6_HEADER, p.length - IPV6_HEADER) === 0
      )
        inbox.push(u);
    }
  };
  dev.on('written', onWritten);
  return {
    async send(dst, dport, payload) {
      if (!dev.inject(udp6(isp, dst, NET.ispPort, dport, payload)))
        throw new Error('the fake tunnel dropped the packet');
    },
    async next(timeoutMs) {
      const u = await inbox.next(`a datagram at [${NET.isp}]:${NET.ispPort}`, timeoutMs);
      return { src: u.src, sport: u.sport, payload: u.payload.toString() };
    },
    async close() {
      dev.off('written', onWritten);
    },
  };
}

/**
 * Puts the addresses on lo. Once per namespace, before realRig(); needs root
 * inside a namespace of the test's own.
 */
export async function prepareNamespace(): Promise<void> {
  const ip = systemTool('ip');
  for (const a of LOCAL_V4) await runCommand([ip, 'addr', 'replace', `${a}/32`, 'dev', 'lo']);
  await runCommand([ip, '-6', 'addr', 'replace', `${NET.isp}/128`, 'dev', 'lo', 'nodad']);
  await runCommand([ip, 'link', 'set', 'lo', 'up']);
}

/** The data path on the addon: real sockets on lo, and the router's real tunnel with its route. */
export async function realRig(offload = false): Promise<Rig> {
  const log = createLogger({ level: 'error', component: 'datapath-test' });
  const tunnel = await openTunnel(NET.tun, 1, routerAddress(), NET.prefix, log, { offload });
  if (offload && !native.tunOffload(tunnel.fds[0]!)) {
    tunnel.close();
    throw new Error('the kernel refused the TUN offload');
  }
  try {
    const sock = dgram.createSocket({ type: 'udp6', reuseAddr: false });
    const inbox = new Inbox<{ src: string; sport: number; payload: string }>();
    sock.on('message', (m, r) => inbox.push({ src: r.address, sport: r.port, payload: m.toString() }));
    sock.bind(NET.ispPort, NET.isp);
    await once(sock, 'listening');
    const host: NativeHost = {
      async send(dst, dport, payload) {
        await new Promise<void>((resolve, reject) =>
          sock.send(payload, dport, formatIPv6(dst), (err) => (err ? reject(err) : resolve())),
        );
      },
      next: (timeoutMs) => inbox.next(`a datagram at [${NET.isp}]:${NET.ispPort}`, timeoutMs),
      async close() {
        sock.close();
      },
    };
    return await rig('real', native, tunnel.fds[0]!, host, () => tunnel.close());
  } catch (err) {
    tunnel.close();
    throw err;
  }
}

/** Resolves once pred() holds (checked every few ms), or rejects naming what it waited for. */
export async function until(pred: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
