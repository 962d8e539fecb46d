// The reply limiter under attack: colliding keys, several workers, and the
// size of what a spoofed 40-byte packet gets back.
import test from 'ava';
import { Worker } from 'node:worker_threads';
import { DEFAULT_RATE_LIMIT, newRateLimitState, ReplyLimiter } from '../../agent/router/ratelimit.js';
import { Engine } from '../../agent/router/engine.js';
import { makeAddress } from '../../agent/protocol/address.js';
import { parseIPv4, parseIPv6, parsePrefix, parsePrefix64 } from '../../lib/ip.js';
import { writeHeader } from '../../agent/protocol/ipv6.js';

const slot = (v4: number, size: number) => (Math.imul(v4 ^ (v4 >>> 16), 0x45d9f3b) >>> 0) & (size - 1);

test('a key that displaces another in its slot inherits its tokens: alternating with a victim gains nothing', (t) => {
  const cfg = { ...DEFAULT_RATE_LIMIT, totalRate: 1e9, totalBurst: 1e9 };
  const victim = parseIPv4('198.51.100.20');
  let other = victim + 1;
  while (slot(other, cfg.tableSize) !== slot(victim, cfg.tableSize)) other++;
  const l = new ReplyLimiter(cfg);
  let toVictim = 0;
  // One second of an attacker alternating the victim's key with a colliding one, 1,000 RS/s each.
  for (let ms = 0; ms < 1000; ms++) {
    if (l.allow(victim, 1000 + ms)) toVictim++;
    l.allow(other, 1000 + ms + 0.5);
  }
  t.true(toVictim <= cfg.perSourceBurst + cfg.perSourceRate, `${toVictim} replies to the victim in one second`);
});

test('workers share one overall cap: two threads on one state together stay within the burst', async (t) => {
  const cfg = { ...DEFAULT_RATE_LIMIT, totalRate: 0.001, totalBurst: 500 };
  const state = newRateLimitState(cfg);
  const url = new URL('../../agent/router/ratelimit.js', import.meta.url).href;
  const code = `
    const { workerData, parentPort } = require('node:worker_threads');
    import(workerData.url).then(({ ReplyLimiter }) => {
      const l = new ReplyLimiter(workerData.cfg, workerData.state);
      let n = 0;
      for (let i = 0; i < 20000; i++) if (l.allow((workerData.base + i) >>> 0, 5000)) n++;
      parentPort.postMessage(n);
    });`;
  const run = (base: number) =>
    new Promise<number>((resolve, reject) => {
      const w = new Worker(code, { eval: true, workerData: { url, cfg, state, base } });
      w.once('message', (n: number) => {
        resolve(n);
        void w.terminate();
      });
      w.once('error', reject);
    });
  const [a, b] = await Promise.all([run(0x01000000), run(0x02000000)]);
  t.is(a + b, 500, `${a} + ${b} replies from two workers`);
});

test('a spoofed source inside the /64 gets back only its /114 (the old one withdrawn, the new one repeated), not the route options', (t) => {
  const prefix = parsePrefix64('2001:db8:9:10::/64');
  const routes = Array.from({ length: 37 }, (_, i) => parsePrefix(`2001:db8:${(0x100 + i).toString(16)}::/48`));
  const e = new Engine({ prefix, listenIPv4: parseIPv4('198.51.100.1'), port: 25790, routes }, 4);
  const b = new Uint8Array(40);
  writeHeader(
    b,
    0,
    0,
    59,
    64,
    makeAddress(prefix.bytes, parseIPv4('203.0.113.7'), 1234, 1),
    parseIPv6('2001:db8:ffff::1'),
  );
  e.udpRx.off[0] = 0;
  e.udpRx.data.set(b, 0);
  e.udpRx.len[0] = 40;
  e.udpRx.addr[0] = parseIPv4('198.51.100.20');
  e.udpRx.port[0] = 40000;
  e.fromPeers(1, 1000);
  t.is(e.nUdpReplies, 1);
  // The new /114, the withdrawn old one and the new one again, which stock peers take (protocol/nd.ts).
  t.is(e.udpReplies.len[0], 152, '40 bytes in, 152 out: under 4×, not 19×');
});
