// Running a command to completion: the one way the agent, the lab and the
// tests do it. Commands never go through a shell: argv arrays are passed
// verbatim, so addresses, names and scripts (`node -e ...`) need no quoting.
// A child's PATH has no node_modules/.bin entries (tools.ts says why).
import { spawn } from 'node:child_process';
import { cleanPath } from './tools.js';

/** A finished command. `code` is null when it was killed by a signal. */
export interface CommandResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** True when the command was killed because it exceeded `timeoutMs`. */
  timedOut: boolean;
}

export interface CommandOptions {
  /** Kill (SIGKILL) the command after this many ms. Default 60 s; 0 = never. */
  timeoutMs?: number;
  /** Written to the command's stdin, which is then closed; otherwise stdin is /dev/null. */
  input?: string | Buffer;
  /** Extra environment variables, merged over process.env (with the cleaned PATH unless PATH is given here). */
  env?: Record<string, string>;
  cwd?: string;
}

const DEFAULT_TIMEOUT_MS = 60_000;

/**
 * A command that could not be started, or did not exit 0. The message names
 * the command, how it ended and what it said:
 * `command exited with status 2: ip link del dev x: Cannot find device "x"`.
 */
export class CommandError extends Error {
  override name = 'CommandError';
  constructor(
    readonly argv: readonly string[],
    /** Exit status; null when killed by a signal, timed out, or never started. */
    readonly code: number | null,
    /** What it printed on stderr (or why it could not be started). */
    readonly stderr: string,
    how = code === null ? 'failed' : `exited with status ${code}`,
    detail = stderr,
  ) {
    const text = detail.trim();
    const said = text.length > 4000 ? `...${text.slice(-4000)}` : text;
    // Several lines of output start on a line of their own.
    super(`command ${how}: ${formatArgv(argv)}${said === '' ? '' : said.includes('\n') ? `\n${said}` : `: ${said}`}`);
  }

  /** The error for a finished command's result (its stdout stands in for an empty stderr). */
  static fromResult(argv: readonly string[], r: CommandResult, timeoutMs: number): CommandError {
    const how = r.timedOut
      ? `timed out after ${timeoutMs} ms`
      : r.code === null
        ? `was killed by ${r.signal}`
        : `exited with status ${r.code}`;
    return new CommandError(argv, r.code, r.stderr, how, r.stderr.trim() || r.stdout);
  }
}

/** A command line for messages (not meant for a shell). */
export function formatArgv(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
}

/** A child's environment: PATH without node_modules/.bin (tools.ts says why). */
export function childEnv(extra: Record<string, string> | undefined): NodeJS.ProcessEnv {
  return { ...process.env, PATH: cleanPath(process.env.PATH), ...extra };
}

/**
 * Runs argv to completion and collects its output. Only rejects (with a
 * CommandError) when the command cannot be started at all; a non-zero exit
 * status is reported in the result, not thrown.
 */
export function execCommand(argv: readonly string[], opts: CommandOptions = {}): Promise<CommandResult> {
  const [cmd, ...args] = argv;
  if (cmd === undefined) return Promise.reject(new Error('execCommand: empty argv'));
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      env: childEnv(opts.env),
      cwd: opts.cwd,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const timer =
      timeoutMs > 0
        ? setTimeout(() => {
            timedOut = true;
            child.kill('SIGKILL');
          }, timeoutMs)
        : undefined;
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new CommandError(argv, null, e.message, 'could not be started'));
    });
    let graceTimer: NodeJS.Timeout | undefined;
    const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
      clearTimeout(timer);
      clearTimeout(graceTimer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        timedOut,
      });
    };
    // Normally wait for 'close' so that all output has been read; but a
    // background grandchild that inherited the pipes would delay it forever.
    child.on('exit', (code, signal) => {
      graceTimer = setTimeout(() => {
        child.stdout!.destroy();
        child.stderr!.destroy();
        finish(code, signal);
      }, 1000);
    });
    child.on('close', finish);
    if (opts.input !== undefined) {
      // A command that exits without reading stdin gives EPIPE; its exit status says what happened.
      child.stdin!.on('error', () => undefined);
      child.stdin!.end(opts.input);
    }
  });
}

/** Like execCommand, but resolves with stdout only when the command exits 0; otherwise rejects with a CommandError. */
export async function runCommand(argv: readonly string[], opts: CommandOptions = {}): Promise<string> {
  const r = await execCommand(argv, opts);
  if (r.code !== 0) throw CommandError.fromResult(argv, r, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  return r.stdout;
}
