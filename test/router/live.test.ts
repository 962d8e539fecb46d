import test from 'ava';
import fc from 'fast-check';
import { LivePeers } from '../../agent/router/live.js';

test('peers appear once, stay while seen, and expire after the TTL', (t) => {
  const live = new LivePeers(16, 1000);
  live.touch(0xc6336414, 40000, 0);
  live.touch(0xc6336414, 40000, 500);
  live.touch(0xcb007102, 51000, 600);
  t.is(live.size, 2);
  t.deepEqual(live.takeAdded(), [
    { ipv4: 0xc6336414, port: 40000 },
    { ipv4: 0xcb007102, port: 51000 },
  ]);
  t.deepEqual(live.expire(700), []);
  live.touch(0xcb007102, 51000, 1500);
  live.touch(0x01020304, 7, 1550);
  t.deepEqual(live.expire(1600), [{ ipv4: 0xc6336414, port: 40000 }]);
  t.is(live.size, 2);
  t.deepEqual(
    live.takeAdded(),
    [{ ipv4: 0x01020304, port: 7 }],
    'a pending addition survives an expiry, re-inserted peers are not new',
  );
});

test('a full table stops tracking instead of growing', (t) => {
  const live = new LivePeers(4, 1000);
  for (let p = 1; p <= 10; p++) live.touch(1, p, 0);
  t.is(live.size, 4);
  t.is(live.untracked, 6);
});

test('property: size equals the number of distinct peers seen within the TTL', (t) => {
  fc.assert(
    fc.property(
      fc.array(
        fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 1, max: 5 }), fc.integer({ min: 0, max: 3000 })),
      ),
      (events) => {
        const live = new LivePeers(64, 1000);
        const sorted = [...events].sort((a, b) => a[2] - b[2]);
        for (const [v4, port, ts] of sorted) live.touch(v4, port, ts);
        const now = 3000;
        live.expire(now);
        const last = new Map<string, number>();
        for (const [v4, port, ts] of sorted) last.set(`${v4}:${port}`, ts);
        return live.size === [...last.values()].filter((ts) => now - ts <= 1000).length;
      },
    ),
  );
  t.pass();
});

test('port 0 is never tracked: it marks empty slots, and such an entry would never expire', (t) => {
  const live = new LivePeers(4, 1000);
  for (let v4 = 1; v4 <= 10; v4++) live.touch(v4, 0, 0);
  t.is(live.size, 0);
  t.deepEqual(live.takeAdded(), []);
  live.touch(1, 40000, 0);
  t.is(live.size, 1, 'real peers still find room');
});

test('one IPv4 holds at most its share of entries, whatever number of ports it uses', (t) => {
  const live = new LivePeers(65536, 120_000, { perIPv4: 64, newPerSecond: 1e9, newBurst: 1e9 });
  for (let p = 1; p <= 65535; p++) live.touch(0xc6336414, p, 0);
  t.is(live.size, 64);
  live.touch(0xcb007102, 51000, 0);
  t.is(live.size, 65, 'another IPv4 still gets in');
  t.is(live.untracked, 65535 - 64);
});

test('new entries are admitted at a bounded rate: a flood of spoofed sources cannot fill the table within the TTL', (t) => {
  const live = new LivePeers(65536, 120_000, { perIPv4: 64, newPerSecond: 200, newBurst: 1000 });
  // 100,000 distinct IPv4 sources per second for the whole TTL.
  for (let s = 0; s < 120; s++)
    for (let k = 0; k < 1000; k++) live.touch((s * 1000 + k + 1) >>> 0, 40000, s * 1000 + k);
  t.true(live.size <= 1000 + 200 * 120, `${live.size} entries`);
  t.true(live.size < 65536 / 2);
});
