/**
 * An in-memory NativeIO: one fake host with UDP/IPv4 sockets and TUN
 * devices, so that the data path (Datapath, the peer loop) runs unmodified
 * without root and without the kernel, as wireguard-go runs its device tests
 * on in-memory TUN and bind fakes. It is an additional backend, never a
 * replacement: test/router/datapath.test.ts runs the same assertions on it
 * and on real sockets and a real TUN, and test/io/fake.test.ts holds it to
 * the addon's semantics on loopback.
 *
 * What it copies from agent/native/*.c, call by call:
 * - udpRecv/tunRead fill entry i at i * slot, report a datagram's or
 *   packet's real length (> slot when it was truncated), return 0 when
 *   nothing is waiting, and take at most min(cap, MAX_BATCH) entries.
 * - udpSend/tunWrite consume what they can: a datagram the "kernel" refuses
 *   (no route: ENETUNREACH; port 0: EINVAL; broadcast: EACCES; a TUN packet
 *   that is not IPv4/IPv6: EINVAL; a TUN that is down: EIO) is dropped, still
 *   counted, and added to b.refused[0]; a full send buffer (sendBudget) stops
 *   the batch early, as EAGAIN does.
 * - A datagram to a local address where nothing listens queues an ICMP port
 *   unreachable on the sender's error queue (IP_RECVERR, which udpOpen always
 *   sets): the start of the datagram as the kernel quotes it, the address it
 *   was sent to, info = type << 8 | code. udpRecvErrors reads it; the data
 *   receive is not disturbed (the addon swallows the socket error).
 * - poll() is level-triggered like uv_poll: while an fd has data or errors
 *   waiting, its callback runs again on a later turn of the event loop
 *   (setImmediate), with no arguments; throws EEXIST for a second poll of one fd.
 * - Errors are Errors with .code, .errno (negative) and .syscall, as the
 *   addon throws; fds are numbered from 1 << 20 so that one passed to the real
 *   addon fails with EBADF instead of touching an unrelated descriptor.
 *
 * Everything is local to one host (like a test's network namespace with its
 * addresses on lo): a datagram goes to a socket of this FakeIO or, for an
 * address that is not local, is refused with ENETUNREACH. The kernel side of
 * a TUN is FakeTun: inject() routes a packet into it, `written` holds what the
 * router wrote.
 */
import { EventEmitter } from 'node:events';

import { MAX_BATCH, type Batch } from './batch.js';
import type { NativeIO, PollHandle } from './native.js';

const FIRST_FD = 1 << 20;
/** The ICMP quote of a datagram: 576 bytes minus the IPv4 and ICMP headers, minus the quoted IPv4 and UDP headers. */
const ICMP_QUOTE = 576 - 20 - 8 - 20 - 8;
const MAX_UDP_PAYLOAD = 65507;
const EPHEMERAL_FIRST = 32768,
  EPHEMERAL_LAST = 60999;
const PORT_UNREACHABLE = (3 << 8) | 3;

const ERRNO: Record<string, [number, string]> = {
  EBADF: [9, 'Bad file descriptor'],
  EACCES: [13, 'Permission denied'],
  EEXIST: [17, 'File exists'],
  EINVAL: [22, 'Invalid argument'],
  EIO: [5, 'Input/output error'],
  EBUSY: [16, 'Device or resource busy'],
  EMSGSIZE: [90, 'Message too long'],
  EADDRINUSE: [98, 'Address already in use'],
  EADDRNOTAVAIL: [99, 'Cannot assign requested address'],
  ENETUNREACH: [101, 'Network is unreachable'],
  EBADFD: [77, 'File descriptor in bad state'],
};

/** An Error shaped like the addon's (and Node's) system errors. */
function sysError(code: string, syscall: string): NodeJS.ErrnoException {
  const [n, text] = ERRNO[code]!;
  return Object.assign(new Error(`${syscall} ${code}: ${text}`), { code, errno: -n, syscall });
}

