// UDP_GRO on a real socket: run by udp-gro.test.ts as root inside a network namespace it made
// (`ip netns exec NS node udp-gro-real.js`). Sends the same bursts (UDP_SEGMENT sends, which the kernel queues whole
// on a socket with UDP_GRO, as GRO would have merged them) and single datagrams to two sockets on lo, one with
// UDP_GRO, read with udpRecv's gro in small batches, one without, read plainly. Prints one JSON object: what each
// received, entry by entry (length, its bytes' sha256, source), and the gro counters.
import { createHash } from 'node:crypto';
import { runCommand } from '../../agent/host/command.js';
import { systemTool } from '../../agent/host/tools.js';
import { native } from '../../agent/io/native.js';
import { newBatch, newUdpGro, newUdpGso, UDP_GRO_DATAGRAMS, UDP_GRO_MERGED, type Batch } from '../../agent/io/batch.js';
import { parseIPv4 } from '../../lib/ip.js';

const LO = '127.0.0.1';

interface Entry {
  len: number;
  hex: string;
  from: string;
}

function entries(b: Batch, n: number, out: Entry[]): void {
  for (let i = 0; i < n; i++) {
    const len = b.len[i]!;
    out.push({
      len,
      hex: createHash('sha256')
        .update(b.data.subarray(b.off[i]!, b.off[i]! + Math.min(len, b.slot)))
        .digest('hex'),
      from: `${b.addr[i]}:${b.port[i]}`,
    });
  }
}

async function main(): Promise<void> {
  await runCommand([systemTool('ip'), 'link', 'set', 'lo', 'up']);
  const withGro = native.udpOpen(LO, 0, false);
  const without = native.udpOpen(LO, 0, false);
  const sender = native.udpOpen(LO, 0, false);
  const set = native.udpGro!(withGro.fd, true);
  const plainHas = native.udpGro!(without.fd);
  // What is sent, to each of the two: bursts of equal sizes with a shorter tail, of one, and more than a batch holds.
  const sizes = [
    ...Array<number>(10).fill(1000),
    300,
    77,
    ...Array<number>(40).fill(1200),
    ...Array<number>(3).fill(500),
    20,
    ...Array<number>(5).fill(1300), // longer than a slot: its real length, its start
  ];
  const send = newBatch(64, 1400);
  const gso = newUdpGso(native.udpGso(sender.fd));
  for (const to of [withGro.port, without.port]) {
    let k = 0;
    for (let i = 0; i < sizes.length; i++) {
      const n = sizes[i]!;
      send.off[k] = k * 1400;
      send.len[k] = n;
      send.addr[k] = parseIPv4(LO);
      send.port[k] = to;
      for (let j = 0; j < n; j++) send.data[k * 1400 + j] = (i * 31 + j * 7) & 255;
      k++;
      if (k === 64 || i === sizes.length - 1) {
        const sent = native.udpSend(sender.fd, send, k, gso);
        if (sent !== k) throw new Error(`sent ${sent} of ${k}`);
        k = 0;
      }
    }
  }
  const got: Entry[] = [],
    plain: Entry[] = [];
  // Small batches: a merged buffer's datagrams are handed out over several calls.
  const b = newBatch(4, 1281);
  const gro = newUdpGro();
  for (let i = 0; i < 1000 && got.length < sizes.length; i++) entries(b, native.udpRecv(withGro.fd, b, gro), got);
  const p = newBatch(64, 1281);
  for (let i = 0; i < 1000 && plain.length < sizes.length; i++) entries(p, native.udpRecv(without.fd, p), plain);
  process.stdout.write(
    JSON.stringify({
      set,
      plainHas,
      gsoSends: gso[1],
      merged: gro.state[UDP_GRO_MERGED],
      datagrams: gro.state[UDP_GRO_DATAGRAMS],
      sent: sizes.length,
      got,
      plain,
    }) + '\n',
  );
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
