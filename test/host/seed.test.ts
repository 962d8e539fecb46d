// The seed's scenario on real kernel networking: a VM whose uplink carries
// ::11/64 and ::30/64 of the /64 its ISP routes to it. `host apply` moves them
// to /128s with forwarding on while the ISP pings both every 20 ms — no reply
// may be lost; then a 6bed4 peer behind the router on that VM is reachable
// from the ISP; a second apply does nothing; revert (again under pings)
// restores exactly what `ip -j` showed before.
import { mkdtemp, rm, writeFile, access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTopology, TOPO } from '../../lab/topology.js';
import { ping6, startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { title, rootTest } from '../helpers/fixtures.js';
import { capture, host, L11, L30, lossOf, pingEvery20ms, PREFIX, seedVm } from './hostlab.js';

const PINGS = 100; // 2 s at 20 ms: longer than apply or revert takes (checked below)

rootTest(
  title('seed scenario: apply without a lost ping, a peer reachable through the tunnel, idempotent, exact revert'),
  async (t) => {
    const topo = await buildTopology({ tag: 'hseed', nat: false, peerC: true });
    t.teardown(() => topo.destroy());
    const dir = await mkdtemp(join(tmpdir(), 'sixbed4-seed-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const vm = await seedVm(topo);
    const config = join(dir, 'host.yaml');
    const state = join(dir, 'state.json');
    await writeFile(config, `prefix: ${PREFIX}\nlocalAddresses: [${L11}, ${L30}]\n`);
    const before = await capture(vm);

    // plan: the commands, from the real state, and nothing changed.
    const plan = await host(vm, ['plan', '--config', config]);
    t.is(plan.code, 0, plan.err);
    const move = (a: string) => [
      `ip -6 addr add ${a}/128 dev lo`,
      `ip -6 addr del ${a}/64 dev eth0`,
      `ip -6 addr add ${a}/128 dev eth0`,
      `ip -6 addr del ${a}/128 dev lo`,
    ];
    t.deepEqual(
      plan.out.split('\n').filter((l) => l !== '' && !l.startsWith('#')),
      [
        'sysctl -w net.ipv6.conf.all.forwarding=1',
        'sysctl -w net.ipv6.conf.eth0.forwarding=1',
        ...move(L11),
        ...move(L30),
      ],
    );
    t.regex(
      plan.out,
      /# note: the seed's `sysctl -w net\.ipv6\.conf\.eth0\.ip_forwarding=1` names a key that does not exist/,
    );
    t.deepEqual(await capture(vm), before, 'plan changes nothing');

    // apply under continuous pings of both addresses.
    const pings = [pingEvery20ms(topo.isp, L11, PINGS), pingEvery20ms(topo.isp, L30, PINGS)];
    await Promise.all(pings.map((p) => p.waitFor(/bytes from/, 5000)));
    const applied = await host(vm, ['apply', '--config', config, '--state', state]);
    t.is(applied.code, 0, applied.err);
    t.regex(applied.out, /^applied 10 step\(s\); the state before is saved in /);
    t.true(
      pings.every((p) => p.running),
      'the pings lasted longer than apply',
    );
    for (const p of pings) {
      const r = await lossOf(p);
      t.is(r.received, r.sent, `lost replies during apply:\n${r.output}`);
      t.log(`apply: ${r.sent} pings at 20 ms, ${r.sent - r.received} lost`);
    }
    const addrs = await vm.run(['ip', '-6', 'addr', 'show', 'dev', 'eth0']);
    t.regex(addrs, new RegExp(`${L11}/128`));
    t.regex(addrs, new RegExp(`${L30}/128`));
    t.is(await vm.getSysctl('net.ipv6.conf.all.forwarding'), '1');
    t.is(await vm.getSysctl('net.ipv6.conf.eth0.forwarding'), '1');
    await access(state);

    // A router and a peer: the peer's address is routed to the tunnel and reachable from the ISP.
    const router = await startRouterIn(vm, ['--prefix', PREFIX, '--listen', TOPO.routerV4C]);
    const peer = await startPeerIn(topo.peers.C, ['--router', TOPO.routerV4C, '--default-route']);
    const routes = await vm.json<{ dst: string; dev: string }[]>(['-6', 'route', 'show', PREFIX]);
    t.deepEqual(
      routes.map((r) => `${r.dst} ${r.dev}`),
      [`${PREFIX} 6bed4`],
      'the /64 goes to the tunnel only',
    );
    const toPeer = await ping6(topo.isp, peer.address);
    t.is(toPeer.received, toPeer.sent, toPeer.output);
    const toLocal = await ping6(topo.isp, L11);
    t.is(toLocal.received, toLocal.sent, 'the local address stays local with the /64 on the tunnel');

    const again = await host(vm, ['apply', '--config', config, '--state', state]);
    t.is(again.code, 0, again.err);
    t.is(again.out, 'nothing to do: the host already matches the configuration\n');

    await peer.proc.stop();
    t.is(await router.stop(), 0);

    // revert, under pings too.
    const pings2 = [pingEvery20ms(topo.isp, L11, PINGS), pingEvery20ms(topo.isp, L30, PINGS)];
    await Promise.all(pings2.map((p) => p.waitFor(/bytes from/, 5000)));
    const reverted = await host(vm, ['revert', '--state', state]);
    t.is(reverted.code, 0, reverted.err);
    t.regex(reverted.out, /^reverted 9 step\(s\); removed /);
    t.true(
      pings2.every((p) => p.running),
      'the pings lasted longer than revert',
    );
    for (const p of pings2) {
      const r = await lossOf(p);
      t.is(r.received, r.sent, `lost replies during revert:\n${r.output}`);
      t.log(`revert: ${r.sent} pings at 20 ms, ${r.sent - r.received} lost`);
    }
    t.deepEqual(await capture(vm), before, 'ip -j addr, ip -j -6 route and the sysctls are as before');
    await t.throwsAsync(access(state), undefined, 'the state file is gone');
  },
);
