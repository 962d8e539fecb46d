// What a reload hands the running data path (agent/router/workers.ts applyLiveSettings, the same call on the main
// thread's engine and in each worker): the next RA carries the new routes, and new reply rates apply to buckets
// that keep their tokens (shared by every worker).
import test from 'ava';
import { Engine } from '../../agent/router/engine.js';
import { applyLiveSettings } from '../../agent/router/workers.js';
import { newRateLimitState, ReplyLimiter, DEFAULT_RATE_LIMIT } from '../../agent/router/ratelimit.js';
import { formatIPv6, parseIPv4, parsePrefix, parsePrefix64 } from '../../lib/ip.js';
import { parseRouterAdvert, writeRouterSolicit } from '../../agent/protocol/nd.js';

const prefix = parsePrefix64('2001:db8:9:10::/64');
const PEER_V4 = parseIPv4('198.51.100.20');

function rsFrom(e: Engine, port: number, nowMs: number): void {
  const b = new Uint8Array(64),
    n = writeRouterSolicit(b, 0);
  e.udpRx.off[0] = 0;
  e.udpRx.data.set(b.subarray(0, n), 0);
  e.udpRx.len[0] = n;
  e.udpRx.addr[0] = PEER_V4;
  e.udpRx.port[0] = port;
  e.fromPeers(1, nowMs);
}
const raRoutes = (e: Engine) => {
  const r = e.udpReplies;
  return parseRouterAdvert(r.data, r.off[0]!, r.len[0]!)!.routes.map((x) => `${formatIPv6(x.bytes)}/${x.length}`);
};

test('new routes: the next RA announces them, an empty list none', (t) => {
  const e = new Engine(
    { prefix, listenIPv4: parseIPv4('198.51.100.1'), port: 25790, routes: [parsePrefix('2001:db8:aaaa::/48')] },
    4,
  );
  rsFrom(e, 40000, 1000);
  t.deepEqual(raRoutes(e), ['2001:db8:aaaa::/48']);
  applyLiveSettings(e, { routes: [parsePrefix('2001:db8:bbbb::/48'), parsePrefix('2001:db8:cccc::/56')] });
  rsFrom(e, 40001, 1000);
  t.deepEqual(raRoutes(e), ['2001:db8:bbbb::/48', '2001:db8:cccc::/56']);
  applyLiveSettings(e, { routes: [] });
  rsFrom(e, 40002, 1000);
  t.deepEqual(raRoutes(e), []);
});

test('new reply rates: a lower burst applies at once, the shared table and its tokens stay', (t) => {
  const e = new Engine({ prefix, listenIPv4: parseIPv4('198.51.100.1'), port: 25790, routes: [] }, 4);
  applyLiveSettings(e, { rateLimit: { perSourceRate: 0.001, perSourceBurst: 2, totalRate: 2000, totalBurst: 500 } });
  let answered = 0;
  for (let i = 0; i < 5; i++) {
    rsFrom(e, 40000 + i, 1000);
    answered += e.nUdpReplies;
  }
  t.is(answered, 2, 'a burst of 2 per source, then nothing');
  t.is(e.counters.drops.rate_limited, 3);
  // Two limiters on one shared state (two workers): a rate change in one leaves the tokens the other took.
  const shared = newRateLimitState();
  const a = new ReplyLimiter(DEFAULT_RATE_LIMIT, shared),
    b = new ReplyLimiter(DEFAULT_RATE_LIMIT, shared);
  for (let i = 0; i < 8; i++) t.true(a.allow(PEER_V4, 5000));
  b.setRates({ perSourceRate: 4, perSourceBurst: 100, totalRate: 2000, totalBurst: 500 });
  t.false(b.allow(PEER_V4, 5000), 'the bucket a emptied is still empty for b: no free burst from a reload');
});
