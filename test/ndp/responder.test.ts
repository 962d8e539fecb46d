// The neighbour proxy's logic with a fake socket: NS parsing and NA bytes,
// reference counting of addresses and of solicited-node groups, who gets an
// answer (and with which flags), 'auto', and the peer lanip policy.
import test from 'ava';
import winston from 'winston';
import {
  advertisementBody,
  NA_OVERRIDE,
  NA_ROUTER,
  NA_SOLICITED,
  parseSolicitation,
  solicitedNodeGroup,
} from '../../agent/ndp/messages.js';
import { NdpResponder, type NdpResponderOptions } from '../../agent/ndp/responder.js';
import type { NdSocket } from '../../agent/ndp/socket.js';
import {
  DEFAULT_PROXY_LANIPS,
  checkLanips,
  proxiedLocalAddresses,
  proxiedPeerAddresses,
} from '../../agent/ndp/policy.js';
import { hostConfig } from '../../agent/host/config.js';
import { addressIPv4, addressLanip, addressPort } from '../../agent/protocol/address.js';
import { formatIPv4, formatIPv6, parseIPv6, parsePrefix64 } from '../../lib/ip.js';

const log = winston.createLogger({ silent: true });
const MAC = '02:00:00:00:00:02';
const PEER = '2001:db8:9:10:c433:640a:f8e6:8001'; // 198.51.100.10:63718, lanip 1 (6bed4-wire.md)

class FakeSocket implements NdSocket {
  handler: ((body: Uint8Array, source: string) => void) | undefined;
  joins: string[] = [];
  leaves: string[] = [];
  sent: { body: Uint8Array; to: string }[] = [];
  onSolicitation(h: (body: Uint8Array, source: string) => void) {
    this.handler = h;
  }
  join(g: Uint8Array) {
    this.joins.push(formatIPv6(g));
  }
  leave(g: Uint8Array) {
    this.leaves.push(formatIPv6(g));
  }
  async send(body: Uint8Array, to: string) {
    this.sent.push({ body, to });
  }
  close() {}
}

/** NS body as an upstream sends it: type 135, target, optionally a source link-layer option. */
function ns(target: string, slla?: number[]): Uint8Array {
  const b = new Uint8Array(slla ? 32 : 24);
  b[0] = 135;
  b.set(parseIPv6(target), 8);
  if (slla) {
    b[24] = 1;
    b[25] = 1;
    b.set(slla, 26);
  }
  return b;
}

async function started(opts: NdpResponderOptions = {}) {
  const socket = new FakeSocket();
  const r = new NdpResponder('eth0', log, { socket, link: { mac: MAC, ifindex: 2 }, router: true, ...opts });
  await r.start();
  return { r, socket };
}

test('solicited-node groups, NS parsing, NA bytes', (t) => {
  t.is(formatIPv6(solicitedNodeGroup(parseIPv6(PEER))), 'ff02::1:ffe6:8001');
  const parsed = parseSolicitation(ns('2001:db8:9:10::11', [2, 0, 0, 0, 0, 1]))!;
  t.is(formatIPv6(parsed.target), '2001:db8:9:10::11');
  t.deepEqual([...parsed.sourceLinkLayer!], [2, 0, 0, 0, 0, 1]);
  t.is(parseSolicitation(ns('ff02::1')), null, 'multicast target');
  t.is(parseSolicitation(ns('2001:db8::1').subarray(0, 20)), null, 'short');
  const zeroLenOption = ns('2001:db8::1', [0, 0, 0, 0, 0, 0]);
  zeroLenOption[25] = 0;
  t.is(parseSolicitation(zeroLenOption), null, 'an option of length 0');
  const na = advertisementBody(
    parseIPv6(PEER),
    Uint8Array.of(2, 0, 0, 0, 0, 2),
    NA_ROUTER | NA_SOLICITED | NA_OVERRIDE,
  );
  t.deepEqual([...na.subarray(0, 8)], [136, 0, 0, 0, 0xe0, 0, 0, 0], 'type, code, checksum left to the kernel, R S O');
  t.is(formatIPv6(na.subarray(8, 24)), PEER);
  t.deepEqual([...na.subarray(24)], [2, 1, 2, 0, 0, 0, 0, 2], 'target link-layer option with the uplink MAC');
});

test('addresses and groups are reference-counted; groups shared by addresses are joined once', async (t) => {
  const { r, socket } = await started();
  const a = parseIPv6('2001:db8:9:10::1:11');
  const sameGroup = parseIPv6('2001:db8:9:10:1::1:11'); // same last 24 bits
  r.add(a);
  r.add(a);
  r.add(sameGroup);
  t.deepEqual(socket.joins, ['ff02::1:ff01:11']);
  r.remove(a);
  t.true(r.has(a), 'still held once');
  r.remove(a);
  t.false(r.has(a));
  t.deepEqual(socket.leaves, [], 'the group is still needed by the other address');
  r.remove(sameGroup);
  t.deepEqual(socket.leaves, ['ff02::1:ff01:11']);
  r.remove(sameGroup); // one too many: ignored
  t.deepEqual(r.counters().groups, 0);
});

test('addresses added before start are joined at start', async (t) => {
  const socket = new FakeSocket();
  const r = new NdpResponder('eth0', log, { socket, link: { mac: MAC, ifindex: 2 }, router: false });
  r.add(parseIPv6(PEER));
  t.deepEqual(socket.joins, []);
  await r.start();
  t.deepEqual(socket.joins, ['ff02::1:ffe6:8001']);
});

