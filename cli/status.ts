// `sixbed4 status [--config FILE | --metrics H:P]`: the running router, summarised from its metrics endpoint.
import { existsSync } from 'node:fs';
import http from 'node:http';
import { InputError } from '../lib/errors.js';
import { parseHostPort } from '../lib/metrics-server.js';
import { DEFAULT_CONFIG_PATH, loadServiceConfig } from '../agent/service/config.js';
import { parsePrometheus, summarize } from '../agent/service/status.js';
import { DEFAULT_METRICS_PORT } from '../kube/api.js';
import { COMMON_OPTIONS, parseFlags } from './command.js';

export async function statusCommand(args: string[]): Promise<number> {
  const { values } = parseFlags('status', args, {
    config: { type: 'string', short: 'c' },
    metrics: { type: 'string' },
    help: COMMON_OPTIONS.help,
  });
  if (values.help) {
    process.stdout.write('usage: sixbed4 status [--config FILE | --metrics HOST:PORT]\n');
    return 0;
  }
  if (values.config && values.metrics) throw new InputError('give --config or --metrics, not both');
  let target = values.metrics;
  if (!target) {
    const file = values.config ?? (existsSync(DEFAULT_CONFIG_PATH) ? DEFAULT_CONFIG_PATH : undefined);
    target = file ? (await loadServiceConfig(file)).metrics : `127.0.0.1:${DEFAULT_METRICS_PORT}`;
  }
  const { host, port } = parseHostPort(target, '--metrics');
  // 0.0.0.0 / :: mean every address of this host: ask the loopback one.
  const ask = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  const text = await get(ask, port).catch((err: NodeJS.ErrnoException) => {
    throw new InputError(
      `no sixbed4 router answers on ${target} (${err.code ?? err.message}): is it running (systemctl status sixbed4-router)? ` +
        'Its metricsAddress and metricsPort are in its config file (--config FILE)',
    );
  });
  process.stdout.write(summarize(parsePrometheus(text), target, Date.now() / 1000));
  return 0;
}

function get(host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path: '/metrics', timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`HTTP ${res.statusCode}`))));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
  });
}
