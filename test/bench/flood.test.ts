// The router under a flood (bench/flood.ts, shortened): one source sends junk
// of every kind flat out while a legitimate peer pings the ISP every 10 ms.
// What must hold is meaning, not timing: the peer keeps (nearly) all its
// pings, nothing spoofed reaches the native side, the router's memory stays
// flat. Bounded: 3 s and at most 3 million datagrams.
import test from 'ava';
import { listNamespaces } from '../../lab/netns.js';
import { runFlood } from '../../bench/flood.js';
import { skipReason, title } from '../helpers/fixtures.js';

(skipReason ? test.skip : test)(
  title('under a junk flood a legitimate peer keeps its pings, nothing spoofed reaches the ISP, memory stays flat'),
  async (t) => {
    const before = new Set(await listNamespaces());
    const r = await runFlood({ durationS: 3, maxPackets: 3_000_000, tag: 'tflood' });
    t.log(JSON.stringify({ ...r, drops: undefined }));
    t.true(r.floodSent > 100_000, `the flood ran (${r.floodSent} datagrams, ${r.floodPps} pps)`);
    t.is(r.pingsSent, 300);
    // The bench figure is under 1%; a loaded test machine gets a generous margin.
    t.true(r.lossPct < 10, `legitimate peer lost ${r.lossPct}% of its pings`);
    t.is(r.spoofedAtIsp, 0, 'no packet with a spoofed source in the /64 reached the ISP');
    t.true(r.rssAfterMB - r.rssBeforeMB < 60, `router RSS ${r.rssBeforeMB.toFixed(0)} → ${r.rssAfterMB.toFixed(0)} MB`);
    t.true(
      (r.drops.spoofed ?? 0) > 0 && (r.drops.bad_destination ?? 0) > 0 && (r.drops.hop_limit ?? 0) > 0,
      'the junk reached every rule',
    );
    const leaked = (await listNamespaces()).filter((n) => !before.has(n) && n.includes('tflood'));
    t.deepEqual(leaked, []);
  },
);
