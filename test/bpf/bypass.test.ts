// What the fast path bypasses on the host: the nftables chains with rules at
// the hooks the programs skip (agent/bpf/bypass.ts), read from a real ruleset
// in a namespace this test makes.
import test from 'ava';
import { Netns, uniqueName } from '../../lab/netns.js';
import { findSystemTool } from '../../agent/host/tools.js';
import { bypassedChains } from '../../agent/bpf/bypass.js';
import { requireRootReason } from '../../lab/topology.js';

const skip = requireRootReason() ?? (findSystemTool('nft') ? null : 'needs nft');
const rootTest = skip ? test.skip : test;
const t_ = (name: string) => (skip ? `${name} (skipped: ${skip})` : name);

const RULESET = `
table inet fw {
  chain input { type filter hook input priority filter; udp dport 25790 drop; }
  chain forw { type filter hook forward priority filter; counter accept; }
  chain idle { type filter hook output priority filter; }
}
table ip nat {
  chain post { type nat hook postrouting priority srcnat; oifname "wan0" masquerade; }
}
table ip6 six {
  chain out { type filter hook output priority filter; counter accept; }
}
`;

rootTest(
  t_(
    "chains with rules at prerouting/input (peers' datagrams), output/postrouting (the router's) and, for direct, IPv6 forward: named; empty ones not",
  ),
  async (t) => {
    const ns = await Netns.create(uniqueName('bypass'));
    try {
      await ns.run([findSystemTool('nft')!, '-f', '-'], { input: RULESET });
      const b = bypassedChains(await ns.run([findSystemTool('nft')!, '-j', 'list', 'ruleset']));
      t.deepEqual(b, {
        receive: ['inet fw input (input)'],
        send: ['ip nat post (postrouting)'],
        forward: ['inet fw forw (forward)'],
      });
      await ns.run([findSystemTool('nft')!, 'flush', 'ruleset']);
      t.deepEqual(
        bypassedChains(await ns.run([findSystemTool('nft')!, '-j', 'list', 'ruleset'])),
        { receive: [], send: [], forward: [] },
        'no ruleset: nothing',
      );
    } finally {
      await ns.destroy();
    }
  },
);
