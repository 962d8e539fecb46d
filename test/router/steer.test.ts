// The kernel's choice of socket (steer.ts, attached with SO_ATTACH_REUSEPORT_CBPF) on real sockets in a namespace
// of the test's own: datagrams the router would forward for the peer that sent them (the originator check passes,
// sane length and hop limit, not multicast, not ND) reach the checked socket; everything else spreads over the
// other sockets by source port, and never the checked one.
import test from 'ava';
import { fileURLToPath } from 'node:url';
import { Netns, uniqueName } from '../../lab/netns.js';
import { isRoot } from '../../lab/topology.js';
import { steerProgram } from '../../agent/router/steer.js';

const skip = isRoot() ? null : 'needs root for a network namespace';
const SCRIPT = fileURLToPath(new URL('./steer-probe.js', import.meta.url));

test('without a second socket a worker has nothing to steer', (t) => {
  t.is(steerProgram(new Uint8Array(8), 1, 1), null);
  t.is(steerProgram(new Uint8Array(8), 2, 4)!.length % 8, 0);
});

(skip ? test.skip : test)(
  `checked peers' datagrams reach the first socket, junk the others${skip ? ` (skipped: ${skip})` : ''}`,
  async (t) => {
    const ns = await Netns.create(uniqueName('steer'));
    t.teardown(() => ns.destroy());
    await ns.ip(['link', 'set', 'lo', 'up']);
    const r = JSON.parse(await ns.run([process.execPath, SCRIPT])) as Record<string, number[]>;
    t.log(JSON.stringify(r));
    // One datagram of each kind, from sources whose ports spread them; per kind, the count each socket got.
    t.is(r.valid![0]! + r.valid![1]!, 4, 'from their own 6bed4 address: the checked sockets (the first half)');
    for (const kind of ['otherPort', 'hopLimit1', 'lengthLie', 'multicast', 'nd', 'short', 'notIPv6']) {
      t.is(r[kind]![0]! + r[kind]![1]!, 0, `${kind}: never a checked socket`);
      t.is(
        r[kind]!.reduce((a, b) => a + b, 0),
        4,
        `${kind}: all received`,
      );
    }
    t.true(
      r.valid!.filter((n) => n > 0).length > 1 && r.otherPort!.filter((n) => n > 0).length > 1,
      'sources spread within each half',
    );
  },
);
