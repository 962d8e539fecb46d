// Run inside a namespace: sends the given datagrams (hex) from one UDP socket
// to HOST:PORT, then collects what comes back for WAIT ms and prints it as
// JSON ({ local, replies: [{ from, hex }] }). Lets tests put arbitrary bytes
// on the wire towards the router, as a broken or malicious peer would.
import dgram from 'node:dgram';

const [host, port, waitMs, ...hex] = process.argv.slice(2);
const sock = dgram.createSocket('udp4');
const replies: { from: string; hex: string }[] = [];
sock.on('message', (msg, rinfo) => replies.push({ from: `${rinfo.address}:${rinfo.port}`, hex: msg.toString('hex') }));
sock.bind(0, () => {
  const local = sock.address().port;
  let i = 0;
  const next = (): void => {
    if (i === hex.length) {
      setTimeout(() => {
        process.stdout.write(JSON.stringify({ local, replies }) + '\n');
        sock.close();
      }, Number(waitMs));
      return;
    }
    sock.send(Buffer.from(hex[i++]!, 'hex'), Number(port), host, next);
  };
  next();
});
