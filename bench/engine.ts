// The forwarding engine alone, without the kernel: how long the JavaScript
// rules take per packet on a full batch, in both directions. Shows how small
// the part is that we control next to the kernel's per-packet work.
// Run: npm run bench:engine (no root needed).
import os from 'node:os';
import { Engine } from '../agent/router/engine.js';
import { makeAddress } from '../agent/protocol/address.js';
import { parseIPv4, parseIPv6, parsePrefix64 } from '../lib/ip.js';
import { writeHeader } from '../agent/protocol/ipv6.js';

const BATCH = 64;
const prefix = parsePrefix64('2001:db8:9:10::/64');
const engine = new Engine({ prefix, listenIPv4: parseIPv4('203.0.113.1'), port: 25790, routes: [] }, BATCH);
const peerV4 = parseIPv4('203.0.113.2');
const peer = makeAddress(prefix.bytes, peerV4, 40000, 1);
const isp = parseIPv6('2001:db8:ffff::1');
for (let i = 0; i < BATCH; i++) {
  const u = engine.udpRx,
    k = engine.tunRx;
  u.off[i] = i * u.slot;
  u.len[i] = 48;
  u.addr[i] = peerV4;
  u.port[i] = 40000;
  writeHeader(u.data, u.off[i]!, 8, 17, 64, peer, isp);
  k.off[i] = i * k.slot;
  k.len[i] = 48;
  writeHeader(k.data, k.off[i]!, 8, 17, 64, isp, peer);
}

/** Forwarding decrements the hop limit in place; put it back so every round sees the same packets. */
function resetHops(): void {
  for (let i = 0; i < BATCH; i++) {
    engine.udpRx.data[engine.udpRx.off[i]! + 7] = 64;
    engine.tunRx.data[engine.tunRx.off[i]! + 7] = 64;
  }
}

function measure(name: string, step: () => void): void {
  const rounds = 200_000;
  for (let i = 0; i < 20_000; i++) {
    step();
    resetHops();
  } // warm-up: let V8 optimise
  const reset0 = process.hrtime.bigint();
  for (let i = 0; i < rounds; i++) resetHops();
  const resetNs = Number(process.hrtime.bigint() - reset0);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < rounds; i++) {
    step();
    resetHops();
  }
  const ns = (Number(process.hrtime.bigint() - t0) - resetNs) / (rounds * BATCH);
  console.log(
    `${name.padEnd(34)} ${ns.toFixed(1).padStart(6)} ns/packet  ${(1e3 / ns).toFixed(1).padStart(6)} M packets/s`,
  );
}

console.log(`engine only, batch ${BATCH}, 48-byte packets; ${os.cpus()[0]?.model ?? 'cpu'}, node ${process.version}`);
measure('peers → kernel (fromPeers)', () => engine.fromPeers(BATCH, 1));
measure('kernel → peers (fromKernel)', () => engine.fromKernel(BATCH, 1));
if (engine.nToTun !== BATCH || engine.nToPeers !== BATCH) throw new Error('the engine did not forward every packet');
