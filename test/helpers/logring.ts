// The last lines of a log, kept so that a failing test can show them (t.log in
// a teardown that looks at t.passed) instead of every run printing everything.
import { Writable } from 'node:stream';
import winston from 'winston';
import type { ExecutionContext } from 'ava';
import type { Logger } from '../../lib/log.js';

export class LogRing {
  private readonly buf: string[] = [];
  constructor(readonly size = 300) {}

  push(line: string): void {
    this.buf.push(line);
    if (this.buf.length > this.size) this.buf.splice(0, this.buf.length - this.size);
  }

  tail(n = this.size): string[] {
    return this.buf.slice(-n);
  }
}

/** A winston logger (the product's format: JSON lines) that writes into a ring instead of the console. */
export function ringLogger(ring: LogRing, component: string, level = 'debug'): Logger {
  return winston.createLogger({
    level,
    defaultMeta: { component },
    format: winston.format.combine(winston.format.timestamp(), winston.format.json()),
    transports: [
      new winston.transports.Stream({
        stream: new Writable({
          write(chunk: Buffer, _enc, cb) {
            for (const l of chunk.toString('utf8').split('\n')) if (l) ring.push(l);
            cb();
          },
        }),
      }),
    ],
  });
}

/** On failure, t.log the last lines of each named log (ava runs teardowns after the verdict, so t.passed is final). */
export function logOnFailure(t: ExecutionContext, logs: () => Record<string, readonly string[]>, n = 80): void {
  t.teardown(() => {
    if (t.passed) return;
    for (const [name, lines] of Object.entries(logs()))
      t.log(`last ${Math.min(n, lines.length)} lines of ${name}:\n${lines.slice(-n).join('\n')}`);
  });
}
