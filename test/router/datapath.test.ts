// The router's data path (Engine + Datapath, its I/O loop) on two backends
// with the same assertions (datapath-scenarios.ts): the in-memory FakeIO,
// which needs no root, and real UDP sockets with the router's real TUN and
// route, as root in a network namespace this test makes. The fake is held to
// the real thing here and in test/io/fake.test.ts; a few cases that only the
// fake can set up (a full send buffer, a TUN that is down) follow.
import { fileURLToPath } from 'node:url';

import test from 'ava';

import type { FakeIO } from '../../agent/io/fake.js';
import { Netns, uniqueName } from '../../lab/netns.js';
import { parseIPv6 } from '../../lib/ip.js';
import { skipReason, title } from '../helpers/fixtures.js';
import { udp6 } from '../helpers/packets.js';
import { fakeRig, NET, until, type Rig } from './datapath-rig.js';
import { SCENARIOS, type Scenario } from './datapath-scenarios.js';

const REAL = fileURLToPath(new URL('./datapath-real.js', import.meta.url));

type Outcome = { ok: unknown } | { error: string };

/**
 * Every scenario on the real backend, in one child in one namespace (made once, for all the tests below); with
 * offload, the tunnel opened with the TUN offload, as the router opens it (reads cut in the addon, writes with the
 * virtio_net_hdr, sends with UDP_SEGMENT).
 */
const realRuns = new Map<boolean, Promise<Record<string, Outcome>>>();
function realOutcomes(offload: boolean): Promise<Record<string, Outcome>> {
  let run = realRuns.get(offload);
  if (!run) {
    run = (async () => {
      const ns = await Netns.create(uniqueName('dp'));
      try {
        const args = [process.execPath, REAL, ...(offload ? ['--offload'] : [])];
        return JSON.parse(await ns.run(args, { timeoutMs: 120_000 })) as Record<string, Outcome>;
      } finally {
        await ns.destroy();
      }
    })();
    realRuns.set(offload, run);
  }
  return run;
}

async function onFake<O>(drive: (rig: Rig) => Promise<O>): Promise<O> {
  const rig = await fakeRig();
  try {
    return await drive(rig);
  } finally {
    await rig.close();
  }
}

interface Backend {
  name: string;
  skip: string | null;
  observe(s: Scenario): Promise<unknown>;
}

const BACKENDS: Backend[] = [
  { name: 'fake', skip: null, observe: (s) => onFake((rig) => s.drive(rig)) },
  ...[false, true].map((offload) => ({
    name: offload ? 'real, TUN offload' : 'real',
    skip: skipReason,
    async observe(s: Scenario) {
      const r = (await realOutcomes(offload))[s.name];
      if (!r) throw new Error(`the real run reported nothing for ${s.name}`);
      if ('error' in r) throw new Error(`on the real backend: ${r.error}`);
      return r.ok;
    },
  })),
];

for (const b of BACKENDS) {
  for (const s of SCENARIOS) {
    const name = `${b.name}: ${s.title}`;
    (b.skip ? test.skip : test)(b.skip ? title(name) : name, async (t) => s.check(t, await b.observe(s)));
  }
}

const io = (rig: Rig) => rig.io as FakeIO;

test('fake only: a full send buffer (EAGAIN) stops the relay batch, and the unsent rest counts as tx_dropped', async (t) => {
  const o = await onFake(async (rig) => {
    for (const fd of rig.routerFds) io(rig).udpSocket(fd).sendBudget = 1;
    const a = rig.peer(NET.A),
      b = rig.peer(NET.B);
    const relay = (n: number) => udp6(a.address, b.address, 5000, 5001, Buffer.from(`relay ${n}`));
    a.send(relay(1), relay(2), relay(3));
    const first = await b.next();
    await until(() => rig.engine.counters.drops.tx_dropped >= 2, 'tx_dropped counted');
    return { first: first.bytes.subarray(48).toString(), more: b.pending().length, counters: rig.engine.snapshot() };
  });
  t.is(o.first, 'relay 1');
  t.is(o.more, 0, 'what did not fit the send buffer is not sent later');
  t.is(o.counters.relayPackets, 3);
  t.is(o.counters.drops.tx_dropped, 2);
});

test('fake only: a tunnel that is down refuses the write (EIO), counted as tx_dropped', async (t) => {
  const o = await onFake(async (rig) => {
    io(rig).tun(NET.tun)!.up = false;
    const a = rig.peer(NET.A);
    a.send(udp6(a.address, parseIPv6(NET.isp), 4242, NET.ispPort, Buffer.from('into a down tunnel')));
    await until(() => rig.engine.counters.drops.tx_dropped >= 1, 'tx_dropped counted');
    return { counters: rig.engine.snapshot(), written: io(rig).tun(NET.tun)!.written.length };
  });
  t.is(o.counters.udpToTunPackets, 1);
  t.is(o.counters.drops.tx_dropped, 1);
  t.is(o.written, 0);
});
