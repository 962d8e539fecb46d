// `sixbed4 router --advertise IPV4[:PORT]`: the router binds one address and port, peers know it by another that a
// DNAT in front of it forwards (a port forward to a router at home, a NAT64 box, a cloud load balancer). Here the
// lab's NAT namespace is that DNAT: 203.0.113.77:4000 goes to the router's 198.51.100.1:25790, and what the router
// sends back leaves as 203.0.113.77:4000 again. The router's own 6bed4 address embeds the advertised one; peers
// pointed at it get addresses, reach the ISP and each other (relayed from the bound socket, back through the DNAT).
import test from 'ava';
import { buildTopology, TOPO, type Topology } from '../../lab/topology.js';
import { systemTool } from '../../agent/host/tools.js';
import { ping6, spawnSixbed4, startPeerIn, startRouterIn } from '../../lab/sixbed4.js';
import { addressIPv4, makeAddress } from '../../agent/protocol/address.js';
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6, parsePrefix64 } from '../../lib/ip.js';
import { routerConfig } from '../../agent/router/router.js';
import { skipReason, title } from '../helpers/fixtures.js';

const PUBLIC = '203.0.113.77';
const PUBLIC_PORT = 4000;
const serial = skipReason ? test.serial.skip : test.serial;
let topo: Topology;

test('--advertise: the identity comes from the advertised address and port, the sockets bind --listen and --port', (t) => {
  const c = routerConfig({ prefix: TOPO.prefix, listen: TOPO.routerV4, advertise: `${PUBLIC}:${PUBLIC_PORT}` });
  t.deepEqual(
    [formatIPv4(c.listenIPv4), c.port, formatIPv4(c.bindIPv4), c.bindPort],
    [PUBLIC, PUBLIC_PORT, TOPO.routerV4, 25790],
  );
  const samePort = routerConfig({ prefix: TOPO.prefix, listen: TOPO.routerV4, port: 25791, advertise: PUBLIC });
  t.deepEqual(
    [formatIPv4(samePort.listenIPv4), samePort.port, samePort.bindPort],
    [PUBLIC, 25791, 25791],
    'the port defaults to --port',
  );
  t.throws(() => routerConfig({ prefix: TOPO.prefix, listen: TOPO.routerV4, advertise: `${PUBLIC}:0` }), {
    message: /--advertise port 0 is not a UDP port/,
  });
  t.throws(() => routerConfig({ prefix: TOPO.prefix, listen: TOPO.routerV4, advertise: 'router.example' }), {
    message: /'router\.example' is not an IPv4 address/,
  });
  t.throws(() => routerConfig({ prefix: TOPO.prefix, listen: TOPO.routerV4, advertise: '127.0.0.1' }), {
    message: /--advertise 127\.0\.0\.1 is not an address peers can reach/,
  });
});

test.before(async () => {
  if (skipReason) return;
  topo = await buildTopology({ tag: 'adv' });
  await topo.nat.run([systemTool('nft'), '-f', '-'], {
    input:
      `table ip sixbed4_dnat {\n  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n` +
      `    ip daddr ${PUBLIC} udp dport ${PUBLIC_PORT} dnat to ${TOPO.routerV4}:25790\n  }\n}\n`,
  });
});

test.after.always(async () => {
  await topo?.destroy();
});

serial(title('--bind with --advertise: refused, one line, exit 2'), async (t) => {
  const p = spawnSixbed4(topo.router, [
    'router',
    '--prefix',
    TOPO.prefix,
    '--listen',
    TOPO.routerV4,
    '--bind',
    TOPO.routerV4,
    '--advertise',
    PUBLIC,
  ]);
  t.is((await p.exited).code, 2);
  t.regex(p.output(), /--bind and --advertise: use one/);
});

serial(
  title(
    '--listen LOCAL --advertise PUBLIC:PORT behind a DNAT: peers get addresses, reach the ISP, each other, and are reached',
  ),
  async (t) => {
    const router = await startRouterIn(topo.router, [
      '--prefix',
      TOPO.prefix,
      '--listen',
      TOPO.routerV4,
      '--advertise',
      `${PUBLIC}:${PUBLIC_PORT}`,
    ]);
    t.teardown(() => router.stop());
    t.regex(router.output(), new RegExp(`router ready.*listen=${PUBLIC}:${PUBLIC_PORT}.*bind=${TOPO.routerV4}:25790`));
    const routerAddr = formatIPv6(makeAddress(parsePrefix64(TOPO.prefix).bytes, parseIPv4(PUBLIC), PUBLIC_PORT, 0));
    const links = await topo.router.json<{ addr_info: { local: string }[] }[]>(['-6', 'addr', 'show', 'dev', '6bed4']);
    t.true(
      links[0]!.addr_info.some((a) => a.local === routerAddr),
      `the router's own address embeds ${PUBLIC}:${PUBLIC_PORT}`,
    );
    const [a, b] = await Promise.all([
      startPeerIn(topo.peers.A, ['--router', `${PUBLIC}:${PUBLIC_PORT}`, '--default-route']),
      startPeerIn(topo.peers.B, ['--router', `${PUBLIC}:${PUBLIC_PORT}`, '--default-route']),
    ]);
    t.teardown(async () => {
      await a.proc.stop();
      await b.proc.stop();
    });
    t.is(formatIPv4(addressIPv4(parseIPv6(a.address), 0)), TOPO.natV4, "the peer's address embeds its public mapping");
    for (const [from, to] of [
      [topo.peers.A, TOPO.ispV6],
      [topo.isp, a.address],
      [topo.peers.A, b.address],
      [topo.peers.B, routerAddr],
    ] as const) {
      const r = await ping6(from, to, { count: 3 });
      t.is(r.received, 3, `${from.name} -> ${to}: ${r.output}`);
    }
  },
);
