// `sixbed4 status`: what an administrator types first. Reads the running
// router's Prometheus text (/metrics) and says it in a few lines: uptime, live
// peers, packets and bytes per direction, the top drop reasons.

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Prometheus text exposition format (the subset prom-client writes): one sample per line, comments skipped. */
export function parsePrometheus(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

const DIRECTIONS: [string, string][] = [
  ['udp_to_tun', 'peers -> kernel'],
  ['tun_to_udp', 'kernel -> peers'],
  ['relay', 'peer -> peer'],
];

/** The summary; nowSec is the time now in seconds since the epoch (for the uptime). */
export function summarize(samples: Sample[], source: string, nowSec: number, topDrops = 5): string {
  const one = (name: string, labels: Record<string, string> = {}) =>
    samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
  const sum = (name: string, labels: Record<string, string>) =>
    samples
      .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
      .reduce((a, s) => a + s.value, 0);
  if (one('sixbed4_router_received_packets_total', { side: 'udp' }) === undefined) {
    throw new Error(`${source} serves metrics, but not a sixbed4 router's (no sixbed4_router_received_packets_total)`);
  }
  const lines: string[] = [];
  const build = samples.find((s) => s.name === 'sixbed4_build_info')?.labels;
  const start = one('sixbed4_process_start_time_seconds');
  lines.push(
    `sixbed4 router (${source})${build ? `: version ${build.version ?? '?'}, revision ${(build.revision ?? '?').slice(0, 12)}` : ''}`,
  );
  lines.push(`uptime             ${start === undefined ? 'unknown' : duration(nowSec - start)}`);
  lines.push(`live peers         ${one('sixbed4_router_live_peers') ?? 0}`);
  lines.push(`${'direction'.padEnd(19)}${'packets'.padStart(14)}${'bytes'.padStart(14)}`);
  for (const [dir, text] of DIRECTIONS) {
    // Summed over the paths (the router's and the in-kernel fast path's).
    const p = sum('sixbed4_router_packets_total', { direction: dir }),
      b = sum('sixbed4_router_bytes_total', { direction: dir });
    lines.push(`${text.padEnd(19)}${String(p).padStart(14)}${bytes(b).padStart(14)}`);
  }
  const rx = (side: string) => one('sixbed4_router_received_packets_total', { side }) ?? 0;
  lines.push(`received           ${rx('udp')} from peers, ${rx('tun')} from the kernel`);
  const drops = samples
    .filter((s) => s.name === 'sixbed4_router_dropped_packets_total' && s.value > 0)
    .sort((a, b) => b.value - a.value);
  const total = drops.reduce((a, s) => a + s.value, 0);
  lines.push(
    `dropped            ${total}${
      drops.length
        ? ` (${drops
            .slice(0, topDrops)
            .map((s) => `${s.labels.reason} ${s.value}`)
            .join(', ')}${drops.length > topDrops ? `, ${drops.length - topDrops} more reasons` : ''})`
        : ''
    }`,
  );
  const nd = (type: string) => one('sixbed4_router_nd_messages_total', { type }) ?? 0;
  lines.push(`RS in / RA out     ${nd('rs')} / ${nd('ra')}`);
  const ndp = one('sixbed4_ndp_proxied_addresses');
  if (ndp !== undefined)
    lines.push(
      `neighbour proxy    ${ndp} addresses; ${one('sixbed4_ndp_solicitations_total', { result: 'answered' }) ?? 0} solicitations answered`,
    );
  return `${lines.join('\n')}\n`;
}

function duration(s: number): string {
  const t = Math.max(0, Math.floor(s));
  const d = Math.floor(t / 86400),
    h = Math.floor((t % 86400) / 3600),
    m = Math.floor((t % 3600) / 60),
    sec = t % 60;
  return [d ? `${d}d` : '', d || h ? `${h}h` : '', d || h || m ? `${m}m` : '', `${sec}s`].filter(Boolean).join(' ');
}

function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0,
    v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}
