// A one-way TCP transfer for lab tests, run with `node -e` inside a namespace: the client sends, the server only
// reads (and acknowledges), so each direction's segments are of one kind: data one way, ACKs the other.

/** Reads every connection on port 7000 to its end, then answers "<bytes> <sha256>"; prints "listening" once ready. */
export const SINK_SERVER = `
require('node:net').createServer((c) => {
  const h = require('node:crypto').createHash('sha256'); let n = 0;
  c.on('data', (d) => { h.update(d); n += d.length; });
  c.on('end', () => c.end(n + ' ' + h.digest('hex')));
}).listen(7000, '::', () => console.log('listening'));
`;

/**
 * Sends argv[2] random bytes over one TCP connection to [argv[1]]:7000, closes its side, and exits 0 when the
 * server's answer says exactly those bytes arrived, in order.
 */
export const UPLOAD_CLIENT = `
const data = require('node:crypto').randomBytes(Number(process.argv[2]));
const want = data.length + ' ' + require('node:crypto').createHash('sha256').update(data).digest('hex');
let got = '';
const c = require('node:net').connect(7000, process.argv[1], () => c.end(data));
c.on('data', (d) => { got += d; });
c.on('end', () => {
  console.log(got === want ? 'arrived whole: ' + got : 'arrived otherwise: ' + got + ', sent ' + want);
  process.exit(got === want ? 0 : 1);
});
c.on('error', (e) => { console.error(String(e)); process.exit(1); });
`;