function parseV4(text: string): number {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  const parts = m ? m.slice(1).map(Number) : [];
  if (parts.length !== 4 || parts.some((p) => p > 255)) {
    throw Object.assign(new TypeError('ipv4 is not a dotted-quad IPv4 address'), { code: 'ERR_INVALID_IP_ADDRESS' });
  }
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

/** The checks the addon makes before a send (s4_check_entries). */
function checkEntries(b: Batch, count: number): void {
  if (!Number.isInteger(count) || count < 0) throw new RangeError('count must be a non-negative integer');
  if (count > b.cap) throw new RangeError('count exceeds the batch capacity');
  for (let i = 0; i < count; i++) {
    if (b.off[i]! + b.len[i]! > b.data.length) throw new RangeError('batch entry lies outside batch.data');
  }
}

/** Receive capacity, as the addon computes it (clamped to MAX_BATCH; the slots must fit data). */
function recvCap(b: Batch, limit = MAX_BATCH): number {
  const cap = Math.min(b.cap, MAX_BATCH, limit);
  if (b.slot === 0 || cap * b.slot > b.data.length) throw new RangeError('batch.data is smaller than cap * slot');
  return cap;
}

/** Copies as much of src as fits a slot into entry i of b; returns the real length. */
function fillSlot(b: Batch, i: number, src: Uint8Array): number {
  const off = i * b.slot;
  b.data.set(src.length > b.slot ? src.subarray(0, b.slot) : src, off);
  b.off[i] = off;
  b.len[i] = src.length;
  return src.length;
}

interface Queued {
  data: Buffer;
  addr: number;
  port: number;
}
interface ErrQueued extends Queued {
  info: number;
}

abstract class FakeFd {
  poll: FakePoll | null = null;
  constructor(readonly fd: number) {}
  abstract readable(): boolean;
}

export class FakeUdpSocket extends FakeFd {
  /** Datagrams waiting to be received (source address and port). */
  readonly rx: Queued[] = [];
  /** ICMP errors waiting (IP_RECVERR): quoted start of the datagram, where it was sent, type << 8 | code. */
  readonly errors: ErrQueued[] = [];
  /** Datagrams the next sends may still queue before the send buffer is "full" (EAGAIN). */
  sendBudget = Infinity;
  /** Receive queue length beyond which arriving datagrams are dropped, as with a full receive buffer. */
  rxLimit = 4096;
  /** Datagrams dropped because the receive queue was full. */
  rxDropped = 0;
  constructor(
    fd: number,
    readonly addr: number,
    readonly port: number,
    readonly reusePort: boolean,
  ) {
    super(fd);
  }
  readable(): boolean {
    return this.rx.length > 0 || this.errors.length > 0;
  }
}

class FakeTunQueue extends FakeFd {
  /** Packets the kernel routed into the interface, waiting for tunRead. */
  readonly rx: Buffer[] = [];
  constructor(
    fd: number,
    readonly dev: FakeTun,
  ) {
    super(fd);
  }
  readable(): boolean {
    return this.rx.length > 0;
  }
}

/**
 * The kernel side of a fake TUN interface. Created down, as the kernel
 * creates one: set `up` (what `ip link set ... up` does) before writing.
 * Emits 'written' after each packet the router wrote.
 */
export class FakeTun extends EventEmitter {
  /** Whether the interface is up; writes to a down interface are refused (EIO), injections dropped. */
  up = false;
  /** Packets the router wrote into the kernel, oldest first (take them out as you read them). */
  readonly written: Buffer[] = [];
  /** Queue length of each TUN queue beyond which routed packets are dropped (txqueuelen). */
  rxLimit = 1000;
  rxDropped = 0;
  readonly queues: FakeTunQueue[] = [];
  /** Deleted under its open queues (`ip link del`): reads and writes fail with EBADFD. */
  removed = false;
  constructor(
    private readonly io: FakeIO,
    readonly name: string,
    readonly multiQueue: boolean,
    readonly index: number,
  ) {
    super();
  }

  /** `ip link del`: the interface goes, its queue fds stay open and fail. */
  remove(): void {
    this.removed = true;
    this.up = false;
    this.io.forget(this);
  }

  /**
   * The kernel routes packet into the interface: it lands on one queue (by a
   * hash of its addresses with several, as the kernel spreads flows). False
   * when it was dropped (interface down or gone, queue full).
   */
  inject(packet: Uint8Array): boolean {
    if (!this.up || this.queues.length === 0) return false;
    let h = 0;
    for (let i = 8; i < 40 && i < packet.length; i++) h = (h * 31 + packet[i]!) >>> 0;
    const q = this.queues[h % this.queues.length]!;
    if (q.rx.length >= this.rxLimit) {
      this.rxDropped++;
      return false;
    }
    q.rx.push(Buffer.from(packet));
    this.io.wake(q);
    return true;
  }
}

class FakePoll implements PollHandle {
  private started = true;
  private closed = false;
  private scheduled = false;
  constructor(
    private readonly io: FakeIO,
    readonly fd: number,
    private readonly onReadable: () => void,
  ) {}

  start(): void {
    if (this.closed) throw Object.assign(new Error('poll handle is closed'), { code: 'ERR_POLL_CLOSED' });
    this.started = true;
    this.schedule();
  }
  stop(): void {
    this.started = false;
  }
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.started = false;
    this.io.unpoll(this);
  }

  /** Runs the callback on a later turn of the event loop if the fd is readable (level-triggered). */
  schedule(): void {
    if (this.scheduled || !this.started || !this.io.readable(this.fd)) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      if (!this.started || !this.io.readable(this.fd)) return;
      try {
        this.onReadable();
      } finally {
        // Whatever the callback left (it reads a bounded number of batches) wakes it again, as epoll would.
        this.schedule();
      }
    });
  }
}

