// The poor upstream: the ISP treats the /64 as on-link, so it sends Neighbour
// Solicitations for every address in it instead of routing the prefix to the
// VM. With the neighbour proxy answering for a live 6bed4 peer, the ISP
// reaches the peer through the tunnel; a dead address in the same
// solicited-node group gets no answer. 'auto' starts answering by itself once
// such solicitations arrive.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Netns } from '../../lab/netns.js';
import type { Proc } from '../../lab/proc.js';
import { buildTopology, TOPO } from '../../lab/topology.js';
import { ping6, startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { formatIPv6, parseIPv6 } from '../../lib/ip.js';
import { solicitedNodeGroup } from '../../agent/ndp/messages.js';
import { title, rootTest } from '../helpers/fixtures.js';
import { host, L11, L30, PREFIX, seedVm } from '../host/hostlab.js';

const CHILD = fileURLToPath(new URL('./responder-child.js', import.meta.url));

function responder(vm: Netns, mode: 'on' | 'auto'): Proc {
  return vm.spawn([process.execPath, CHILD, TOPO.routerUplinkIf, mode, PREFIX], {
    stdin: true,
    env: { SIXBED4_LOG_LEVEL: 'debug' },
  });
}

async function command(p: Proc, line: string): Promise<void> {
  p.write(`${line}\n`);
  await p.waitFor(new RegExp(`^ok ${line}$`), 5000);
}

async function counters(p: Proc): Promise<Record<string, number | boolean>> {
  const seen = p.lines().length;
  p.write('counters\n');
  for (let i = 0; i < 100; i++) {
    const l = p
      .lines()
      .slice(seen)
      .find((x) => x.text.startsWith('counters '));
    if (l) return JSON.parse(l.text.slice('counters '.length)) as Record<string, number | boolean>;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`no counters from the responder:\n${p.output()}`);
}

rootTest(
  title('poor upstream: the proxy answers for a live peer only, and the ISP reaches it through the tunnel'),
  async (t) => {
    const topo = await buildTopology({ tag: 'ndp', nat: false, peerC: true });
    t.teardown(() => topo.destroy());
    const dir = await mkdtemp(join(tmpdir(), 'sixbed4-ndp-'));
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
    // The poor upstream: the /64 on-link on its side rather than routed to the VM.
    await topo.isp.ip(['-6', 'route', 'replace', PREFIX, 'dev', TOPO.ispIf]);
    await startRouterIn(vm, ['--prefix', PREFIX, '--listen', TOPO.routerV4C]);
    const peer = await startPeerIn(topo.peers.C, ['--router', TOPO.routerV4C, '--default-route']);
    const unproxied = await ping6(topo.isp, peer.address, { count: 1, timeoutS: 1 });
    t.is(unproxied.received, 0, "without the proxy nobody answers the ISP's solicitation");

    const proxy = responder(vm, 'on');
    await proxy.waitFor(/^ready$/, 5000);
    await command(proxy, `add ${peer.address}`);
    const group = formatIPv6(solicitedNodeGroup(parseIPv6(peer.address)));
    t.regex(
      await vm.run(['ip', '-6', 'maddr', 'show', 'dev', TOPO.routerUplinkIf]),
      new RegExp(group),
      'the group is joined',
    );

    const live = await ping6(topo.isp, peer.address, { count: 3 });
    t.is(live.received, live.sent, live.output);
    const neigh = await topo.isp.run(['ip', '-6', 'neigh', 'show', peer.address, 'dev', TOPO.ispIf]);
    const mac = (await vm.json<{ address: string }[]>(['link', 'show', 'dev', TOPO.routerUplinkIf]))[0]!.address;
    t.regex(neigh, new RegExp(`lladdr ${mac}`), "the ISP learnt the VM's uplink MAC for the peer");

    // Same last 24 bits, so the same group: the solicitation arrives, and is left unanswered.
    const deadBytes = parseIPv6(peer.address);
    deadBytes[9] ^= 0x01;
    const dead = formatIPv6(deadBytes);
    t.is(formatIPv6(solicitedNodeGroup(deadBytes)), group);
    const before = await counters(proxy);
    const gone = await ping6(topo.isp, dead, { count: 1, timeoutS: 1 });
    t.is(gone.received, 0);
    const after = await counters(proxy);
    t.true((after.ignored as number) > (before.ignored as number), 'the NS for the dead address was seen and ignored');
    t.is(after.answered, before.answered, 'and not answered');
    t.notRegex(await topo.isp.run(['ip', '-6', 'neigh', 'show', dead, 'dev', TOPO.ispIf]), /lladdr/);

    await command(proxy, `remove ${peer.address}`);
    t.notRegex(
      await vm.run(['ip', '-6', 'maddr', 'show', 'dev', TOPO.routerUplinkIf]),
      new RegExp(group),
      'the group is left',
    );
    await proxy.stop();

    // auto: nothing answered until the upstream shows it treats the prefix as on-link — its first NS does.
    await topo.isp.ip(['-6', 'neigh', 'flush', 'dev', TOPO.ispIf]);
    const auto = responder(vm, 'auto');
    await auto.waitFor(/^ready$/, 5000);
    await command(auto, `add ${peer.address}`);
    t.false((await counters(auto)).answering);
    const viaAuto = await ping6(topo.isp, peer.address, { count: 3 });
    t.is(viaAuto.received, viaAuto.sent, viaAuto.output);
    const c = await counters(auto);
    t.true(c.answering);
    t.true((c.answered as number) >= 1);
    await auto.waitFor(/treats the prefix as on-link/, 1000);
  },
);
