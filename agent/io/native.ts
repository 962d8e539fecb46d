/**
 * Typed access to the native I/O addon (agent/native/*.c, built into
 * build/Release/sixbed4_native.node by `npm run build:native`).
 *
 * The addon is loaded lazily, on the first call, so that modules importing
 * this one still load where the addon is not built (pure-JS unit tests).
 * Errors from system calls are `Error`s with Node's usual `.code` (errno
 * name, e.g. 'EADDRINUSE'), `.errno` (negative) and `.syscall`.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { MAX_BATCH, type Batch, type TunGso, type UdpGro } from './batch.js';
import { packageRoot } from '../../lib/build-info.js';

export { MAX_BATCH, newBatch, type Batch } from './batch.js';

/** A uv_poll watcher on the calling thread's event loop. */
export interface PollHandle {
  /** Resumes watching (no-op when already started). Throws once closed. */
  start(): void;
  /** Stops watching; the fd stays open and start() may resume. */
  stop(): void;
  /** Stops and releases the watcher. Idempotent. Close it before closing the fd. */
  close(): void;
}

export interface NativeIO {
  /**
   * Opens /dev/net/tun (IFF_TUN | IFF_NO_PI, | IFF_MULTI_QUEUE when
   * multiQueue) attached to interface `name` ('' lets the kernel choose).
   * The fd is non-blocking and close-on-exec; the interface lives as long as
   * some queue fd is open. Returns the fd and the kernel's interface name.
   * offload: also IFF_VNET_HDR and TUNSETOFFLOAD (checksums, TSO, USO), so a
   * read may bring a whole GSO super-packet (tunRead with gso cuts it); the
   * result's offload says whether the queue has it (the kernel may refuse; an
   * existing interface keeps its own mode, which its queues share).
   */
  tunOpen(name: string, multiQueue: boolean, offload?: boolean): { fd: number; name: string; offload?: boolean };
  /**
   * UDP/IPv4 socket bound to ipv4:port (0 = ephemeral), non-blocking,
   * close-on-exec, SO_REUSEPORT when reusePort, 4 MiB socket buffers where
   * allowed. Returns the fd and the bound port. freebind (IP_FREEBIND): the address need not be on the host (yet):
   * a failover standby binds the floating address before it holds it.
   */
  udpOpen(ipv4: string, port: number, reusePort: boolean, freebind?: boolean): { fd: number; port: number };
  /** close(2). Throws only for EBADF. */
  close(fd: number): void;
  /**
   * Receives up to min(b.cap, MAX_BATCH) datagrams with one recvmmsg.
   * Datagram i lands at b.off[i] = i * b.slot; b.len[i] is its real length
   * (> b.slot when it was truncated); b.addr[i]/b.port[i] its source.
   * Returns the count, 0 when nothing is waiting. ICMP-induced errors are
   * swallowed (retried once, else 0).
   * gro (newUdpGro): the socket has UDP_GRO (udpGro): a buffer of several datagrams is cut into them, one entry
   * each, exactly as they would have come without it; what the batch has no room for waits in gro for the next call.
   */
  udpRecv(fd: number, b: Batch, gro?: UdpGro): number;
  /**
   * UDP_GRO on the socket fd: set when on is given; whether it has it (false where the kernel has none). A socket
   * with it must be read with udpRecv's gro. Optional: a stand-in without it has none.
   */
  udpGro?(fd: number, on?: boolean): boolean;
  /**
   * Sends entries [0, count) with sendmmsg. Returns how many were consumed:
   * less than count only when the socket buffer is full (EAGAIN). Datagrams
   * the kernel refuses (EPERM, ENETUNREACH, EMSGSIZE, ...) are dropped and
   * still counted, and added to b.refused[0]. Throws only for unusable fds/arguments.
   * gso (newUdpGso, while its [0] is 1): consecutive datagrams to one destination, of one length but for a shorter
   * last, go as one send with UDP_SEGMENT (the same datagrams on the wire); it counts them in gso.
   */
  udpSend(fd: number, b: Batch, count: number, gso?: Uint32Array): number;
  /**
   * Reads packets until EAGAIN or min(b.cap, MAX_BATCH) packets: packet i at
   * b.off[i] = i * b.slot, length b.len[i] (> b.slot when truncated).
   * gso: the queue has the offload (tunOffload): each read starts with a virtio_net_hdr, a super-packet is cut
   * into the packets the kernel would have sent one by one (the rest waits in gso for the next call), and checksums
   * the kernel left partial are completed.
   */
  tunRead(fd: number, b: Batch, gso?: TunGso): number;
  /**
   * Writes packets [0, count). Returns how many were consumed: less than
   * count only on EAGAIN. Packets the kernel rejects (EINVAL, EIO while the
   * link is down, ...) are dropped and still counted, and added to b.refused[0].
   * vnet: the queue has the offload; each packet goes with an empty virtio_net_hdr.
   * coalesce (newTunCoalesce; with vnet only): consecutive TCP segments of one flow that the kernel can cut again
   * into the same segments go as one GSO super-packet (agent/native/coalesce.c); it counts them.
   */
  tunWrite(fd: number, b: Batch, count: number, vnet?: boolean, coalesce?: Uint32Array): number;
  /** Whether the TUN queue fd was opened with the offload (IFF_VNET_HDR): then read it with gso, write it with vnet. */
  tunOffload(fd: number): boolean;
  /** Whether the kernel takes UDP_SEGMENT on the socket fd (udpSend's gso). */
  udpGso(fd: number): boolean;
  /**
   * Calls onReadable() (no arguments) whenever fd is readable, on the
   * calling thread's event loop; started already. Works in worker_threads.
   * At most one poll per fd per thread (uv_poll_init fails with EEXIST).
   */
  poll(fd: number, onReadable: () => void): PollHandle;
  /** if_nametoindex; 0 when there is no such interface. */
  ifIndex(name: string): number;
  /** flock(fd, LOCK_EX | LOCK_NB): true when taken, false when another process holds it. */
  tryLock(fd: number): boolean;
  /**
   * Reads ICMP errors queued on a UDP socket (IP_RECVERR, set by udpOpen):
   * entry i holds the start of the datagram the error is about (as quoted),
   * b.addr[i]:b.port[i] where it was sent, info[i] = ICMP type << 8 | code.
   * Returns the count, 0 when the queue is empty.
   */
  udpRecvErrors(fd: number, b: Batch, info: Uint32Array): number;
  /** The IPv4 TTL of what fd sends from now on (-1: the default again). */
  udpTtl(fd: number, ttl: number): void;
}

