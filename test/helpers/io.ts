// Batch plumbing for the tests of a NativeIO (the addon, or FakeIO): filling
// send entries and collecting datagrams through poll + udpRecv.
import { native, type Batch, type NativeIO } from '../../agent/io/native.js';

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export interface Received {
  data: Buffer;
  len: number;
  addr: number;
  port: number;
}

/** Collects `want` datagrams from fd via poll + udpRecv (copies them out). */
export function receive(fd: number, b: Batch, want: number, io: NativeIO = native): Promise<Received[]> {
  const got: Received[] = [];
  return withTimeout(
    new Promise((resolve) => {
      const h = io.poll(fd, () => {
        const n = io.udpRecv(fd, b);
        for (let i = 0; i < n; i++) {
          const len = b.len[i]!;
          const off = b.off[i]!;
          got.push({
            data: Buffer.from(b.data.subarray(off, off + Math.min(len, b.slot))),
            len,
            addr: b.addr[i]!,
            port: b.port[i]!,
          });
        }
        if (got.length >= want) {
          h.close();
          resolve(got);
        }
      });
    }),
    30_000, // a hang detector, not a speed bound
    `receiving ${want} datagrams`,
  );
}

/** Entry i of b: payload at byte off, to (or from) addr:port. */
export function fill(b: Batch, i: number, off: number, payload: Buffer, addr: number, port: number): void {
  payload.copy(b.data, off);
  b.off[i] = off;
  b.len[i] = payload.length;
  b.addr[i] = addr;
  b.port[i] = port;
}
