/**
 * Runs TUN scenarios for test/io/native.test.ts inside a throw-away network
 * namespace: `ip netns exec NS node dist/test/io/tun-helper.js`.
 * Asserts with node:assert (non-zero exit + message on failure) and prints
 * one JSON line of observations on success.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';

import { native, newBatch, type Batch } from '../../agent/io/native.js';
import { parseIPv6 } from '../../lib/ip.js';
import { udp6 } from '../helpers/packets.js';

const LOCAL = '2001:db8:77::1';
const REMOTE = '2001:db8:77::2';

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'inherit'] });
}

function ip6Bytes(a: string): Buffer {
  return Buffer.from(parseIPv6(a));
}

/** IPv6 + UDP packet with a correct UDP checksum. */
function udp6Packet(src: string, dst: string, sport: number, dport: number, payload: Buffer): Buffer {
  return udp6(ip6Bytes(src), ip6Bytes(dst), sport, dport, payload);
}

/** Waits (poll + tunRead) for a packet accepted by `match`; returns its bytes and reported length. */
async function readUntil(
  fd: number,
  b: Batch,
  match: (p: Buffer, len: number) => boolean,
): Promise<{ pkt: Buffer; len: number }> {
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      h.close();
      reject(new Error('timed out waiting for a packet on the tun'));
    }, 3000);
    const h = native.poll(fd, () => {
      const n = native.tunRead(fd, b);
      if (process.env.S4_DEBUG)
        for (let i = 0; i < n; i++)
          console.error('tun pkt', b.len[i], b.data.subarray(b.off[i]!, b.off[i]! + 48).toString('hex'));
      for (let i = 0; i < n; i++) {
        const len = b.len[i]!;
        const pkt = Buffer.from(b.data.subarray(b.off[i]!, b.off[i]! + Math.min(len, b.slot)));
        if (match(pkt, len)) {
          clearTimeout(timer);
          h.close();
          resolve({ pkt, len });
          return;
        }
      }
    });
  });
}

function isUdpTo(p: Buffer, dst: Buffer, dport: number): boolean {
  return (
    p.length >= 48 && p[0]! >> 4 === 6 && p[6] === 17 && p.subarray(24, 40).equals(dst) && p.readUInt16BE(42) === dport
  );
}

async function main(): Promise<void> {
  const seen: Record<string, unknown> = {};
  const b = newBatch(16, 1500);

  // --- single-queue tun: open, address, read, write -------------------
  const t = native.tunOpen('s4t0', false);
  assert.equal(t.name, 's4t0');
  assert.ok(native.ifIndex('s4t0') > 0, 'ifIndex of the new tun');
  ip('link', 'set', 's4t0', 'up', 'mtu', '3000');
  ip('-6', 'addr', 'add', `${LOCAL}/64`, 'dev', 's4t0', 'nodad');

  // Kernel -> tun: a UDP datagram routed to the tun's prefix.
  const tx = dgram.createSocket('udp6');
  tx.bind(0, LOCAL);
  await once(tx, 'listening');
  const remote = ip6Bytes(REMOTE);
  const readP = readUntil(t.fd, b, (p) => isUdpTo(p, remote, 9999));
  tx.send(Buffer.from('probe-from-kernel'), 9999, REMOTE);
  const { pkt: got, len: gotLen } = await readP;
  assert.equal(got[0]! >> 4, 6, 'IPv6 version nibble');
  assert.ok(got.subarray(8, 24).equals(ip6Bytes(LOCAL)), 'source address');
  assert.equal(gotLen, got.length);
  assert.equal(got.subarray(48).toString(), 'probe-from-kernel');
  seen.readLen = gotLen;

  // Oversize: a 2500-byte packet (MTU 3000) read into a 1500-byte slot is
  // reported with its true length.
  const bigP = readUntil(t.fd, b, (p, len) => len > 1500 && isUdpTo(p, remote, 9998));
  tx.send(Buffer.alloc(2500 - 48, 0x5a), 9998, REMOTE);
  const big = await bigP;
  assert.equal(big.len, 2500, 'oversize packet reports its real length');
  seen.oversizeLen = big.len;

  // tun -> kernel: one malformed packet (dropped, still counted) and one
  // valid IPv6/UDP packet delivered to a socket inside the namespace.
  const rx = dgram.createSocket('udp6');
  rx.bind(0, LOCAL);
  await once(rx, 'listening');
  const rxPort = rx.address().port;
  const payload = Buffer.from('hello-from-tun');
  const good = udp6Packet(REMOTE, LOCAL, 4242, rxPort, payload);
  b.data.fill(0, 0, 8);
  b.off[0] = 0;
  b.len[0] = 8; // version nibble 0: the kernel answers EINVAL
  good.copy(b.data, 1500);
  b.off[1] = 1500;
  b.len[1] = good.length;
  const msgP = once(rx, 'message') as Promise<[Buffer, dgram.RemoteInfo]>;
  assert.equal(native.tunWrite(t.fd, b, 2), 2, 'tunWrite consumes both packets');
  const [msg, rinfo] = await Promise.race([
    msgP,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error('written packet not delivered')), 3000)),
  ]);
  assert.ok(msg.equals(payload));
  assert.equal(rinfo.address, REMOTE);
  assert.equal(rinfo.port, 4242);
  seen.delivered = msg.toString();
  tx.close();
  rx.close();

  native.close(t.fd);
  assert.equal(native.ifIndex('s4t0'), 0, 'tun gone after close');

  // --- kernel-chosen name ----------------------------------------------
  const anon = native.tunOpen('', false);
  assert.match(anon.name, /^tun\d+$/);
  assert.ok(native.ifIndex(anon.name) > 0);
  native.close(anon.fd);
  assert.equal(native.ifIndex(anon.name), 0);
  seen.anonName = anon.name;

  // --- multi-queue -------------------------------------------------------
  const q0 = native.tunOpen('s4mq0', true);
  const q1 = native.tunOpen('s4mq0', true);
  assert.equal(q0.name, 's4mq0');
  assert.equal(q1.name, 's4mq0');
  assert.notEqual(q0.fd, q1.fd);
  // A single-queue open of a multi-queue device is refused by the kernel.
  assert.throws(() => native.tunOpen('s4mq0', false), { code: 'EINVAL' });
  native.close(q0.fd);
  assert.ok(native.ifIndex('s4mq0') > 0, 'device stays while one queue is open');
  native.close(q1.fd);
  assert.equal(native.ifIndex('s4mq0'), 0, 'device gone after the last queue');
  seen.multiQueue = true;

  // --- errors ------------------------------------------------------------
  // Deleting the interface under an open fd: reads fail with EBADFD.
  const gone = native.tunOpen('s4del0', false);
  ip('link', 'del', 's4del0');
  assert.throws(() => native.tunRead(gone.fd, b), { code: 'EBADFD', syscall: 'read' });
  native.close(gone.fd);
  assert.throws(() => native.tunOpen('x'.repeat(16), false), RangeError);
  assert.throws(() => native.tunRead(1_000_000, b), { code: 'EBADF' });

  process.stdout.write(JSON.stringify(seen) + '\n');
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
