// The fast path's self-test sends one made-up peer's packet each way through the loaded programs; that peer must be
// one the router sends to. A failover member holds its own address beside the floating one, often the next one up:
// with the plain neighbour (address ^ 1) refused, to-peers answered -1 and Auto fell back on that node (found on the
// real-node failover test: 198.51.100.10 ^ 1 = .11, edge-1's own address).
import test from 'ava';
import { selfTestPeer } from '../../agent/bpf/fastpath.js';
import { formatIPv4, parseIPv4 } from '../../lib/ip.js';

const one = (a: string) => ({ start: parseIPv4(a), end: parseIPv4(a) });

test('the self-test peer is a neighbour of the bind address that the router does not refuse', (t) => {
  const bindIPv4 = parseIPv4('198.51.100.10');
  t.is(formatIPv4(selfTestPeer({ bindIPv4, refused: [] })), '198.51.100.11');
  t.is(formatIPv4(selfTestPeer({ bindIPv4, refused: [one('198.51.100.11')] })), '198.51.100.8');
  const all = [{ start: parseIPv4('198.51.100.0'), end: parseIPv4('198.51.100.255') }];
  t.is(formatIPv4(selfTestPeer({ bindIPv4, refused: [one('198.51.100.11'), one('198.51.100.8')] })), '198.51.100.9');
  t.is(formatIPv4(selfTestPeer({ bindIPv4, refused: all })), '198.51.100.11', 'all refused: the test will say so');
  // Never the network or broadcast host part.
  const low = parseIPv4('203.0.113.1');
  t.is(formatIPv4(selfTestPeer({ bindIPv4: low, refused: [] })), '203.0.113.3');
});
