// Prometheus text over HTTP: /metrics for scrapers, /healthz for probes.
import http from 'node:http';
import { rm } from 'node:fs/promises';
import client from 'prom-client';
import type { Logger } from './log.js';

export interface MetricsServer {
  readonly address: string;
  close(): Promise<void>;
}

/** Parses host:port ("127.0.0.1:9464", "[::1]:9464", ":9464" = all addresses). */
export function parseHostPort(text: string, what: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 1 || port > 65535)
    throw new Error(`${what} '${text}' is not host:port (for example 127.0.0.1:9464)`);
  return { host: m[1] ?? (m[2] || '::'), port };
}

/**
 * Serves /metrics and /healthz on listen: host:port, or an absolute path for a Unix socket (what a container's exec
 * probe asks: that container's own process, even while another one holds the TCP port on the host network).
 */
export async function startMetricsServer(
  listen: string,
  registry: client.Registry,
  log: Logger,
  healthy: () => boolean = () => true,
): Promise<MetricsServer> {
  const unixPath = listen.startsWith('/') ? listen : null;
  const { host, port } = unixPath ? { host: '', port: 0 } : parseHostPort(listen, '--metrics');
  if (unixPath) await rm(unixPath, { force: true }); // a socket file left by an earlier process of this container
  const server = http.createServer((req, res) => {
    if (req.url === '/metrics') {
      registry.metrics().then(
        (body) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(body);
        },
        (err: Error) => {
          res.writeHead(500);
          res.end(String(err.message));
        },
      );
    } else if (req.url === '/healthz') {
      const ok = healthy();
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' });
      res.end(ok ? 'ok\n' : 'not ready\n');
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise<void>((resolve, reject) => {
    // The errno code goes along (EADDRINUSE: callers wait for a predecessor to let go), the message says it in words.
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        Object.assign(
          new Error(`cannot serve metrics on ${listen}: ${err.code === 'EADDRINUSE' ? 'port in use' : err.message}`),
          { code: err.code },
        ),
      ),
    );
    if (unixPath) server.listen(unixPath, () => resolve());
    else server.listen(port, host, () => resolve());
  });
  const address = unixPath ?? `${host.includes(':') ? `[${host}]` : host}:${port}`;
  log.info(unixPath ? `metrics and /healthz on unix:${address}` : `metrics on http://${address}/metrics`);
  return { address, close: () => new Promise((r) => server.close(() => r())) };
}
