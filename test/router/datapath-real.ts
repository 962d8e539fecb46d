// The datapath scenarios on real sockets and a real TUN: run by
// datapath.test.ts as root inside a network namespace it made
// (`ip netns exec NS node datapath-real.js`). Prints one JSON object:
// scenario name -> { ok: observations } or { error: what went wrong }. With --offload, the tunnel has the TUN
// offload, as the router opens it.
import { SCENARIOS } from './datapath-scenarios.js';
import { prepareNamespace, realRig } from './datapath-rig.js';

async function main(): Promise<void> {
  await prepareNamespace();
  const results: Record<string, { ok: unknown } | { error: string }> = {};
  // One at a time: each has the tunnel, the router's port and the peers' ports to itself.
  for (const s of SCENARIOS) {
    try {
      const rig = await realRig(process.argv.includes('--offload'));
      try {
        results[s.name] = { ok: await s.drive(rig) };
      } finally {
        await rig.close();
      }
    } catch (err) {
      results[s.name] = { error: err instanceof Error ? (err.stack ?? err.message) : String(err) };
    }
  }
  process.stdout.write(JSON.stringify(results) + '\n');
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
