// The namespace side of api-bridge.ts: HOST:PORT here (default 127.0.0.1) → the Unix socket.
import net from 'node:net';

const [port, socketPath, host = '127.0.0.1'] = process.argv.slice(2);
const open = new Set<net.Socket>();
const server = net.createServer((client) => {
  const upstream = net.connect(socketPath!);
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
server.listen(Number(port), host, () => console.log(`bridging ${host}:${port} to ${socketPath}`));
process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  for (const sock of open) sock.destroy(); // watch streams would keep close() waiting
});