test('answers live targets only: solicited NA to the solicitor, DAD probes to all nodes, nothing to ourselves', async (t) => {
  const { r, socket } = await started();
  r.add(parseIPv6(PEER));
  t.true(await r.handleSolicitation(ns(PEER, [2, 0, 0, 0, 0, 1]), 'fe80::1'));
  t.is(socket.sent[0]!.to, 'fe80::1');
  t.is(socket.sent[0]!.body[4], NA_ROUTER | NA_SOLICITED | NA_OVERRIDE);
  t.false(await r.handleSolicitation(ns('2001:db8:9:10:c433:640a:f8e6:8002'), 'fe80::1'), 'not live');
  t.true(await r.handleSolicitation(ns(PEER), '::'));
  t.is(socket.sent[1]!.to, 'ff02::1');
  t.is(socket.sent[1]!.body[4], NA_ROUTER | NA_OVERRIDE, 'a DAD answer is not solicited');
  t.false(await r.handleSolicitation(ns(PEER, [2, 0, 0, 0, 0, 2]), '2001:db8:9:10::11'), 'our own NS, looped back');
  t.false(await r.handleSolicitation(Uint8Array.of(135, 0, 0, 0), 'fe80::1'), 'malformed');
  t.like(r.counters(), { received: 5, answered: 2, ignored: 3, liveAddresses: 1, groups: 1 });
});

test('R follows the router option, O can be turned off', async (t) => {
  const { r, socket } = await started({ router: false, override: false });
  r.add(parseIPv6(PEER));
  await r.handleSolicitation(ns(PEER), 'fe80::1');
  t.is(socket.sent[0]!.body[4], NA_SOLICITED);
});

test('auto: watches first, answers from the first NS for the prefix on (DAD probes do not count)', async (t) => {
  const { r, socket } = await started({ mode: 'auto', prefix: parsePrefix64('2001:db8:9:10::/64') });
  r.add(parseIPv6(PEER));
  t.false(r.answering);
  t.false(await r.handleSolicitation(ns(PEER), '::'), 'a DAD probe does not reveal an on-link upstream');
  t.false(r.answering);
  t.true(await r.handleSolicitation(ns(PEER), 'fe80::1'), 'the NS that reveals it is answered already');
  t.true(r.answering);
  t.is(socket.sent.length, 1);
  t.is(r.counters().prefixSolicitations, 2);
  t.throws(() => new NdpResponder('eth0', log, { mode: 'auto' }), { message: /auto needs the prefix/ });
});

test('peer policy: lanips 1 and 0 of each live peer by default; local addresses only in dummy112', (t) => {
  t.deepEqual(DEFAULT_PROXY_LANIPS, [1, 0]);
  const addrs = proxiedPeerAddresses(parseIPv6(PEER));
  t.deepEqual(
    addrs.map((a) => formatIPv6(a)),
    [PEER, '2001:db8:9:10:c433:640a:f8e6:8000'],
  );
  const many = proxiedPeerAddresses(parseIPv6(PEER), [0x3fff]);
  t.is(addressLanip(many[0]!, 0), 0x3fff);
  t.is(formatIPv4(addressIPv4(many[0]!, 0)), '198.51.100.10', 'the moved IPv4 bits survive');
  t.is(addressPort(many[0]!, 0), 63718);
  t.throws(() => checkLanips([16384]), { message: /lanip 16384 is out of range 0\.\.16383/ });
  const cfg = hostConfig({ prefix: '2001:db8:9:10::/64', localAddresses: ['2001:db8:9:10::11'] });
  t.deepEqual(proxiedLocalAddresses(cfg), []);
  t.deepEqual(
    proxiedLocalAddresses({ ...cfg, localAddressMode: 'dummy112' }).map((a) => formatIPv6(a)),
    ['2001:db8:9:10::11'],
  );
});

test('group joins are rate limited and counted; failed joins are counted, with one warning line per interval', async (t) => {
  let warnings = 0;
  const counting = winston.createLogger({
    level: 'warn',
    transports: [new winston.transports.Console({ silent: true })],
  });
  counting.on('data', () => undefined);
  counting.warn = ((..._args: unknown[]) => {
    warnings++;
    return counting;
  }) as typeof counting.warn;
  const socket = new FakeSocket();
  let fail = false;
  socket.join = (g: Uint8Array) => {
    if (fail) throw new Error('setsockopt ENOBUFS');
    socket.joins.push(formatIPv6(g));
  };
  const r = new NdpResponder('eth0', counting, {
    socket,
    link: { mac: MAC, ifindex: 2 },
    router: true,
    joinRate: { perSecond: 100, burst: 10 },
  });
  await r.start();
  // 200 peers, each its own solicited-node group, in one rush.
  const peer = (i: number) => `2001:db8:9:10:c433:640a:${(0x1000 + i).toString(16)}:8001`;
  for (let i = 0; i < 200; i++) r.add(parseIPv6(peer(i)));
  t.is(socket.joins.length, 10, 'the burst at once');
  t.like(r.counters(), { joins: 10, joinsPending: 190 });
  await new Promise((res) => setTimeout(res, 500));
  const later = socket.joins.length;
  t.true(later > 10 && later <= 10 + 100 * 0.6 + 2, `about 100 per second afterwards (${later} after 0.5 s)`);
  fail = true;
  for (let i = 200; i < 260; i++) r.add(parseIPv6(peer(i)));
  await new Promise((res) => setTimeout(res, 2500));
  const c = r.counters();
  t.true(c.joinErrors > 50, `${c.joinErrors} failed joins counted`);
  t.is(warnings, 1, 'one warning line for all of them');
  await r.stop();
});
