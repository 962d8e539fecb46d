/**
 * FakeIO held to the addon: the same UDP assertions on the addon over
 * loopback (no root needed) and on the fake. Where they differ the fake is
 * wrong. TUN semantics are held to the real thing by the datapath tests
 * (test/router/datapath.test.ts), which need a namespace.
 */
import test from 'ava';

import { FakeIO } from '../../agent/io/fake.js';
import { native, newBatch, type NativeIO } from '../../agent/io/native.js';
import { fill, receive, withTimeout } from '../helpers/io.js';

const LOOP = 0x7f000001; // 127.0.0.1
const BACKENDS: { name: string; io: () => NativeIO }[] = [
  { name: 'addon', io: () => native },
  { name: 'fake', io: () => new FakeIO() },
];

/** Two sockets on 127.0.0.1, closed after the test. */
function pair(
  t: import('ava').ExecutionContext,
  io: NativeIO,
): [{ fd: number; port: number }, { fd: number; port: number }] {
  const a = io.udpOpen('127.0.0.1', 0, false);
  const r = io.udpOpen('127.0.0.1', 0, false);
  t.teardown(() => {
    io.close(a.fd);
    io.close(r.fd);
  });
  return [a, r];
}

/** A port on 127.0.0.1 where nothing listens (it was just bound and closed). */
function closedPort(io: NativeIO): number {
  const s = io.udpOpen('127.0.0.1', 0, false);
  io.close(s.fd);
  return s.port;
}

