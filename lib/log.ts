// One logger for every sixbed4 command: readable lines on a terminal, JSON
// (one object per line) where a machine reads them, as in a cluster.
import winston from 'winston';

export type LogFormat = 'text' | 'json' | 'auto';
export type Logger = winston.Logger;

export function createLogger(opts: { level?: string; format?: LogFormat; component: string }): Logger {
  const json =
    opts.format === 'json' ||
    (opts.format !== 'text' && !process.stderr.isTTY && process.env.KUBERNETES_SERVICE_HOST !== undefined);
  const text = winston.format.printf((info) => {
    const { level, message, timestamp, component, ...rest } = info as Record<string, unknown>;
    const extra = Object.entries(rest)
      .filter(([k]) => typeof k === 'string')
      .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
    return `${String(timestamp)} ${String(level)} [${String(component)}] ${String(message)}${extra.length ? ' ' + extra.join(' ') : ''}`;
  });
  return winston.createLogger({
    level: opts.level ?? process.env.SIXBED4_LOG_LEVEL ?? 'info',
    defaultMeta: { component: opts.component },
    format: winston.format.combine(winston.format.timestamp(), json ? winston.format.json() : text),
    // Logs go to stderr so that stdout stays for what a command prints as its result (plans, tables).
    transports: [
      new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly'] }),
    ],
  });
}
