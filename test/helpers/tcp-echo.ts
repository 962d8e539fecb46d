// TCP echo programs for lab tests, run with `node -e` inside a namespace.

/** Echoes every connection on port 7000 of every address; prints "listening" once ready. */
export const ECHO_SERVER = `require('node:net').createServer((c) => c.pipe(c)).listen(7000, '::', () => console.log('listening'));`;

/** Sends a line every 100 ms, argv[2] of them, over one TCP connection to [argv[1]]:7000; exits 0 once all came back. */
export const LINES_CLIENT = `
const want = Number(process.argv[2]); let sent = 0, got = '';
const c = require('node:net').connect(7000, process.argv[1], () => {
  const t = setInterval(() => { c.write(sent + '\\n'); if (++sent === want) clearInterval(t); }, 100);
});
c.on('data', (d) => { got += d; if (got.split('\\n').length - 1 === want) { console.log('echoed ' + want); process.exit(0); } });
c.on('close', () => { console.error('connection closed after ' + (got.split('\\n').length - 1) + ' lines'); process.exit(1); });
c.on('error', (e) => { console.error(String(e)); process.exit(1); });
`;

/**
 * Sends argv[2] random bytes over one TCP connection to [argv[1]]:7000 and exits 0 when exactly they came back:
 * every segment both ways arrived with its checksum right (a wrong one is dropped, and the transfer stalls).
 */
export const BULK_CLIENT = `
const want = require('node:crypto').randomBytes(Number(process.argv[2])); const got = [];
let n = 0;
const c = require('node:net').connect(7000, process.argv[1], () => c.write(want));
c.on('data', (d) => {
  got.push(d); n += d.length;
  if (n < want.length) return;
  const same = Buffer.concat(got).equals(want);
  console.log(same ? 'echoed ' + n + ' bytes' : 'echoed ' + n + ' bytes, not the same');
  process.exit(same ? 0 : 1);
});
c.on('close', () => { console.error('connection closed after ' + n + ' bytes'); process.exit(1); });
c.on('error', (e) => { console.error(String(e)); process.exit(1); });
`;
