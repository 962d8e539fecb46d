// `sixbed4 peer --hook SCRIPT`: tells a script of the user's when the peer's
// address or routes come and go, in the spirit of the stock peer's `-x`
// (add-range-offer, add-route-offer, del-offers) but in a form of our own:
//
//   SCRIPT add ADDRESS PREFIX/114        the address is on the tunnel interface (at start, after a move)
//   SCRIPT remove ADDRESS PREFIX/114     it is gone (a move: before the add of the new one; and on stop)
//   SCRIPT route-add PREFIX/LEN          a route the router announced is on the tunnel interface
//   SCRIPT route-remove PREFIX/LEN       it is gone (no longer announced; and on stop)
//
// with the same in the environment (SIXBED4_EVENT, SIXBED4_ADDRESS, SIXBED4_PREFIX, SIXBED4_ROUTE) and the context:
// SIXBED4_TUN (the interface), SIXBED4_ROUTER (IPV4:PORT), SIXBED4_MAPPING (the public IPV4:PORT the router saw,
// which the address embeds), SIXBED4_PID (the peer's process id, as the stock hook's first argument).
//
// Hooks run one at a time, in the order of the events, never blocking the packet path; each gets a time limit,
// after which its whole process group is killed. Their output is logged line by line; a hook that fails, cannot
// start or runs too long is logged and the peer goes on: a hook is a notification, never a condition.
import { spawn } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { InputError } from '../../lib/errors.js';
import type { Logger } from '../../lib/log.js';

export type HookEvent = 'add' | 'remove' | 'route-add' | 'route-remove';

/** Grace between SIGTERM at the time limit and SIGKILL, for a hook that cleans up after itself. */
const KILL_GRACE_MS = 2000;

/** Checks --hook: an executable file, as an absolute path (the peer may change directory; the hook must not move). */
export function checkHook(path: string): string {
  const abs = resolve(path);
  try {
    if (!statSync(abs).isFile()) throw new InputError(`--hook ${path} is not a file`);
    accessSync(abs, constants.X_OK);
  } catch (err) {
    if (err instanceof InputError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw new InputError(
      code === 'ENOENT'
        ? `--hook ${path}: no such file`
        : code === 'EACCES'
          ? `--hook ${path} is not executable (chmod +x ${path})`
          : `--hook ${path}: ${(err as Error).message}`,
    );
  }
  return abs;
}

export class HookRunner {
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly script: string,
    private readonly timeoutMs: number,
    private readonly context: Record<string, string>,
    private readonly log: Logger,
  ) {}

  /** Queues SCRIPT EVENT ARGS...; resolves when it (and everything queued before it) has ended. */
  run(event: HookEvent, args: string[], env: Record<string, string>): Promise<void> {
    this.chain = this.chain.then(() => this.once(event, args, env));
    return this.chain;
  }

  /** Resolves once every queued hook has ended. */
  idle(): Promise<void> {
    return this.chain;
  }

  private once(event: HookEvent, args: string[], env: Record<string, string>): Promise<void> {
    const meta = { hook: this.script, event };
    return new Promise<void>((done) => {
      let child;
      try {
        // Its own process group: at the time limit the hook goes with everything it started.
        child = spawn(this.script, [event, ...args], {
          env: { ...process.env, ...this.context, ...env, SIXBED4_EVENT: event },
          stdio: ['ignore', 'pipe', 'pipe'],
          detached: true,
        });
      } catch (err) {
        this.log.error(`hook could not start: ${(err as Error).message}`, meta);
        done();
        return;
      }
      const pid = child.pid;
      const lines = (stream: NodeJS.ReadableStream, level: 'info' | 'warn') =>
        createInterface({ input: stream }).on('line', (line) => this.log[level](`hook: ${line}`, meta));
      lines(child.stdout!, 'info');
      lines(child.stderr!, 'warn');
      let timedOut = false;
      const killGroup = (sig: NodeJS.Signals) => {
        try {
          if (pid) process.kill(-pid, sig);
        } catch {
          /* already gone */
        }
      };
      const timer = setTimeout(() => {
        timedOut = true;
        this.log.warn(`hook still running after ${this.timeoutMs} ms: killing it`, meta);
        killGroup('SIGTERM');
        setTimeout(() => killGroup('SIGKILL'), KILL_GRACE_MS).unref();
      }, this.timeoutMs);
      child.on('error', (err) => {
        clearTimeout(timer);
        this.log.error(`hook could not start: ${err.message}`, meta);
        done();
      });
      // 'close', not 'exit': the output is all read (and logged) by then.
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        // Whatever it left behind in its group goes too.
        if (timedOut) killGroup('SIGKILL');
        if (timedOut) this.log.warn(`hook killed after ${this.timeoutMs} ms (${signal ?? `exit ${code}`})`, meta);
        else if (code !== 0)
          this.log.warn(`hook failed (${signal ? `killed by ${signal}` : `exit ${code}`}); the peer goes on`, meta);
        else this.log.debug('hook done', meta);
        done();
      });
    });
  }
}
