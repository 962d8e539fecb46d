/**
 * Native I/O addon against the real kernel (no mocks): UDP batches on
 * loopback, uv_poll (also in worker_threads), and TUN devices inside
 * throw-away network namespaces (root only).
 */
import { execFileSync, spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';

import test from 'ava';

import { MAX_BATCH, native, newBatch, type Batch } from '../../agent/io/native.js';
import { fill, receive, withTimeout } from '../helpers/io.js';

const here = dirname(fileURLToPath(import.meta.url));
const nativeJs = join(here, '..', '..', 'agent', 'io', 'native.js');
const tunHelper = join(here, 'tun-helper.js');
const isRoot = process.getuid?.() === 0;
const LOOP = 0x7f000001; // 127.0.0.1

let nsCounter = 0;
function nsName(): string {
  return `s4n-${process.pid}-${nsCounter++}`;
}

test('newBatch allocates zeroed arrays and validates its bounds', (t) => {
  const b = newBatch(8, 1500);
  t.is(b.cap, 8);
  t.is(b.slot, 1500);
  t.is(b.data.length, 8 * 1500);
  t.true(b.data.every((x) => x === 0));
  t.is(b.off.length, 8);
  t.is(b.len.length, 8);
  t.is(b.addr.length, 8);
  t.is(b.port.length, 8);
  t.is(newBatch(MAX_BATCH, 64).cap, MAX_BATCH);
  t.throws(() => newBatch(MAX_BATCH + 1, 1500), { instanceOf: RangeError });
  t.throws(() => newBatch(0, 1500), { instanceOf: RangeError });
  t.throws(() => newBatch(4, 0), { instanceOf: RangeError });
});

test('udpSend/udpRecv move a 64-datagram batch over loopback, with source addr/port', async (t) => {
  const a = native.udpOpen('127.0.0.1', 0, false);
  const r = native.udpOpen('127.0.0.1', 0, false);
  t.teardown(() => {
    native.close(a.fd);
    native.close(r.fd);
  });
  t.true(a.port > 0 && r.port > 0 && a.port !== r.port);

  const tx = newBatch(64, 2048);
  const payloads: Buffer[] = [];
  for (let i = 0; i < 64; i++) {
    const size = i === 0 ? 0 : ((i * 37) % 1500) + 1; // includes an empty datagram
    const p = Buffer.alloc(size);
    for (let j = 0; j < size; j++) p[j] = (i + j * 7) & 0xff;
    if (size >= 2) p.writeUInt16BE(i, 0);
    payloads.push(p);
    fill(tx, i, i * 2048, p, LOOP, r.port);
  }
  const rx = newBatch(32, 1500); // smaller than the burst: needs several recvmmsg calls
  const recvP = receive(r.fd, rx, 64);
  t.is(native.udpSend(a.fd, tx, 64), 64);
  const got = await recvP;

  t.is(got.length, 64);
  // Loopback UDP keeps order on one socket pair.
  got.forEach((g, i) => {
    t.is(g.len, payloads[i]!.length, `length of datagram ${i}`);
    t.true(g.data.equals(payloads[i]!), `content of datagram ${i}`);
    t.is(g.addr, LOOP);
    t.is(g.port, a.port);
  });
});

test('udpRecv reports an oversize datagram with its real length', async (t) => {
  const a = native.udpOpen('127.0.0.1', 0, false);
  const r = native.udpOpen('127.0.0.1', 0, false);
  t.teardown(() => {
    native.close(a.fd);
    native.close(r.fd);
  });
  const tx = newBatch(2, 4096);
  fill(tx, 0, 0, Buffer.alloc(3000, 0xab), LOOP, r.port);
  fill(tx, 1, 4096, Buffer.from('after'), LOOP, r.port);
  const rx = newBatch(4, 1500);
  const recvP = receive(r.fd, rx, 2);
  t.is(native.udpSend(a.fd, tx, 2), 2);
  const [big, small] = await recvP;
  t.is(big!.len, 3000);
  t.is(big!.data.length, 1500);
  t.true(big!.data.every((x) => x === 0xab));
  t.is(small!.len, 5);
  t.is(small!.data.toString(), 'after');
});

test('udpRecv returns 0 when nothing is waiting', (t) => {
  const r = native.udpOpen('127.0.0.1', 0, false);
  t.teardown(() => native.close(r.fd));
  t.is(native.udpRecv(r.fd, newBatch(4, 1500)), 0);
});

test('udpSend drops a datagram the kernel refuses but still counts it', async (t) => {
  const a = native.udpOpen('127.0.0.1', 0, false);
  const r = native.udpOpen('127.0.0.1', 0, false);
  t.teardown(() => {
    native.close(a.fd);
    native.close(r.fd);
  });
  const tx = newBatch(4, 64);
  fill(tx, 0, 0, Buffer.from('one'), LOOP, r.port);
  fill(tx, 1, 64, Buffer.from('bcast'), 0xffffffff, r.port); // no SO_BROADCAST: EACCES
  fill(tx, 2, 128, Buffer.from('two'), LOOP, r.port);
  fill(tx, 3, 192, Buffer.from('zero-port'), LOOP, 0); // port 0: EINVAL
  const recvP = receive(r.fd, newBatch(4, 1500), 2);
  t.is(native.udpSend(a.fd, tx, 4), 4);
  const got = await recvP;
  t.deepEqual(
    got.map((g) => g.data.toString()),
    ['one', 'two'],
  );
  t.is(tx.refused[0], 2, 'the two refused datagrams are reported, so the router can count them as tx_dropped');
});

test('an ICMP error about an earlier datagram does not cost the next one (the kernel reports it on the next send)', async (t) => {
  const a = native.udpOpen('127.0.0.1', 0, false);
  const r = native.udpOpen('127.0.0.1', 0, false);
  const gone = native.udpOpen('127.0.0.1', 0, false);
  native.close(gone.fd); // its port is now closed: what goes there earns a port unreachable
  t.teardown(() => {
    native.close(a.fd);
    native.close(r.fd);
  });
  // The poll wakes up once the error is pending on a (POLLERR); nothing reads it.
  let pending!: () => void;
  const errored = new Promise<void>((resolve) => {
    pending = resolve;
  });
  const watch = native.poll(a.fd, () => pending());
  const probe = newBatch(1, 64);
  fill(probe, 0, 0, Buffer.from('to nobody'), LOOP, gone.port);
  t.is(native.udpSend(a.fd, probe, 1), 1);
  await withTimeout(errored, 5000, 'the port unreachable');
  watch.close();
  const tx = newBatch(1, 64);
  fill(tx, 0, 0, Buffer.from('after'), LOOP, r.port);
  const recvP = receive(r.fd, newBatch(2, 1500), 1);
  t.is(native.udpSend(a.fd, tx, 1), 1);
  t.is((await recvP)[0]!.data.toString(), 'after');
  t.is(tx.refused[0], 0, 'sent for real, not dropped as refused');
});

test('udpOpen errors carry the errno name in .code', (t) => {
  const a = native.udpOpen('127.0.0.1', 0, false);
  t.teardown(() => native.close(a.fd));
  const inUse = t.throws(() => native.udpOpen('127.0.0.1', a.port, false));
  t.is((inUse as NodeJS.ErrnoException).code, 'EADDRINUSE');
  t.is((inUse as NodeJS.ErrnoException).syscall, 'bind');
  const notHere = t.throws(() => native.udpOpen('203.0.113.77', 0, false));
  t.is((notHere as NodeJS.ErrnoException).code, 'EADDRNOTAVAIL');
});

test('udpTtl takes 1..255 or -1 (the default again), refuses the rest, and the socket still sends', async (t) => {
  const a = native.udpOpen('127.0.0.1', 0, false);
  const r = native.udpOpen('127.0.0.1', 0, false);
  t.teardown(() => {
    native.close(a.fd);
    native.close(r.fd);
  });
  for (const bad of [0, 256, -2]) t.throws(() => native.udpTtl(a.fd, bad), { instanceOf: TypeError }, String(bad));
  t.throws(() => native.udpTtl(-1, 2), { instanceOf: TypeError });
  native.udpTtl(a.fd, 2);
  native.udpTtl(a.fd, -1);
  const tx = newBatch(1, 64);
  fill(tx, 0, 0, Buffer.from('after'), LOOP, r.port);
  t.is(native.udpSend(a.fd, tx, 1), 1);
  const got = await receive(r.fd, newBatch(1, 64), 1);
  t.is(got.length, 1);
});

test('udpOpen with reusePort lets two sockets share a port', (t) => {
  const a = native.udpOpen('127.0.0.1', 0, true);
  t.teardown(() => native.close(a.fd));
  const b = native.udpOpen('127.0.0.1', a.port, true);
  t.teardown(() => native.close(b.fd));
  t.is(b.port, a.port);
});

test('arguments are validated', (t) => {
  const a = native.udpOpen('127.0.0.1', 0, false);
  t.teardown(() => native.close(a.fd));
  const b = newBatch(2, 64);
  t.throws(() => native.udpOpen('not-an-ip', 0, false), { instanceOf: TypeError });
  t.throws(() => native.udpOpen('127.0.0.1', 70000, false), { instanceOf: RangeError });
  t.throws(() => native.udpOpen(1 as unknown as string, 0, false), { instanceOf: TypeError });
  t.throws(() => native.udpSend(a.fd, b, 3), { instanceOf: RangeError });
  b.off[0] = 100;
  b.len[0] = 100;
  t.throws(() => native.udpSend(a.fd, b, 1), { instanceOf: RangeError }, 'entry outside data');
  const bogus = { ...b, port: new Uint32Array(2) } as unknown as Batch;
  t.throws(() => native.udpRecv(a.fd, bogus), { instanceOf: TypeError });
  t.throws(() => native.poll(a.fd, 'nope' as unknown as () => void), { instanceOf: TypeError });
  t.throws(() => native.udpRecv(1_000_000, newBatch(2, 64)), { code: 'EBADF' });
  t.throws(() => native.close(1_000_000), { code: 'EBADF' });
  t.is(native.ifIndex('lo'), 1);
  t.is(native.ifIndex('s4-no-such-if'), 0);
  t.is(native.ifIndex('x'.repeat(40)), 0);
});

test('poll handles stop, restart and close idempotently', async (t) => {
  const a = native.udpOpen('127.0.0.1', 0, false);
  const r = native.udpOpen('127.0.0.1', 0, false);
  t.teardown(() => {
    native.close(a.fd);
    native.close(r.fd);
  });
  const rx = newBatch(4, 64);
  const tx = newBatch(1, 64);
  fill(tx, 0, 0, Buffer.from('x'), LOOP, r.port);
  let calls = 0;
  let wake: () => void = () => {};
  const h = native.poll(r.fd, () => {
    calls += native.udpRecv(r.fd, rx);
    wake();
  });
  h.stop();
  native.udpSend(a.fd, tx, 1);
  await new Promise((res) => setTimeout(res, 50));
  t.is(calls, 0, 'no callback while stopped');
  h.start();
  h.start();
  await withTimeout(new Promise<void>((res) => (wake = res)), 30_000, 'callback after start');
  t.is(calls, 1);
  h.close();
  h.close();
  t.throws(() => h.start(), { code: 'ERR_POLL_CLOSED' });
  h.stop(); // harmless after close
  // A second watcher on the same fd is fine once the first is closed.
  native.poll(r.fd, () => {}).close();
});

test('poll works inside worker_threads, and a worker can exit with a poll open', async (t) => {
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    import(workerData.url).then(({ native, newBatch }) => {
      const a = native.udpOpen('127.0.0.1', 0, false);
      const r = native.udpOpen('127.0.0.1', 0, false);
      const tx = newBatch(8, 64);
      for (let i = 0; i < 8; i++) {
        tx.data.writeUInt32BE(i, i * 64); tx.off[i] = i * 64; tx.len[i] = 4;
        tx.addr[i] = 0x7f000001; tx.port[i] = r.port;
      }
      const rx = newBatch(8, 64);
      let got = 0;
      const h = native.poll(r.fd, () => {
        got += native.udpRecv(r.fd, rx);
        if (got < 8) return;
        h.close(); native.close(a.fd); native.close(r.fd);
        // Leave one poll open on purpose: teardown must close it cleanly.
        const s = native.udpOpen('127.0.0.1', 0, false);
        native.poll(s.fd, () => {});
        parentPort.postMessage(got);
        if (workerData.exit) process.exit(0);
      });
      native.udpSend(a.fd, tx, 8);
    });
  `;
  const run = async (exit: boolean, terminate: boolean): Promise<number> => {
    const w = new Worker(code, { eval: true, workerData: { url: pathToFileURL(nativeJs).href, exit } });
    // Listen for 'exit' from the start: a worker that exits right after posting has its last messages delivered and
    // 'exit' emitted in one go (Node drains the port on exit), before code awaiting the message could add a listener.
    const exited = new Promise<number>((res) => w.once('exit', res));
    const got = await withTimeout(
      new Promise<number>((res, rej) => {
        w.once('message', res);
        w.once('error', rej);
      }),
      // a hang detector, not a speed bound: a worker's start and import can take seconds on a loaded machine
      60_000,
      'worker round trip',
    );
    if (terminate) await w.terminate();
    await withTimeout(exited, 30000, 'worker exit');
    return got;
  };
  const results = await Promise.all([run(true, false), run(false, true), run(false, true)]);
  t.deepEqual(results, [8, 8, 8]);
});

function sh(cmd: string, ...args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function runNode(
  args: string[],
  opts: { uid?: number; gid?: number; ns?: string } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const [cmd, argv] = opts.ns
    ? ['ip', ['netns', 'exec', opts.ns, process.execPath, ...args]]
    : [process.execPath, args];
  return new Promise((resolve, reject) => {
    const c = spawn(cmd as string, argv as string[], {
      stdio: ['ignore', 'pipe', 'pipe'],
      uid: opts.uid,
      gid: opts.gid,
    });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => c.kill('SIGKILL'), 8000);
    c.on('error', reject);
    c.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

(isRoot ? test : test.skip)(
  'tun in a fresh netns: read, write, oversize, kernel-chosen name, multi-queue, removal on close (needs root)',
  async (t) => {
    const ns = nsName();
    sh('ip', 'netns', 'add', ns);
    t.teardown(() => {
      try {
        sh('ip', 'netns', 'del', ns);
      } catch {
        // already gone
      }
    });
    const res = await runNode([tunHelper], { ns });
    t.is(res.code, 0, `tun-helper failed:\n${res.stderr}`);
    const seen = JSON.parse(res.stdout.trim()) as Record<string, unknown>;
    t.log(seen);
    t.is(seen.oversizeLen, 2500);
    t.is(seen.delivered, 'hello-from-tun');
    t.is(seen.multiQueue, true);
  },
);

const tunDenied = async (t: import('ava').ExecutionContext): Promise<void> => {
  // /dev/net/tun is often mode 0600 (open: EACCES); where it is 0666,
  // creating the interface is what is refused (TUNSETIFF: EPERM).
  let code: string | undefined;
  if (isRoot) {
    const res = await runNode(
      [
        '--input-type=module',
        '-e',
        `
        const { native } = await import(${JSON.stringify(pathToFileURL(nativeJs).href)});
        try { const t = native.tunOpen('s4denied0', false); native.close(t.fd); console.log('OPENED'); }
        catch (e) { console.log(e.code); }`,
      ],
      { uid: 65534, gid: 65534 },
    );
    t.is(res.code, 0, res.stderr);
    code = res.stdout.trim();
  } else {
    try {
      native.tunOpen('s4denied0', false);
    } catch (e) {
      code = (e as NodeJS.ErrnoException).code;
    }
  }
  t.true(code === 'EPERM' || code === 'EACCES', `code was ${code}`);
};
test(
  isRoot
    ? 'tunOpen without privileges fails with EPERM/EACCES (run as uid 65534)'
    : 'tunOpen without privileges fails with EPERM/EACCES',
  tunDenied,
);
