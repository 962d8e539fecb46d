// Runs `sixbed4 operator` as its own process for the tests, through the same
// operatorCommand() that agent/cli/main.ts calls (used when main.js does not
// know the operator command yet). Exit codes and errors as in main.ts.
import { operatorCommand } from '../../agent/cli/operator.js';
import { InputError } from '../../agent/protocol/ip.js';

operatorCommand(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (err: Error) => {
  process.stderr.write(`sixbed4: ${err.message}\n`);
  process.exitCode = err instanceof InputError ? 2 : 1;
});