for (const { name, io: make } of BACKENDS) {
  test(`${name}: udpRecv returns 0 when nothing is waiting, udpRecvErrors too`, (t) => {
    const io = make();
    const [, r] = pair(t, io);
    t.is(io.udpRecv(r.fd, newBatch(4, 1500)), 0);
    t.is(io.udpRecvErrors(r.fd, newBatch(4, 64), new Uint32Array(4)), 0);
  });

  test(`${name}: a batch arrives in order with its source; an oversize datagram reports its real length`, async (t) => {
    const io = make();
    const [a, r] = pair(t, io);
    const tx = newBatch(3, 4096);
    fill(tx, 0, 0, Buffer.from('first'), LOOP, r.port);
    fill(tx, 1, 4096, Buffer.alloc(3000, 0xab), LOOP, r.port);
    fill(tx, 2, 8192, Buffer.alloc(0), LOOP, r.port);
    const got = receive(r.fd, newBatch(2, 1500), 3, io); // fewer entries than datagrams: two calls
    t.is(io.udpSend(a.fd, tx, 3), 3);
    const [first, big, empty] = await got;
    t.deepEqual({ ...first!, data: first!.data.toString() }, { data: 'first', len: 5, addr: LOOP, port: a.port });
    t.is(big!.len, 3000, 'the real length, beyond the slot');
    t.is(big!.data.length, 1500);
    t.true(big!.data.every((x) => x === 0xab));
    t.is(empty!.len, 0, 'an empty datagram (a keepalive) is a datagram');
  });

  test(`${name}: datagrams the kernel refuses are consumed, not delivered, and counted in refused[0]`, async (t) => {
    const io = make();
    const [a, r] = pair(t, io);
    const tx = newBatch(4, 64);
    fill(tx, 0, 0, Buffer.from('one'), LOOP, r.port);
    fill(tx, 1, 64, Buffer.from('bcast'), 0xffffffff, r.port); // no SO_BROADCAST: EACCES
    fill(tx, 2, 128, Buffer.from('two'), LOOP, r.port);
    fill(tx, 3, 192, Buffer.from('zero-port'), LOOP, 0); // EINVAL
    const got = receive(r.fd, newBatch(4, 1500), 2, io);
    t.is(io.udpSend(a.fd, tx, 4), 4);
    t.deepEqual(
      (await got).map((g) => g.data.toString()),
      ['one', 'two'],
    );
    t.is(tx.refused[0], 2);
  });

  test(`${name}: port unreachable lands on the error queue with the datagram's start, where it went and type 3 code 3`, async (t) => {
    const io = make();
    const [a] = pair(t, io);
    const gone = closedPort(io);
    const tx = newBatch(1, 2048);
    const payload = Buffer.alloc(1000);
    for (let i = 0; i < payload.length; i++) payload[i] = i & 0xff;
    fill(tx, 0, 0, payload, LOOP, gone);
    const b = newBatch(4, 1500),
      info = new Uint32Array(4);
    const errors = withTimeout(
      new Promise<number>((resolve) => {
        // The error makes the socket readable (POLLERR); there is no data.
        const h = io.poll(a.fd, () => {
          const n = io.udpRecvErrors(a.fd, b, info);
          if (n) {
            h.close();
            resolve(n);
          }
        });
      }),
      30_000,
      'the ICMP error',
    );
    t.is(io.udpSend(a.fd, tx, 1), 1, 'the send itself succeeds');
    t.is(await errors, 1);
    t.is(info[0], (3 << 8) | 3);
    t.is(b.addr[0], LOOP);
    t.is(b.port[0], gone);
    t.is(b.len[0], 520, 'as much as the ICMP error quotes: 576 bytes less the IPv4, ICMP, IPv4 and UDP headers');
    t.true(b.data.subarray(b.off[0]!, b.off[0]! + b.len[0]!).equals(payload.subarray(0, 520)));
    t.is(io.udpRecv(a.fd, newBatch(2, 64)), 0, 'the data receive is not disturbed by the error');
    t.is(io.udpRecvErrors(a.fd, b, info), 0, 'read once');
  });

  test(`${name}: binding: EADDRINUSE, SO_REUSEPORT sharing, EADDRNOTAVAIL, bad addresses`, (t) => {
    const io = make();
    const a = io.udpOpen('127.0.0.1', 0, true);
    t.teardown(() => io.close(a.fd));
    t.throws(() => io.udpOpen('127.0.0.1', a.port, false), { code: 'EADDRINUSE' });
    const b = io.udpOpen('127.0.0.1', a.port, true);
    io.close(b.fd);
    t.is(b.port, a.port);
    t.throws(() => io.udpOpen('203.0.113.77', 0, false), { code: 'EADDRNOTAVAIL' });
    t.throws(() => io.udpOpen('not-an-ip', 0, false), { instanceOf: TypeError });
  });

  test(`${name}: bad fds and batches`, (t) => {
    const io = make();
    const [a] = pair(t, io);
    const b = newBatch(2, 64);
    t.throws(() => io.udpRecv(1_000_000, b), { code: 'EBADF' });
    t.throws(() => io.udpSend(1_000_000, b, 1), { code: 'EBADF' });
    t.is(io.udpSend(1_000_000, b, 0), 0, 'nothing to send: no system call, no error');
    t.throws(() => io.close(1_000_000), { code: 'EBADF' });
    t.is(io.udpRecvErrors(1_000_000, b, new Uint32Array(2)), 0, 'a failing error-queue read reads nothing');
    t.throws(() => io.udpSend(a.fd, b, 3), { instanceOf: RangeError });
    b.off[0] = 100;
    b.len[0] = 100;
    t.throws(() => io.udpSend(a.fd, b, 1), { instanceOf: RangeError }, 'entry outside data');
    t.is(io.ifIndex('lo'), 1);
    t.is(io.ifIndex('s4-no-such-if'), 0);
  });

  test(`${name}: poll: level-triggered, silent while stopped, one per fd, closed for good`, async (t) => {
    const io = make();
    const [a, r] = pair(t, io);
    const tx = newBatch(1, 64);
    fill(tx, 0, 0, Buffer.from('x'), LOOP, r.port);
    const rx = newBatch(4, 64);
    let calls = 0;
    let wake: () => void = () => {};
    const h = io.poll(r.fd, () => {
      calls++;
      wake();
    });
    t.throws(() => io.poll(r.fd, () => {}), { code: 'EEXIST' });
    h.stop();
    io.udpSend(a.fd, tx, 1);
    await new Promise((res) => setTimeout(res, 50));
    t.is(calls, 0, 'no callback while stopped');
    h.start();
    // A callback that does not read is called again: the datagram is still waiting.
    await withTimeout(
      new Promise<void>(
        (res) =>
          (wake = () => {
            if (calls >= 2) res();
          }),
      ),
      30_000,
      'two callbacks',
    );
    wake = () => {};
    const got = io.udpRecv(r.fd, rx);
    t.is(got, 1);
    h.close();
    h.close();
    t.throws(() => h.start(), { code: 'ERR_POLL_CLOSED' });
    io.poll(r.fd, () => {}).close();
  });
}
