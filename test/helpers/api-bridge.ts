// Lets a process inside a network namespace reach the test API server, which
// listens on the root namespace's loopback: a Unix socket (file system paths
// are shared across network namespaces) carries the TCP stream, with one
// forwarder on each side. TLS passes through untouched, so the kubeconfig's
// https://127.0.0.1:PORT works unchanged inside the namespace.
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { rm } from 'node:fs/promises';
import type { Netns } from '../../lab/netns.js';
import type { Proc } from '../../lab/proc.js';

const NS_SIDE = fileURLToPath(new URL('./api-bridge-ns.js', import.meta.url));

export interface ApiBridge {
  close(): Promise<void>;
}

/**
 * Bridges `listen` inside ns (default 127.0.0.1:port, so the kubeconfig's URL works unchanged) to the API server's
 * 127.0.0.1:port here. A node gives another listen address: the `kubernetes` Service's, which its pods use.
 */
export async function bridgeApiInto(
  ns: Netns,
  port: number,
  socketPath: string,
  listen: { host: string; port: number } = { host: '127.0.0.1', port },
): Promise<ApiBridge> {
  await rm(socketPath, { force: true });
  // Open streams (watches above all) never end by themselves: close() destroys them, or server.close() would wait forever.
  const open = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1');
    open.add(client);
    open.add(upstream);
    client.on('close', () => open.delete(client));
    upstream.on('close', () => open.delete(upstream));
    client.pipe(upstream).pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end);
    upstream.on('error', end);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, resolve);
  });
  let inside: Proc;
  try {
    inside = ns.spawn([process.execPath, NS_SIDE, String(listen.port), socketPath, listen.host]);
    await inside.waitFor(/^bridging/, 5000);
  } catch (err) {
    server.close();
    throw err;
  }
  return {
    async close() {
      await inside.stop();
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const sock of open) sock.destroy();
      await closed;
      await rm(socketPath, { force: true });
    },
  };
}