/** The addon's raw exports: batches are passed as their separate arrays. */
interface RawAddon {
  readonly MAX_BATCH: number;
  tunOpen(name: string, multiQueue: boolean, offload?: boolean): { fd: number; name: string; offload: boolean };
  udpOpen(ipv4: string, port: number, reusePort: boolean, freebind?: boolean): { fd: number; port: number };
  close(fd: number): void;
  tunOffload(fd: number): boolean;
  udpGso(fd: number): boolean;
  tunReadGso(
    fd: number,
    data: Buffer,
    off: Uint32Array,
    len: Uint32Array,
    slot: number,
    carry: Buffer,
    state: Uint32Array,
  ): number;
  udpRecv(
    fd: number,
    data: Buffer,
    off: Uint32Array,
    len: Uint32Array,
    addr: Uint32Array,
    port: Uint16Array,
    slot: number,
  ): number;
  udpRecvGro(
    fd: number,
    data: Buffer,
    off: Uint32Array,
    len: Uint32Array,
    addr: Uint32Array,
    port: Uint16Array,
    slot: number,
    carry: Buffer,
    state: Uint32Array,
  ): number;
  udpGro(fd: number, on?: boolean): boolean;
  udpSend(
    fd: number,
    data: Buffer,
    off: Uint32Array,
    len: Uint32Array,
    addr: Uint32Array,
    port: Uint16Array,
    count: number,
    refused: Uint32Array,
    gso?: Uint32Array,
  ): number;
  tunRead(fd: number, data: Buffer, off: Uint32Array, len: Uint32Array, slot: number): number;
  udpRecvErrors(
    fd: number,
    data: Buffer,
    off: Uint32Array,
    len: Uint32Array,
    addr: Uint32Array,
    port: Uint16Array,
    slot: number,
    info: Uint32Array,
  ): number;
  tunWrite(
    fd: number,
    data: Buffer,
    off: Uint32Array,
    len: Uint32Array,
    count: number,
    refused: Uint32Array,
    vnet?: boolean,
  ): number;
  tunWriteCoalesce(
    fd: number,
    data: Buffer,
    off: Uint32Array,
    len: Uint32Array,
    count: number,
    refused: Uint32Array,
    stats: Uint32Array,
  ): number;
  tunCoalescePlan(data: Buffer, off: Uint32Array, len: Uint32Array, count: number, out: Uint32Array): number;
  poll(fd: number, onReadable: () => void): PollHandle;
  ifIndex(name: string): number;
  tryLock(fd: number): boolean;
  notify(path: string, message: string): void;
  packetSend(ifname: string, frame: Uint8Array): void;
  txChecksum(name: string): boolean;
  ethtoolSet(name: string, feature: 'tso' | 'gro', on: boolean): void;
  routeWatch(): number;
  routeWatchDrain(fd: number, uplinkIfindex: number): number;
  udpSteer(fd: number, program: Uint8Array): void;
  udpSteerEbpf(fd: number, progFd: number): void;
  udpTtl(fd: number, ttl: number): void;
  bpfMapCreate(
    type: number,
    keySize: number,
    valueSize: number,
    maxEntries: number,
    name: string,
    flags: number,
  ): number;
  bpfMapDelete(fd: number, key: Uint8Array): boolean;
  bpfProgQuery(ifindex: number, attachType: number): number;
  bpfMapDrain(fd: number, keys: Uint8Array, values: Uint8Array): MapDrain;
  bpfProgLoad(type: number, insns: Uint8Array, license: string, name: string): number;
  bpfMapUpdate(fd: number, key: Uint8Array, value: Uint8Array): void;
  bpfMapLookup(fd: number, key: Uint8Array, value: Uint8Array): void;
  bpfProgTestRun(fd: number, dataIn: Uint8Array, dataOut: Uint8Array): { retval: number; size: number };
  bpfLinkCreate(progFd: number, ifindex: number, attachType: number, flags: number): number;
}

