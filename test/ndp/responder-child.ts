// The neighbour proxy as a process, for tests that run it inside a namespace
// (the lead wires it into the router; until then this is its only process).
// argv: UPLINK MODE [PREFIX]; stdin lines: "add ADDR", "remove ADDR",
// "counters"; stdout: "ready", and "counters {json}" on request.
import { createInterface } from 'node:readline';
import { createLogger } from '../../lib/log.js';
import { parseIPv6, parsePrefix64 } from '../../lib/ip.js';
import { NdpResponder, type ResponderMode } from '../../agent/ndp/responder.js';

const [uplink, mode, prefix] = process.argv.slice(2);
const log = createLogger({ component: 'ndp', format: 'text', level: process.env.SIXBED4_LOG_LEVEL ?? 'debug' });
const responder = new NdpResponder(uplink!, log, {
  mode: mode as ResponderMode,
  ...(prefix ? { prefix: parsePrefix64(prefix) } : {}),
});
await responder.start();
process.stdout.write('ready\n');
const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const [cmd, arg] = line.trim().split(/\s+/);
  if (cmd === 'add') responder.add(parseIPv6(arg!));
  else if (cmd === 'remove') responder.remove(parseIPv6(arg!));
  else if (cmd === 'counters')
    process.stdout.write(`counters ${JSON.stringify({ ...responder.counters(), answering: responder.answering })}\n`);
  process.stdout.write(`ok ${line.trim()}\n`);
});
const stop = () => {
  void responder.stop().then(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
rl.on('close', stop); // the test went away: do not linger in a namespace being deleted
