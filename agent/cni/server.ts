// The agent's end of the sixbed4-cni shim: a Unix stream socket on the node (a hostPath, /run/sixbed4/cni.sock by
// default), one request per connection. The shim writes the request and shuts its side; the agent answers
// "ok\n" or "error\n" and the body the shim prints (agent/cni/README.md has the exchange).
//
// During a rolling update two agents run on a node for a moment. Each listens on a socket of its own beside the path
// (cni-<pid>-<random>.sock) and points the path, a symbolic link that connect() follows, at it with an atomic rename:
// the newest agent answers, and one that stops removes the link only while it still points at its own socket, so
// it never takes the successor's away. (Node.js unlinks a Unix socket's path when its server closes, whoever owns
// the path by then: a shared path would be deleted under the successor.)
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readdir, readlink, rename, symlink, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import client from 'prom-client';
import type { Logger } from '../../lib/log.js';
import { CNI, CniError, errorBody, parseRequest, type CniRequest, type CniResult } from './protocol.js';

/** What the agent does for each command; null: no output (DEL, CHECK, GC). */
export interface CniHandler {
  handle(req: CniRequest): Promise<CniResult | null>;
}

// The shim forwards a config of up to 1 MiB with the CNI variables around it.
const MAX_REQUEST = 2 << 20;

export interface CniMetrics {
  requests: client.Counter<'command' | 'result'>;
  addSeconds: client.Histogram<'result'>;
}

export function cniMetrics(registry: client.Registry): CniMetrics {
  return {
    requests: new client.Counter({
      name: 'sixbed4_cni_requests_total',
      help: 'CNI requests the agent answered, by command and result (ok, or the failure reason)',
      labelNames: ['command', 'result'],
      registers: [registry],
    }),
    addSeconds: new client.Histogram({
      name: 'sixbed4_cni_add_seconds',
      help: 'Time to answer a CNI ADD (claim, veth, addresses, routes, filter), by result',
      labelNames: ['result'],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
  };
}

/** Failure reason label: the CNI code's meaning, bounded to a few values. */
function reasonOf(code: number): string {
  const names: Record<number, string> = {
    [CNI.incompatibleVersion]: 'incompatible_version',
    [CNI.invalidEnv]: 'invalid_env',
    [CNI.decode]: 'decode',
    [CNI.invalidConfig]: 'invalid_config',
    [CNI.tryAgainLater]: 'try_again_later',
    [CNI.notOptedIn]: 'not_opted_in',
    [CNI.exhausted]: 'exhausted',
    [CNI.interfaceTaken]: 'interface_taken',
  };
  return names[code] ?? 'internal';
}

export interface CniServer {
  readonly path: string;
  close(): Promise<void>;
}

export async function startCniServer(
  path: string,
  handler: CniHandler,
  log: Logger,
  metrics?: CniMetrics,
): Promise<CniServer> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const own = `cni-${process.pid}-${randomBytes(4).toString('hex')}.sock`;
  // allowHalfOpen: the shim shuts its side after the request and reads the answer on the other.
  const server = net.createServer({ allowHalfOpen: true }, (sock) => {
    const chunks: Buffer[] = [];
    let size = 0;
    sock.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_REQUEST) {
        sock.destroy();
        return;
      }
      chunks.push(c);
    });
    sock.on('error', () => undefined);
    sock.on('end', () => {
      void answer(Buffer.concat(chunks).toString('utf8')).then((reply) => sock.end(reply));
    });
  });
  const answer = async (body: string): Promise<string> => {
    const t0 = process.hrtime.bigint();
    let req: CniRequest | undefined;
    let command = 'unknown';
    try {
      req = parseRequest(body);
      command = req.command;
      const result = await handler.handle(req);
      metrics?.requests.inc({ command, result: 'ok' });
      if (command === 'ADD') metrics?.addSeconds.observe({ result: 'ok' }, Number(process.hrtime.bigint() - t0) / 1e9);
      return `ok\n${result ? JSON.stringify(result) : ''}`;
    } catch (err) {
      const e =
        err instanceof CniError ? err : new CniError(CNI.tryAgainLater, `sixbed4 agent: ${(err as Error).message}`);
      const reason = reasonOf(e.code);
      metrics?.requests.inc({ command, result: reason });
      if (command === 'ADD')
        metrics?.addSeconds.observe({ result: reason }, Number(process.hrtime.bigint() - t0) / 1e9);
      const pod = req ? [req.args.K8S_POD_NAMESPACE, req.args.K8S_POD_NAME].filter(Boolean).join('/') : '';
      log.warn(`CNI ${command}${pod ? ` for pod ${pod}` : ''} failed: ${e.message}`, {
        code: e.code,
        container: req?.containerId,
      });
      return `error\n${JSON.stringify(errorBody(req?.config.cniVersion, e))}`;
    }
  };
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(join(dir, own), () => {
      server.off('error', reject);
      resolve();
    });
  });
  // Only root on the node talks to it (the runtime runs plugins as root).
  await chmod(join(dir, own), 0o600);
  const tmp = join(dir, `.${own}.link`);
  await symlink(own, tmp);
  await rename(tmp, path);
  log.info(`CNI requests on unix:${path} (-> ${own})`);
  return {
    path,
    async close() {
      const target = await readlink(path).catch(() => null);
      if (target === own) await unlink(path).catch(() => undefined);
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** Sockets of agents that are gone (a crash leaves its socket file): removed at start, except the live link's. */
export async function removeStaleSockets(path: string): Promise<void> {
  const dir = dirname(path);
  const live = await readlink(path).catch(() => null);
  for (const f of await readdir(dir).catch(() => [] as string[])) {
    if (!/^cni-(\d+)-[0-9a-f]{8}\.sock$/.test(f) || f === live || f === basename(path)) continue;
    const pid = Number(/^cni-(\d+)/.exec(f)![1]);
    if (pid === process.pid) continue;
    await unlink(join(dir, f)).catch(() => undefined);
  }
}