export interface FakeIOOptions {
  /** Local IPv4 addresses besides 127.0.0.0/8 (as if on lo): sockets bind them, datagrams to them are delivered. */
  addresses?: readonly string[];
}

export class FakeIO implements NativeIO {
  private readonly fds = new Map<number, FakeFd>();
  private readonly tuns = new Map<string, FakeTun>();
  private readonly local = new Set<number>();
  private nextFd = FIRST_FD;
  private nextIfIndex = 100;

  constructor(opts: FakeIOOptions = {}) {
    for (const a of opts.addresses ?? []) this.addAddress(a);
  }

  /** Makes ipv4 an address of the fake host. */
  addAddress(ipv4: string): void {
    this.local.add(parseV4(ipv4));
  }

  /** The kernel side of TUN interface `name`, while some queue of it is open. */
  tun(name: string): FakeTun | undefined {
    return this.tuns.get(name);
  }

  /** The socket behind a UDP fd (its queues and send budget), for tests that shape them. */
  udpSocket(fd: number): FakeUdpSocket {
    const s = this.fds.get(fd);
    if (!(s instanceof FakeUdpSocket)) throw sysError('EBADF', 'udpSocket');
    return s;
  }

  // --- NativeIO ------------------------------------------------------------

  tunOpen(name: string, multiQueue: boolean): { fd: number; name: string; offload: boolean } {
    if (typeof name !== 'string') throw new TypeError('name must be a string');
    if (Buffer.byteLength(name) > 15) throw new RangeError('name is too long (at most 15 bytes)');
    let ifname = name;
    if (ifname === '') for (let i = 0; this.tuns.has((ifname = `tun${i}`)); i++);
    let dev = this.tuns.get(ifname);
    if (dev) {
      // The kernel: a multi-queue device takes more multi-queue opens only; a single-queue one is busy.
      if (dev.multiQueue !== multiQueue) throw sysError('EINVAL', 'ioctl(TUNSETIFF)');
      if (!multiQueue) throw sysError('EBUSY', 'ioctl(TUNSETIFF)');
    } else {
      dev = new FakeTun(this, ifname, multiQueue, this.nextIfIndex++);
      this.tuns.set(ifname, dev);
    }
    const q = new FakeTunQueue(this.nextFd++, dev);
    dev.queues.push(q);
    this.fds.set(q.fd, q);
    return { fd: q.fd, name: ifname, offload: false };
  }

