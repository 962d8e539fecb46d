// Lets the test's Prometheus (in the root namespace) scrape an endpoint that listens on a network namespace's
// loopback (the agent's and the lab router's --metrics 127.0.0.1:PORT): a TCP port here, a Unix socket between
// (file system paths are shared across network namespaces), and a forwarder inside the namespace. HTTP passes
// through untouched.
import net from 'node:net';
import { rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { Netns } from '../../lab/netns.js';
import type { Proc } from '../../lab/proc.js';

const NS_SIDE = fileURLToPath(new URL('./scrape-bridge-ns.js', import.meta.url));

export interface ScrapeBridge {
  /** 127.0.0.1:PORT in the root namespace */ readonly address: string;
  close(): Promise<void>;
}

export async function bridgeOut(
  ns: Netns,
  inside: { host: string; port: number },
  socketPath: string,
): Promise<ScrapeBridge> {
  await rm(socketPath, { force: true });
  const proc: Proc = ns.spawn([process.execPath, NS_SIDE, socketPath, inside.host, String(inside.port)]);
  await proc.waitFor(/^bridging/, 5000);
  const open = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(socketPath);
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
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', resolve);
    });
  } catch (err) {
    await proc.stop();
    throw err;
  }
  const port = (server.address() as net.AddressInfo).port;
  return {
    address: `127.0.0.1:${port}`,
    async close() {
      for (const s of open) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      await proc.stop();
      await rm(socketPath, { force: true });
    },
  };
}
