// `sixbed4 host ...` as a process, for tests that run it inside a namespace:
// the same error handling as agent/cli/main.ts (one line, exit 2 for input
// errors). Once main.ts dispatches `host`, tests can run the real CLI instead.
import { hostCommand } from '../../agent/cli/host.js';
import { InputError } from '../../agent/protocol/ip.js';

hostCommand(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (err: Error) => {
  process.stderr.write(`sixbed4: ${err.message}\n`);
  process.exitCode = err instanceof InputError ? 2 : 1;
});
