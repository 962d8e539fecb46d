// Floods from many sources (bench/flood.ts with spoof): random IPv4s and ports, so they spread over every
// SO_REUSEPORT socket, the /64 ones valid-looking 6bed4 peers that pass the originator check. What must hold is
// meaning: the router is alive after the flood, a legitimate peer behind the NAT still reaches the native side, the
// router's memory stays bounded, no periodic task failed. Loss figures are the bench's (npm run bench -- --only flood).
import test from 'ava';
import { listNamespaces } from '../../lab/netns.js';
import { runFlood, type FloodResult } from '../../bench/flood.js';
import { skipReason } from '../helpers/fixtures.js';
import { findSystemTool } from '../../agent/host/tools.js';

const skip =
  skipReason ??
  (findSystemTool('ethtool') ? null : 'needs ethtool (the fast path needs full UDP checksums on the wire)');
const serial = skip ? test.serial.skip : test.serial;
const named = (name: string) => (skip ? `${name} (skipped: ${skip})` : name);
/** The seen map's size (agent/bpf/fastpath.bpf.h). */
const SEEN_MAX = 65536;

function reachableAfter(t: { true(v: boolean, m?: string): void }, r: FloodResult): void {
  t.true(r.routerAlive, `the router is alive after the flood${r.routerOutput ? `; its log:\n${r.routerOutput}` : ''}`);
  // After the flood the network is quiet: the peer's pings all but all arrive (one lost to a timer is no failure).
  t.true(
    r.afterReceived >= r.afterSent * 0.9,
    `the peer reaches the ISP after the flood: ${r.afterReceived}/${r.afterSent}`,
  );
}

serial(
  named('fast path: valid-looking sources overfill the seen map; the router lives and forwards the peer after'),
  async (t) => {
    const before = new Set(await listNamespaces());
    // Only datagrams the fast path forwards (and notes in its seen map), each from a new source: the map (65,536) is
    // full within the first second and overflows for the rest, while the router drains it once a second.
    // Sized by count, not time (the machine may be slow): 300,000 sources, the time cap far beyond what that takes.
    const r = await runFlood({
      durationS: 8,
      maxPackets: 300_000,
      tag: 'fsrc',
      spoof: true,
      fastPath: true,
      kinds: ['spoofedInPrefix'],
      afterPings: 100,
    });
    t.log(JSON.stringify(r, (k, v: unknown) => (k === 'routerOutput' ? undefined : v)));
    reachableAfter(t, r);
    // Up to 300,000; a busy machine's flooders may stop short at the time cap: three times the map overfills it as well.
    t.true(r.floodSent >= 3 * SEEN_MAX, `the flood offered ${r.floodSent} sources, over three times the seen map`);
    t.true(
      r.spoofedAtIsp > SEEN_MAX,
      `the fast path forwarded (and noted) ${r.spoofedAtIsp} of them, more than the seen map holds`,
    );
    t.deepEqual(r.taskFailures, {}, 'no periodic task failed');
    t.true(r.rssAfterMB - r.rssBeforeMB < 60, `router RSS ${r.rssBeforeMB.toFixed(0)} → ${r.rssAfterMB.toFixed(0)} MB`);
    // Its own namespaces only (s4-<tag>-...): the file's other tests run beside it with theirs.
    const leaked = (await listNamespaces()).filter((n) => !before.has(n) && n.startsWith('s4-fsrc-'));
    t.deepEqual(leaked, []);
  },
);

for (const fastPath of [false, true]) {
  serial(
    named(
      `${fastPath ? 'fast path' : 'TypeScript path'}: a million junk datagrams from many sources; the router lives, the peer is reached after, memory bounded`,
    ),
    async (t) => {
      const before = new Set(await listNamespaces());
      // Every kind of junk.ts, from random sources spread over every socket (the /64 ones valid-looking 6bed4 peers), as
      // fast as two flooders go, up to a million; the peer pings all along (the bench prints the loss figures).
      const r = await runFlood({
        durationS: 4,
        maxPackets: 1_000_000,
        tag: fastPath ? 'fsrcf' : 'fsrct',
        spoof: true,
        fastPath,
        flooders: 2,
        pingS: 8,
        afterPings: 100,
      });
      t.log(JSON.stringify(r, (k, v: unknown) => (k === 'routerOutput' ? undefined : v)));
      reachableAfter(t, r);
      t.true(r.floodSent > 100_000, `the flood ran (${r.floodSent} datagrams, ${r.floodPps} pps)`);
      t.true(
        (r.drops.spoofed ?? 0) > 0 && (r.drops.hop_limit ?? 0) > 0 && (r.drops.nd_invalid ?? 0) > 0,
        "the junk reached the router's rules",
      );
      t.deepEqual(r.taskFailures, {}, 'no periodic task failed');
      t.true(
        r.rssAfterMB - r.rssBeforeMB < 60,
        `router RSS ${r.rssBeforeMB.toFixed(0)} → ${r.rssAfterMB.toFixed(0)} MB`,
      );
      t.deepEqual(
        (await listNamespaces()).filter((n) => !before.has(n) && n.startsWith(`s4-${fastPath ? 'fsrcf' : 'fsrct'}-`)),
        [],
      );
    },
  );
}
