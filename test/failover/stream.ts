// A TCP stream that checks every byte across a failover, run with `node -e` in a namespace: connects to
// [argv[1]]:7000 (an echo server), sends a numbered byte pattern every 20 ms and checks that exactly it comes back,
// in order. Prints "checked N" now and then; on SIGTERM prints "final N bytes checked, longest silence M ms" and
// exits 0; a reset, a close or a wrong byte print why and exit 1.
export const STREAM_CLIENT = `
let sent = 0, checked = 0, last = Date.now(), longest = 0;
const byte = (i) => (i * 7 + (i >> 8)) & 0xff;
const c = require('node:net').connect(7000, process.argv[1], () => {
  console.log('connected');
  setInterval(() => { const b = Buffer.alloc(512); for (let i = 0; i < b.length; i++) b[i] = byte(sent + i); sent += b.length; c.write(b); }, 20);
  setInterval(() => console.log('checked ' + checked), 1000);
});
c.on('data', (d) => {
  const now = Date.now(); longest = Math.max(longest, now - last); last = now;
  for (let i = 0; i < d.length; i++) {
    if (d[i] !== byte(checked + i)) { console.log('wrong byte at ' + (checked + i)); process.exit(1); }
  }
  checked += d.length;
});
c.on('close', () => { console.log('connection closed after ' + checked + ' bytes'); process.exit(1); });
c.on('error', (e) => { console.log('error: ' + String(e)); process.exit(1); });
process.on('SIGTERM', () => { console.log('final ' + checked + ' bytes checked of ' + sent + ' sent, longest silence ' + longest + ' ms'); process.exit(0); });
`;

/**
 * The longest silence in a `ping -D -O` run: the most time between two answers in a row (from ping's own
 * timestamps, so that sends the kernel refused meanwhile, ENOBUFS while a neighbour is unresolved, do not shorten it).
 */
export function pingGap(output: string): { gapMs: number; answered: number } {
  const at = [...output.matchAll(/^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=\d+ ttl=/gm)].map(
    (m) => Number(m[1]) * 1000,
  );
  let gap = 0;
  for (let i = 1; i < at.length; i++) gap = Math.max(gap, at[i]! - at[i - 1]!);
  return { gapMs: Math.round(gap), answered: at.length };
}
