// The pure half of failover: which shares can fail over (and the reason in the spec's words when not), and the
// announcements as they go on the wire.
import test from 'ava';
import type { AgentNodeConfig } from '../../kube/api.js';
import { failoverPlan, FailoverRefused, layer2Refusal } from '../../agent/failover/config.js';
import { gratuitousArp, unsolicitedAdvert, virtualMac } from '../../agent/failover/frames.js';
import { parseIPv4, parseIPv6 } from '../../lib/ip.js';
import { upperChecksum } from '../../agent/protocol/checksum.js';

const share = (
  over: Partial<AgentNodeConfig> = {},
  f: Partial<NonNullable<AgentNodeConfig['failover']>> = {},
): AgentNodeConfig => ({
  prefix: '2001:db8:9:10::/64',
  listen: { address: '198.51.100.10', port: 25790 },
  localAddresses: [],
  localAddressMode: 'uplink128',
  routes: [],
  ndpProxy: 'off',
  failover: {
    address: '198.51.100.10',
    leaseName: 'sixbed4-failover-a',
    members: ['n1', 'n2'],
    upstream: 'RoutedNextHop',
    nextHop: '2001:db8:ffff::100',
    virtualRouterId: 42,
    leaseDurationMs: 2000,
    renewIntervalMs: 500,
    fenceAfterMs: 1500,
    ...f,
  },
  ...over,
});

const refusal = (n: AgentNodeConfig): FailoverRefused | undefined => {
  try {
    failoverPlan(n, 'eth0');
    return undefined;
  } catch (err) {
    return err as FailoverRefused;
  }
};

test('a routed next hop on a layer-2 uplink: the plan names the macvlan and the tables', (t) => {
  const p = failoverPlan(share(), 'eth0');
  t.is(p.macvlan, '6b4vr42');
  t.is(p.table, 'sixbed4_vr42');
  t.is(p.ipv4, parseIPv4('198.51.100.10'));
  t.deepEqual(p.nextHop, parseIPv6('2001:db8:ffff::100'));
});

test('setups that cannot fail over are refused with the reason', (t) => {
  const cases: [AgentNodeConfig, RegExp, string?][] = [
    [
      share({}, { nextHop: 'fe80::1' }),
      /link-local: a \/64 routed to one machine's own link-local address cannot move/,
      'FailoverUnsupported',
    ],
    [share({ listen: { address: '198.51.100.10', port: 25790, advertise: '203.0.113.5' } }), /behind a NAT/],
    [share({ listen: { address: '198.51.100.11', port: 25790 } }), /not on the floating address/],
    [share({}, { fenceAfterMs: 2000 }), /fenceAfterMs 2000 < leaseDurationMs 2000 must hold/],
    [share({}, { leaseDurationMs: 2500 }), /whole seconds/],
    [share({}, { upstream: 'OnLink', nextHop: undefined }), /OnLink needs the neighbour proxy/],
    [share({}, { nextHop: undefined }), /RoutedNextHop needs nextHop/],
    [share({}, { virtualRouterId: 0 }), /virtualRouterId 0: use 1..255/],
    [share({ localAddresses: ['2001:db8:9:10::11'] }), /localAddresses .* live on one host/],
  ];
  for (const [n, re, reason] of cases) {
    const e = refusal(n);
    t.true(e instanceof FailoverRefused, `refused: ${re}`);
    t.regex(e!.message, re);
    t.is(e!.reason, reason ?? 'FailoverUnavailable');
  }
  t.notThrows(() => failoverPlan(share({ ndpProxy: 'on' }, { upstream: 'OnLink', nextHop: undefined }), 'eth0'));
});

test('an uplink without layer 2 cannot carry a moving address', (t) => {
  t.is(layer2Refusal('eth0', { link_type: 'ether', flags: ['UP', 'LOWER_UP'] }), undefined);
  t.regex(layer2Refusal('wg0', { link_type: 'none', flags: ['NOARP', 'UP'] })!, /not Ethernet/);
  t.regex(layer2Refusal('eth0', { link_type: 'ether', flags: ['NOARP'] })!, /does not do ARP/);
  t.regex(layer2Refusal('eth9', undefined)!, /not there/);
});

test('gratuitous ARP: a broadcast request from the virtual MAC, sender and target the floating address', (t) => {
  const mac = virtualMac(42);
  t.deepEqual([...mac], [0, 0, 0x5e, 0, 1, 42]);
  const f = gratuitousArp(parseIPv4('198.51.100.10'), mac);
  t.is(f.length, 42);
  t.deepEqual([...f.subarray(0, 6)], [255, 255, 255, 255, 255, 255]);
  t.deepEqual([...f.subarray(6, 12)], [...mac]);
  t.deepEqual([...f.subarray(12, 14)], [0x08, 0x06]);
  t.deepEqual([...f.subarray(14, 22)], [0, 1, 8, 0, 6, 4, 0, 1], 'Ethernet/IPv4 request');
  t.deepEqual([...f.subarray(22, 28)], [...mac], 'sender MAC');
  t.deepEqual([...f.subarray(28, 32)], [198, 51, 100, 10], 'sender IP');
  t.deepEqual([...f.subarray(38, 42)], [198, 51, 100, 10], 'target IP');
});

test('unsolicited NA: to all nodes, Router and Override set, Solicited clear, the virtual MAC as target link-layer address', (t) => {
  const mac = virtualMac(42);
  const target = parseIPv6('2001:db8:ffff::100');
  const f = unsolicitedAdvert(target, mac);
  t.deepEqual([...f.subarray(0, 6)], [0x33, 0x33, 0, 0, 0, 1]);
  t.deepEqual([...f.subarray(12, 14)], [0x86, 0xdd]);
  const ip = 14;
  t.is(f[ip + 7], 255, 'hop limit 255');
  t.deepEqual(f.subarray(ip + 8, ip + 24), target, 'from the address itself');
  const icmp = ip + 40;
  t.is(f[icmp], 136);
  t.is(f[icmp + 4], 0xa0, 'R and O, not S');
  t.deepEqual(f.subarray(icmp + 8, icmp + 24), target);
  t.deepEqual([...f.subarray(icmp + 24, icmp + 32)], [2, 1, ...mac]);
  t.is(upperChecksum(f, ip, 58, icmp, 32), 0, 'the checksum is right');
});