const ADDON = join('build', 'Release', 'sixbed4_native.node');

/** The package root (lib/build-info.ts), else three levels up from dist/agent/io. */
const addonRoot = (): string => packageRoot() ?? join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

let raw: RawAddon | undefined;

function load(): RawAddon {
  const path = join(addonRoot(), ADDON);
  if (!existsSync(path)) {
    throw new Error(
      `sixbed4 native addon not found at ${path}: in a clone, \`npm run build:native\`; installed with ` +
        'npm, reinstall letting it build the addon: `npm install -g --allow-scripts=$PWD/sixbed4-VERSION.tgz,raw-socket $PWD/sixbed4-VERSION.tgz` (README: Single host)',
    );
  }
  let mod: RawAddon;
  try {
    mod = createRequire(import.meta.url)(path) as RawAddon;
  } catch (cause) {
    throw new Error(
      `sixbed4 native addon at ${path} failed to load (rebuild with \`npm run build:native\`): ${String(cause)}`,
      { cause },
    );
  }
  if (mod.MAX_BATCH !== MAX_BATCH) {
    throw new Error(
      `sixbed4 native addon is stale (MAX_BATCH ${mod.MAX_BATCH}, expected ${MAX_BATCH}): run \`npm run build:native\``,
    );
  }
  raw = mod;
  return mod;
}

function addon(): RawAddon {
  return raw ?? load();
}

/** Loads the addon now (throws if it is not built). Returns the API. */
export function loadNative(): NativeIO {
  addon();
  return native;
}

