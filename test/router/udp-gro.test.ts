// UDP_GRO on the router's sockets (agent/native/udp.c udpRecvGro): a buffer the kernel merged is cut into exactly
// the datagrams a socket without it receives, one entry each, in order, with their source, across small batches.
// Run on real sockets in a namespace (udp-gro-real.ts); UDP_SEGMENT sends make the merged buffers deterministic (the
// kernel queues them whole on a socket with UDP_GRO, as GRO does with datagrams that come in together).
import test from 'ava';
import { fileURLToPath } from 'node:url';
import { Netns, uniqueName } from '../../lab/netns.js';
import { skipReason, title } from '../helpers/fixtures.js';

const REAL = fileURLToPath(new URL('./udp-gro-real.js', import.meta.url));
const run = skipReason ? test.skip : test;

interface Entry {
  len: number;
  hex: string;
  from: string;
}
interface Outcome {
  set: boolean;
  plainHas: boolean;
  gsoSends: number;
  merged: number;
  datagrams: number;
  sent: number;
  got: Entry[];
  plain: Entry[];
}

run(title('merged buffers cut into the datagrams a socket without UDP_GRO gets, one entry each'), async (t) => {
  const ns = await Netns.create(uniqueName('gro'));
  let o: Outcome;
  try {
    o = JSON.parse(await ns.run([process.execPath, REAL], { timeoutMs: 60_000 })) as Outcome;
  } finally {
    await ns.destroy();
  }
  t.true(o.set, 'the socket has UDP_GRO');
  t.false(o.plainHas, 'the other has not');
  t.true(o.gsoSends > 0, 'bursts went as UDP_SEGMENT sends');
  t.is(o.plain.length, o.sent, 'the socket without UDP_GRO got every datagram');
  t.log(`${o.merged} buffers merged, ${o.datagrams} datagrams from them, of ${o.sent}`);
  t.true(o.merged > 0, `buffers came merged: ${o.merged}`);
  t.true(o.datagrams >= 2 * o.merged, `each of several datagrams: ${o.datagrams}`);
  t.is(o.got.length, o.plain.length);
  t.deepEqual(
    o.got.map((e) => [e.len, e.hex]),
    o.plain.map((e) => [e.len, e.hex]),
    'the same datagrams, in order, byte for byte',
  );
  t.is(new Set(o.got.map((e) => e.from)).size, 1, 'all from the sender');
  t.is(new Set(o.plain.map((e) => e.from)).size, 1);
  t.is(o.got[0]!.from, o.plain[0]!.from, 'the same source');
});
