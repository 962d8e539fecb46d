// Upstream OnLink: the provider treats the /64 as on-link and keeps a neighbour entry per peer address. The active
// member's neighbour proxy answers for the peers on the group's macvlan, so those entries hold the virtual MAC,
// which moves with the group: after a crash of the active member (kill -9) the standby takes over and the
// provider's entries for the peers stay valid (the same MAC) without a new solicitation. Two member nodes as
// agents against a real API server (group.ts), every member's router with its in-kernel fast path (Required), which a
// standby loads and attaches before it holds the address.
import test from 'ava';
import { controlPlaneSkipReason } from '../k8s/controlplane.js';
import { ping6, startPeerIn } from '../../lab/sixbed4.js';
import { skipReason } from '../helpers/fixtures.js';
import { safely } from '../helpers/cluster.js';
import { eventually } from '../helpers/wait.js';
import { SEG } from './segment.js';
import { Group, NODES } from './group.js';

const why = skipReason ?? controlPlaneSkipReason();
const serial = why ? test.serial.skip : test.serial;
const title = (s: string) => (why ? `${s} (skipped: ${why})` : s);

let g: Group;

test.before(async () => {
  if (why) return;
  g = await Group.start('fol', 'OnLink', { fastPath: true });
});

test.after.always(async () => {
  await safely(() => g?.stop());
});

serial(
  title(
    "on-link /64, fast path on: the provider's entry for a peer holds the virtual MAC, which stays right across a crash",
  ),
  async (t) => {
    await g.startAgent(0);
    await eventually('n1 active', async () => (await g.holder()) === 'n1', 20_000, 100);
    await g.startAgent(1);
    await g.role(1, 'Standby');
    t.deepEqual(await g.macvlanAddresses(0), [SEG.floating], 'no next hop to move: only the floating address');
    const peer = await startPeerIn(g.seg.peer, ['--router', SEG.floating, '--default-route']);
    const before = await ping6(g.seg.prv, peer.address, { count: 3 });
    if (before.received !== 3) {
      t.log(await g.seg.prv.ip(['-6', 'neigh', 'show']));
      for (const a of g.agents)
        t.log(
          (a?.output() ?? '')
            .split('\n')
            .filter((l) => /neighbour|proxy|ndp|error|warn/i.test(l))
            .join('\n'),
        );
    }
    t.is(before.received, 3, before.output);
    const entry = async () =>
      (await g.seg.prv.json<{ dst: string; lladdr?: string }[]>(['-6', 'neigh', 'show', 'dev', 'br0'])).find(
        (n) => n.dst === peer.address,
      );
    t.is((await entry())?.lladdr, SEG.vmac, 'the provider reaches the peer through the virtual MAC');

    await g.agents[0]!.stop('SIGKILL');
    await eventually('n2 to hold the Lease', async () => (await g.holder()) === NODES[1], 30_000, 100);
    const after = await eventually(
      'pings through n2',
      async () => {
        const r = await ping6(g.seg.prv, peer.address, { count: 3, timeoutS: 1 });
        return r.received === 3 ? r : undefined;
      },
      30_000,
      200,
    );
    t.is(after.received, 3);
    t.is((await entry())?.lladdr, SEG.vmac, 'the same entry still holds');
    // Required: a standby that could not load and attach its fast path would not have been a member at all.
    t.regex(g.agents[1]!.output(), /fast path on: .* uplink=6b4vr42/);
    // The router's closing line says what its fast path took: the peer's datagrams, in the kernel, on the macvlan.
    await g.agents[1]!.stop('SIGTERM', 10_000);
    const closing =
      g.agents[1]!.output()
        .split('\n')
        .find((l) => /router stopped/.test(l)) ?? '';
    t.log(closing.trim());
    t.true(Number(/udpToTunFast=(\d+)/.exec(closing)?.[1] ?? 0) > 0, 'datagrams from the peer took the fast path');
    for (const l of g.takeoverLines(1).slice(-2)) t.log(l.trim());
  },
);
