// `sixbed4 router --ndp-proxy`: behind an upstream that treats the /64 as
// on-link, the router answers the upstream's solicitations for the peers it
// has seen, by itself — no one tells it the addresses.
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTopology, TOPO } from '../../lab/topology.js';
import { ping6, scrape, startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { skipReason, title } from '../helpers/fixtures.js';
import { host, L11, L30, PREFIX, seedVm } from '../host/hostlab.js';

(skipReason ? test.skip : test)(
  title('router --ndp-proxy answers the upstream for live peers it learnt from their traffic'),
  async (t) => {
    const topo = await buildTopology({ tag: 'rndp', nat: false, peerC: true });
    t.teardown(() => topo.destroy());
    const dir = await mkdtemp(join(tmpdir(), 'sixbed4-rndp-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const vm = await seedVm(topo);
    const applied = await host(vm, [
      'apply',
      '--prefix',
      PREFIX,
      '--local',
      L11,
      '--local',
      L30,
      '--state',
      join(dir, 'host.json'),
    ]);
    t.is(applied.code, 0, applied.err);
    await topo.isp.ip(['-6', 'route', 'replace', PREFIX, 'dev', TOPO.ispIf]); // the poor upstream
    const router = await startRouterIn(vm, [
      '--prefix',
      PREFIX,
      '--listen',
      TOPO.routerV4C,
      '--ndp-proxy',
      TOPO.routerUplinkIf,
      '--metrics',
      '127.0.0.1:9464',
    ]);
    const peer = await startPeerIn(topo.peers.C, ['--router', TOPO.routerV4C, '--default-route']);
    // The peer's NS from its new address made it live; the proxy hears of it within a report interval.
    let r = await ping6(topo.isp, peer.address, { count: 3 });
    for (let i = 0; i < 5 && r.received === 0; i++) r = await ping6(topo.isp, peer.address, { count: 3 });
    t.true(r.received > 0, r.output);
    const full = await ping6(topo.isp, peer.address, { count: 5 });
    t.is(full.received, 5, full.output);
    const m = await scrape(vm, '127.0.0.1:9464');
    t.true(m.get('sixbed4_ndp_solicitations_total{result="answered"}')! >= 1);
    t.is(m.get('sixbed4_ndp_proxied_addresses'), 2, 'lanip 1 and 0 of the one live peer');
    // The server addresses on the uplink stay the kernel's to answer.
    t.is((await ping6(topo.isp, L11, { count: 2 })).received, 2);
    t.is(await router.stop(), 0);
    t.regex(router.output(), /neighbour proxy on eth0 stopped/);
  },
);