  udpOpen(ipv4: string, port: number, reusePort: boolean, freebind = false): { fd: number; port: number } {
    const addr = parseV4(ipv4);
    if (!Number.isInteger(port) || port < 0 || port > 65535)
      throw new RangeError('port must be an integer in [0, 65535]');
    if (addr !== 0 && !freebind && !this.isLocal(addr)) throw sysError('EADDRNOTAVAIL', 'bind');
    const clash = (p: number, reuse: boolean) =>
      [...this.fds.values()].some(
        (s) =>
          s instanceof FakeUdpSocket &&
          s.port === p &&
          (s.addr === addr || s.addr === 0 || addr === 0) &&
          !(reuse && s.reusePort),
      );
    let bound = port;
    if (port === 0) {
      for (bound = EPHEMERAL_FIRST; bound <= EPHEMERAL_LAST && clash(bound, false); bound++);
      if (bound > EPHEMERAL_LAST) throw sysError('EADDRINUSE', 'bind');
    } else if (clash(port, reusePort)) {
      throw sysError('EADDRINUSE', 'bind');
    }
    const s = new FakeUdpSocket(this.nextFd++, addr, bound, reusePort);
    this.fds.set(s.fd, s);
    return { fd: s.fd, port: bound };
  }

  close(fd: number): void {
    const f = this.fds.get(fd);
    if (!f) throw sysError('EBADF', 'close');
    this.fds.delete(fd);
    if (f instanceof FakeTunQueue) {
      const qs = f.dev.queues;
      qs.splice(qs.indexOf(f), 1);
      // The interface (and whatever the kernel had on it) goes with its last queue.
      if (qs.length === 0) this.forget(f.dev);
    }
  }

  udpRecv(fd: number, b: Batch): number {
    const s = this.socket(fd, 'recvmmsg');
    const n = Math.min(recvCap(b), s.rx.length);
    for (let i = 0; i < n; i++) {
      const d = s.rx.shift()!;
      fillSlot(b, i, d.data);
      b.addr[i] = d.addr;
      b.port[i] = d.port;
    }
    return n;
  }

  /** The TTL each socket was last given (no hops here: only recorded). */
  readonly ttl = new Map<number, number>();

  udpTtl(fd: number, ttl: number): void {
    this.ttl.set(fd, ttl);
  }

  /** The fake's TUN queues never have the offload (tunOpen ignores it): every packet is read one by one. */
  tunOffload(fd: number): boolean {
    this.tunQueue(fd, 'ioctl(TUNGETIFF)');
    return false;
  }

  /** Nor do its sockets take UDP_SEGMENT. */
  udpGso(fd: number): boolean {
    this.socket(fd, 'setsockopt');
    return false;
  }

  udpSend(fd: number, b: Batch, count: number): number {
    checkEntries(b, count);
    if (count === 0) return 0; // no system call, so no error either
    const s = this.socket(fd, 'sendmmsg');
    let i = 0;
    for (; i < count; i++) {
      const to = b.addr[i]!,
        port = b.port[i]!,
        len = b.len[i]!;
      const refusal =
        port === 0
          ? 'EINVAL'
          : to === 0xffffffff
            ? 'EACCES'
            : len > MAX_UDP_PAYLOAD
              ? 'EMSGSIZE'
              : !this.isLocal(to)
                ? 'ENETUNREACH'
                : null;
      if (refusal) {
        b.refused[0] = b.refused[0]! + 1;
        continue;
      }
      if (s.sendBudget <= 0) break;
      s.sendBudget--;
      this.deliver(s, to, port, b.data.subarray(b.off[i]!, b.off[i]! + len));
    }
    return i;
  }

  tunRead(fd: number, b: Batch): number {
    const q = this.tunQueue(fd, 'read');
    if (q.dev.removed) throw sysError('EBADFD', 'read');
    const n = Math.min(recvCap(b), q.rx.length);
    for (let i = 0; i < n; i++) fillSlot(b, i, q.rx.shift()!);
    return n;
  }

  tunWrite(fd: number, b: Batch, count: number): number {
    checkEntries(b, count);
    if (count === 0) return 0;
    const q = this.tunQueue(fd, 'write');
    const dev = q.dev;
    // The kernel: every write to a deleted interface fails with EBADFD, which the addon throws.
    if (dev.removed) throw sysError('EBADFD', 'write');
    for (let i = 0; i < count; i++) {
      const len = b.len[i]!,
        version = len ? b.data[b.off[i]!]! >> 4 : 0;
      // The kernel: EIO while the interface is down, EINVAL for what is neither IPv4 nor IPv6 (empty included).
      if (!dev.up || (version !== 4 && version !== 6)) {
        b.refused[0] = b.refused[0]! + 1;
        continue;
      }
      dev.written.push(Buffer.from(b.data.subarray(b.off[i]!, b.off[i]! + len)));
      dev.emit('written');
    }
    return count;
  }