export const native: NativeIO = {
  tunOpen: (name, multiQueue, offload) => addon().tunOpen(name, multiQueue, offload),
  udpOpen: (ipv4, port, reusePort, freebind) => addon().udpOpen(ipv4, port, reusePort, freebind === true),
  close: (fd) => addon().close(fd),
  udpRecv: (fd, b, gro) =>
    gro
      ? addon().udpRecvGro(fd, b.data, b.off, b.len, b.addr, b.port, b.slot, gro.buf, gro.state)
      : addon().udpRecv(fd, b.data, b.off, b.len, b.addr, b.port, b.slot),
  udpGro: (fd, on) => addon().udpGro(fd, on),
  udpSend: (fd, b, count, gso) => addon().udpSend(fd, b.data, b.off, b.len, b.addr, b.port, count, b.refused, gso),
  tunRead: (fd, b, gso) =>
    gso
      ? addon().tunReadGso(fd, b.data, b.off, b.len, b.slot, gso.buf, gso.state)
      : addon().tunRead(fd, b.data, b.off, b.len, b.slot),
  tunWrite: (fd, b, count, vnet, coalesce) =>
    vnet === true && coalesce
      ? addon().tunWriteCoalesce(fd, b.data, b.off, b.len, count, b.refused, coalesce)
      : addon().tunWrite(fd, b.data, b.off, b.len, count, b.refused, vnet === true),
  tunOffload: (fd) => addon().tunOffload(fd),
  udpGso: (fd) => addon().udpGso(fd),
  poll: (fd, onReadable) => addon().poll(fd, onReadable),
  ifIndex: (name) => addon().ifIndex(name),
  tryLock: (fd) => addon().tryLock(fd),
  udpRecvErrors: (fd, b, info) => addon().udpRecvErrors(fd, b.data, b.off, b.len, b.addr, b.port, b.slot, info),
  udpTtl: (fd, ttl) => addon().udpTtl(fd, ttl),
};

/**
 * Sends message as one datagram to the AF_UNIX socket at path ('@' first: abstract), as sd_notify(3) does.
 * Not part of NativeIO: it is how the process talks to systemd, not data-path I/O a test would fake.
 */
export function notifySocket(path: string, message: string): void {
  addon().notify(path, message);
}

/**
 * Sends one whole Ethernet frame (header included) out of the interface through AF_PACKET: gratuitous ARP and
 * unsolicited NA of a failover member (agent/failover/frames.ts builds them). Needs CAP_NET_RAW. Not part of NativeIO:
 * announcements are not data-path I/O; tests watch them on a real segment.
 */
export function packetSend(ifname: string, frame: Uint8Array): void {
  addon().packetSend(ifname, frame);
}

/**
 * What tunWrite with coalesce would write for b's entries [0, count), without writing (agent/native/coalesce.c): the
 * writes in order, each as [entries, payload size of its segments] ([1, 0]: an entry alone). Not part of NativeIO:
 * for tests of the merges.
 */
export function tunCoalescePlan(b: Batch, count: number): [number, number][] {
  const out = new Uint32Array(2 * Math.max(count, 1));
  const n = addon().tunCoalescePlan(b.data, b.off, b.len, count, out);
  const r: [number, number][] = [];
  for (let g = 0; g < n; g++) r.push([out[2 * g]!, out[2 * g + 1]!]);
  return r;
}

/**
 * Whether the interface completes checksums on transmit (ethtool's tx-checksumming). Not part of NativeIO: the fast
 * path asks it once when it attaches.
 */
export function txChecksum(name: string): boolean {
  return addon().txChecksum(name);
}

/** Turns an interface's TSO (every kind) or GRO on or off, as `ethtool -K NAME tso|gro on|off` does. */
export function ethtoolSet(name: string, feature: 'tso' | 'gro', on: boolean): void {
  addon().ethtoolSet(name, feature, on);
}

/**
 * A netlink socket (close-on-exec, non-blocking) told of every change to the host's routes, rules, addresses, links,
 * neighbours, forwarding switches and nexthop objects; poll it and read it with routeWatchDrain. Not part of NativeIO:
 * the fast path's cache of the FIB's answers watches it (agent/bpf/routes.ts).
 */
export function routeWatch(): number {
  return addon().routeWatch();
}

/**
 * Reads every notification waiting on a routeWatch socket: how many may change a FIB answer (neighbours count only as
 * IPv4 neighbours on uplinkIfindex; lost notifications count as one).
 */
export function routeWatchDrain(fd: number, uplinkIfindex: number): number {
  return addon().routeWatchDrain(fd, uplinkIfindex);
}

/**
 * Attaches a classic BPF program (agent/router/steer.ts) to fd's SO_REUSEPORT group: it picks each datagram's socket.
 * Not part of NativeIO: the router attaches it once, to real sockets.
 */
