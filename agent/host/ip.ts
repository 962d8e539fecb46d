// iproute2 as the interface to the kernel's network configuration: every
// change sixbed4 makes is an `ip` or `sysctl` command a person could type,
// which is also what `host plan` prints.
import { execFile } from 'node:child_process';

export class CommandError extends Error {
  override name = 'CommandError';
  constructor(readonly argv: string[], readonly code: number | null, readonly stderr: string) {
    super(`'${argv.join(' ')}' failed: ${stderr.trim() || `exit ${code}`}`);
  }
}

/** Runs a command (with input on its stdin, if given), resolving stdout; rejects with CommandError carrying its stderr. */
export function run(argv: string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(argv[0]!, argv.slice(1), { timeout: opts.timeoutMs ?? 10_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new CommandError(argv, typeof err.code === 'number' ? err.code : null, stderr || err.message));
      else resolve(stdout);
    });
    if (opts.input !== undefined) {
      child.stdin?.on('error', () => undefined); // a command that exits early is reported by its exit status
      child.stdin?.end(opts.input);
    }
  });
}

export function ip(...args: string[]): Promise<string> {
  return run(['ip', ...args]);
}

/** `ip -j ...` parsed. */
export async function ipJson<T>(...args: string[]): Promise<T> {
  const out = await run(['ip', '-j', ...args]);
  return (out.trim() ? JSON.parse(out) : []) as T;
}

