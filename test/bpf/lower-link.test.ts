// Whether the fast path may take packets from the kernel to peers depends on the uplink finishing their checksums
// (fastpath.ts whyNotToPeers). A failover member's uplink is a macvlan, which always says tx-checksumming on (fixed)
// and has no device: its lower link is what counts. Found on the real-node failover test: to-peers was off on every
// member, even over NICs. Here a macvlan over a veth, in a namespace of the test's own: with the veth's checksum
// offload on, the reason names both; off, to-peers may run.
import { randomBytes } from 'node:crypto';
import { Netns } from '../../lab/netns.js';
import { rootTest, title } from '../helpers/fixtures.js';

const FASTPATH = new URL('../../agent/bpf/fastpath.js', import.meta.url).href;

/** whyNotToPeers(dev) as the router would see it, run inside ns (it reads that namespace's /sys/class/net). */
async function why(ns: Netns, dev: string): Promise<string> {
  const code = `import(${JSON.stringify(FASTPATH)}).then((m) => console.log(JSON.stringify([m.lowestLink(${JSON.stringify(dev)}), m.whyNotToPeers(${JSON.stringify(dev)}) ?? null])))`;
  const r = await ns.exec([process.execPath, '--input-type=module', '-e', code]);
  if (r.code !== 0) throw new Error(r.stderr);
  return r.stdout.trim();
}

rootTest(title("a macvlan's checksum offload is its lower link's"), async (t) => {
  const ns = await Netns.create(`s4-lowl-${randomBytes(3).toString('hex')}`);
  t.teardown(() => ns.destroy());
  await ns.ipBatch(['link add up0 type veth peer name up1', 'link add link up0 name mv0 type macvlan mode bridge']);
  await ns.run(['ethtool', '-K', 'up0', 'tx', 'on']);
  const on = JSON.parse(await why(ns, 'mv0')) as [string, string | null];
  t.is(on[0], 'up0');
  t.regex(on[1] ?? '', /^mv0 sends through up0: up0 is a virtual interface .*tx-checksumming on/);
  await ns.run(['ethtool', '-K', 'up0', 'tx', 'off']);
  t.deepEqual(JSON.parse(await why(ns, 'mv0')), ['up0', null], 'the lower link finishes checksums: to-peers may run');
  // A plain veth is its own lowest link, judged as before.
  const plain = JSON.parse(await why(ns, 'up1')) as [string, string | null];
  t.is(plain[0], 'up1');
  t.regex(plain[1] ?? '', /^up1 is a virtual interface/);
});