export function udpSteer(fd: number, program: Uint8Array): void {
  addon().udpSteer(fd, program);
}

/**
 * Attaches an eBPF program (BPF_PROG_TYPE_SK_REUSEPORT: agent/bpf/steer.bpf.c) to fd's SO_REUSEPORT group
 * (SO_ATTACH_REUSEPORT_EBPF), replacing the group's program: it picks each datagram's socket from a map.
 */
export function udpSteerEbpf(fd: number, progFd: number): void {
  addon().udpSteerEbpf(fd, progFd);
}

/**
 * What one drain of a hash map took: count entries, and why it stopped. end: the map is empty; full: the buffers
 * are full (or the next bucket does not fit what is left): call again; grow: the next bucket alone is bigger than
 * the buffers; again: the kernel was busy (or failed after some entries): call again later.
 */
export interface MapDrain {
  count: number;
  status: 'end' | 'full' | 'grow' | 'again';
}

/**
 * The bpf(2) commands of the fast path (agent/bpf/), as raw system calls. Not part of NativeIO: nothing fakes them;
 * tests that need them run as root. Every fd returned is close-on-exec; close them with native.close.
 */
export interface BpfSyscalls {
  /** BPF_MAP_CREATE (flags: map_flags, e.g. BPF_F_NO_PREALLOC, which an LPM trie needs). */
  mapCreate(type: number, keySize: number, valueSize: number, maxEntries: number, name: string, flags?: number): number;
  /** BPF_PROG_LOAD of insns (8 bytes each); a refusal throws with the end of the verifier's log. */
  progLoad(type: number, insns: Uint8Array, license: string, name: string): number;
  /** BPF_MAP_UPDATE_ELEM (BPF_ANY). Buffers shorter than the map's key and value sizes are refused. */
  mapUpdate(fd: number, key: Uint8Array, value: Uint8Array): void;
  /** BPF_MAP_DELETE_ELEM: whether the entry was there. */
  mapDelete(fd: number, key: Uint8Array): boolean;
  /** BPF_MAP_LOOKUP_ELEM into value (per-CPU maps: one 8-byte-aligned slot per possible CPU). */
  mapLookup(fd: number, key: Uint8Array, value: Uint8Array): void;
  /** BPF_PROG_TEST_RUN on one packet: the program's return value and the packet as it left (size bytes of dataOut). */
  progTestRun(fd: number, dataIn: Uint8Array, dataOut: Uint8Array): { retval: number; size: number };
  /**
   * BPF_MAP_LOOKUP_AND_DELETE_BATCH from the map's start until the buffers are full or the walk ends: how many
   * entries came out, and why it stopped (bpf.c's map_drain says what each status asks of the caller).
   */
  mapDrain(fd: number, keys: Uint8Array, values: Uint8Array): MapDrain;
  /** BPF_PROG_QUERY: how many programs are attached to the device ifindex at attachType (tcx ingress or egress). */
  progQuery(ifindex: number, attachType: number): number;
  /** BPF_LINK_CREATE: the program stays attached while the returned fd is open (flags: XDP's mode; 0 for tcx). */
  linkCreate(progFd: number, ifindex: number, attachType: number, flags?: number): number;
}

export const bpfSyscalls: BpfSyscalls = {
  mapCreate: (type, keySize, valueSize, maxEntries, name, flags = 0) =>
    addon().bpfMapCreate(type, keySize, valueSize, maxEntries, name, flags),
  mapDelete: (fd, key) => addon().bpfMapDelete(fd, key),
  progQuery: (ifindex, attachType) => addon().bpfProgQuery(ifindex, attachType),
  mapDrain: (fd, keys, values) => addon().bpfMapDrain(fd, keys, values),
  progLoad: (type, insns, license, name) => addon().bpfProgLoad(type, insns, license, name),
  mapUpdate: (fd, key, value) => addon().bpfMapUpdate(fd, key, value),
  mapLookup: (fd, key, value) => addon().bpfMapLookup(fd, key, value),
  progTestRun: (fd, dataIn, dataOut) => addon().bpfProgTestRun(fd, dataIn, dataOut),
  linkCreate: (progFd, ifindex, attachType, flags = 0) => addon().bpfLinkCreate(progFd, ifindex, attachType, flags),
};
