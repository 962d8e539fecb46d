// A NAT in front of a peer on FakeIO, as a NativeIO the peer is started on. FakeIO is one host with every address
// local, so nothing routes through a NAT box; this puts the NAT where the peer's datagrams leave instead: the peer's
// socket keeps its own (private) address, and what it sends leaves from the NAT's public address and a port the NAT
// chose, as an endpoint-independent mapping (a home router's) does; what comes back to that port reaches the peer.
// remap() is the NAT forgetting the mapping (test/e2e/nat-change.test.ts flushes conntrack for it): from then on
// the peer's datagrams leave from a new port, and the old one is closed, so what the router sends there is lost.
import type { FakeIO } from '../../agent/io/fake.js';
import type { Batch, NativeIO, PollHandle } from '../../agent/io/native.js';

interface Mapping {
  /** The NAT's socket for this mapping: its public address and port. */
  outside: number;
  port: number;
  /** The peer's poll callback, moved to the new outside socket by remap(). */
  onReadable?: () => void;
  handle?: PollHandle;
}

export class NatIO implements NativeIO {
  /** The peer's socket fd → its mapping. */
  private readonly mappings = new Map<number, Mapping>();
  private next = 0;

  /** ports: the public ports the NAT hands out, in turn (a mapping, then each remap). */
  constructor(
    private readonly io: FakeIO,
    private readonly publicV4: string,
    private readonly ports: readonly number[],
  ) {}

  /** The public port the peer's socket fd is mapped to now. */
  publicPort(fd: number): number {
    return this.mapping(fd).port;
  }

  /** The peer's sockets (their fds), as they were opened. */
  sockets(): number[] {
    return [...this.mappings.keys()];
  }

  /** The NAT forgets fd's mapping: the next datagram gets a new public port. Returns it. */
  remap(fd: number): number {
    const m = this.mapping(fd);
    m.handle?.close();
    this.io.close(m.outside);
    Object.assign(m, this.open());
    if (m.onReadable) m.handle = this.io.poll(m.outside, m.onReadable);
    return m.port;
  }

  udpOpen(ipv4: string, port: number, reusePort: boolean, freebind?: boolean): { fd: number; port: number } {
    const inside = this.io.udpOpen(ipv4, port, reusePort, freebind);
    this.mappings.set(inside.fd, this.open());
    return inside;
  }

  close(fd: number): void {
    const m = this.mappings.get(fd);
    if (m) {
      m.handle?.close();
      this.io.close(m.outside);
      this.mappings.delete(fd);
    }
    this.io.close(fd);
  }

  udpRecv(fd: number, b: Batch): number {
    return this.io.udpRecv(this.outside(fd), b);
  }
  udpSend(fd: number, b: Batch, count: number): number {
    return this.io.udpSend(this.outside(fd), b, count);
  }
  udpGso(fd: number): boolean {
    return this.io.udpGso(this.outside(fd));
  }
  udpRecvErrors(fd: number, b: Batch, info: Uint32Array): number {
    return this.io.udpRecvErrors(this.outside(fd), b, info);
  }
  udpTtl(fd: number, ttl: number): void {
    this.io.udpTtl(this.outside(fd), ttl);
  }

  poll(fd: number, onReadable: () => void): PollHandle {
    const m = this.mappings.get(fd);
    if (!m) return this.io.poll(fd, onReadable);
    m.onReadable = onReadable;
    m.handle = this.io.poll(m.outside, onReadable);
    return {
      start: () => m.handle?.start(),
      stop: () => m.handle?.stop(),
      close: () => {
        m.handle?.close();
        delete m.handle;
        delete m.onReadable;
      },
    };
  }

  // FakeIO's queues never have the offload: nothing to pass on for it.
  tunOpen(name: string, multiQueue: boolean): { fd: number; name: string; offload: boolean } {
    return this.io.tunOpen(name, multiQueue);
  }
  tunRead(fd: number, b: Batch): number {
    return this.io.tunRead(fd, b);
  }
  tunWrite(fd: number, b: Batch, count: number): number {
    return this.io.tunWrite(fd, b, count);
  }
  tunOffload(fd: number): boolean {
    return this.io.tunOffload(fd);
  }
  ifIndex(name: string): number {
    return this.io.ifIndex(name);
  }
  tryLock(fd: number): boolean {
    return this.io.tryLock(fd);
  }

  private open(): { outside: number; port: number } {
    const port = this.ports[this.next++];
    if (port === undefined) throw new Error('the fake NAT has no public port left');
    return { outside: this.io.udpOpen(this.publicV4, port, false).fd, port };
  }

  private mapping(fd: number): Mapping {
    const m = this.mappings.get(fd);
    if (!m) throw new Error(`fd ${fd} is no socket behind the NAT`);
    return m;
  }

  /** A socket behind the NAT sends and receives through its mapping; any other fd is the host's own. */
  private outside(fd: number): number {
    return this.mappings.get(fd)?.outside ?? fd;
  }
}