  poll(fd: number, onReadable: () => void): PollHandle {
    if (typeof onReadable !== 'function') throw new TypeError('onReadable must be a function');
    const f = this.fds.get(fd);
    if (!f) throw sysError('EBADF', 'uv_poll_init');
    if (f.poll) throw sysError('EEXIST', 'uv_poll_init');
    const p = new FakePoll(this, fd, onReadable);
    f.poll = p;
    p.schedule();
    return p;
  }

  ifIndex(name: string): number {
    if (name === 'lo') return 1;
    return this.tuns.get(name)?.index ?? 0;
  }

  tryLock(fd: number): boolean {
    // Fake fds are no files: there is nothing another process could hold.
    if (!this.fds.has(fd)) throw sysError('EBADF', 'flock');
    return true;
  }

  udpRecvErrors(fd: number, b: Batch, info: Uint32Array): number {
    // The addon stops at any recvmsg error, a bad fd included, and reports what it read: 0 here.
    const s = this.fds.get(fd);
    if (!(s instanceof FakeUdpSocket)) return 0;
    const n = Math.min(recvCap(b, info.length), s.errors.length);
    for (let i = 0; i < n; i++) {
      const e = s.errors.shift()!;
      // recvmsg on the error queue returns what fits the slot, without MSG_TRUNC: the copied length.
      b.len[i] = Math.min(fillSlot(b, i, e.data), b.slot);
      b.addr[i] = e.addr;
      b.port[i] = e.port;
      info[i] = e.info;
    }
    return n;
  }

  // --- the fake kernel -----------------------------------------------------

  /** Drops a deleted interface's name, so that it can be created anew. */
  forget(dev: FakeTun): void {
    if (this.tuns.get(dev.name) === dev) this.tuns.delete(dev.name);
  }

  /** Whether fd has something to read (data or, for UDP, errors); false once closed. */
  readable(fd: number): boolean {
    return this.fds.get(fd)?.readable() ?? false;
  }

  /** Schedules fd's poll callback, if it has one (something became readable). */
  wake(f: FakeFd): void {
    f.poll?.schedule();
  }

  unpoll(p: FakePoll): void {
    const f = this.fds.get(p.fd);
    if (f?.poll === p) f.poll = null;
  }

  /**
   * A datagram sent to a local address: to the socket bound to it (an exact
   * address before a wildcard; among SO_REUSEPORT sockets by a hash of the
   * source, as the kernel spreads flows), or, with nothing listening, an ICMP
   * port unreachable on the sender's error queue.
   */
  private deliver(from: FakeUdpSocket, to: number, port: number, data: Uint8Array): void {
    // A wildcard-bound sender gets the destination's own address as source, as the kernel's local route gives it.
    const src = from.addr === 0 ? to : from.addr;
    const exact: FakeUdpSocket[] = [],
      wildcard: FakeUdpSocket[] = [];
    for (const f of this.fds.values()) {
      if (f instanceof FakeUdpSocket && f.port === port) {
        if (f.addr === to) exact.push(f);
        else if (f.addr === 0) wildcard.push(f);
      }
    }
    const group = exact.length ? exact : wildcard;
    if (group.length === 0) {
      from.errors.push({ data: Buffer.from(data.subarray(0, ICMP_QUOTE)), addr: to, port, info: PORT_UNREACHABLE });
      this.wake(from);
      return;
    }
    const r = group[((src ^ Math.imul(from.port, 0x9e3779b1)) >>> 0) % group.length]!;
    if (r.rx.length >= r.rxLimit) {
      r.rxDropped++;
      return;
    }
    r.rx.push({ data: Buffer.from(data), addr: src, port: from.port });
    this.wake(r);
  }

  private isLocal(addr: number): boolean {
    return addr >>> 24 === 127 || this.local.has(addr);
  }

  private socket(fd: number, syscall: string): FakeUdpSocket {
    const s = this.fds.get(fd);
    if (!(s instanceof FakeUdpSocket)) throw sysError('EBADF', syscall);
    return s;
  }

  private tunQueue(fd: number, syscall: string): FakeTunQueue {
    const q = this.fds.get(fd);
    if (!(q instanceof FakeTunQueue)) throw sysError('EBADF', syscall);
    return q;
  }
}
