// The namespace side of scrape-bridge.ts: a Unix socket here → HOST:PORT inside the namespace (a metrics endpoint
// that listens on the namespace's own loopback).
import net from 'node:net';

const [socketPath, host, port] = process.argv.slice(2);
const server = net.createServer((client) => {
  const upstream = net.connect(Number(port), host!);
  client.pipe(upstream).pipe(client);
  const end = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on('error', end);
  upstream.on('error', end);
});
server.listen(socketPath!, () => console.log(`bridging ${socketPath} to ${host}:${port}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
