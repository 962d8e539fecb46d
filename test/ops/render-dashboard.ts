// A picture of the dashboard without Grafana (which is not among the packages this project may use): each panel's
// queries asked of a real Prometheus over a time range, drawn as an SVG with the dashboard's own layout, titles and
// legends. The dashboard test writes one when SIXBED4_OPS_SNAPSHOT names a file; it is for people, not asserted.
interface Target {
  expr: string;
  legendFormat?: string;
}
interface Panel {
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: Target[];
  fieldConfig?: { defaults?: { unit?: string } };
}
type Range = (expr: string) => Promise<{ metric: Record<string, string>; values: [number, string][] }[]>;

const COLORS = [
  '#7eb26d',
  '#eab839',
  '#6ed0e0',
  '#ef843c',
  '#e24d42',
  '#1f78c1',
  '#ba43a9',
  '#705da0',
  '#508642',
  '#cca300',
];
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const fmt = (v: number, unit = '') => {
  if (unit === 'percentunit') return `${(v * 100).toFixed(0)}%`;
  const a = Math.abs(v);
  const n =
    a >= 1e6
      ? `${(v / 1e6).toFixed(1)}M`
      : a >= 1e3
        ? `${(v / 1e3).toFixed(1)}k`
        : a >= 10 || a === 0
          ? v.toFixed(0)
          : v.toPrecision(2);
  return `${n}${{ s: ' s', pps: ' p/s', Bps: ' B/s', reqps: '/s' }[unit] ?? ''}`;
};

export async function renderDashboard(
  dashboard: { title: string; panels: Panel[] },
  range: Range,
  rewrite: (e: string) => string,
  caption: string,
): Promise<string> {
  const COL = 60,
    ROW = 32,
    PAD = 6;
  const panels = dashboard.panels;
  const height = Math.max(...panels.map((p) => (p.gridPos.y + p.gridPos.h) * ROW)) + 40;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${24 * COL}" height="${height}" font-family="DejaVu Sans, sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="#111217"/>`,
    `<text x="8" y="${height - 14}" fill="#8e8e8e">${esc(caption)}</text>`,
  ];
  for (const p of panels) {
    const x = p.gridPos.x * COL + PAD / 2,
      y = p.gridPos.y * ROW + PAD / 2,
      w = p.gridPos.w * COL - PAD,
      h = p.gridPos.h * ROW - PAD;
    if (p.type === 'row') {
      out.push(
        `<text x="${x + 4}" y="${y + 20}" fill="#d8d9da" font-size="14" font-weight="bold">${esc(p.title)}</text>`,
      );
      continue;
    }
    out.push(
      `<rect x="${x}" y="${y}" width="${w}" height="${h}" fill="#181b1f" stroke="#2c3235"/>`,
      `<text x="${x + 8}" y="${y + 16}" fill="#d8d9da" font-size="12" font-weight="bold">${esc(p.title)}</text>`,
    );
    const series: { name: string; points: [number, number][] }[] = [];
    for (const t of p.targets ?? []) {
      for (const r of await range(rewrite(t.expr))) {
        const name = (t.legendFormat ?? '').replace(/\{\{\s*(\w+)\s*\}\}/g, (_m, l: string) => r.metric[l] ?? '');
        series.push({
          name,
          points: r.values.map(([ts, v]) => [ts, Number(v)] as [number, number]).filter(([, v]) => Number.isFinite(v)),
        });
      }
    }
    const legendRows = Math.min(series.length, Math.floor((h - 60) / 2 / 13));
    const px = x + 44,
      py = y + 26,
      pw = w - 54,
      ph = h - 40 - legendRows * 13;
    const all = series.flatMap((s) => s.points);
    if (!all.length) {
      out.push(`<text x="${x + w / 2 - 20}" y="${y + h / 2}" fill="#8e8e8e">No data</text>`);
      continue;
    }
    const t0 = Math.min(...all.map(([t]) => t)),
      t1 = Math.max(...all.map(([t]) => t)) || t0 + 1;
    const vmax = Math.max(...all.map(([, v]) => v), 0) || 1;
    const unit = p.fieldConfig?.defaults?.unit;
    out.push(
      `<line x1="${px}" y1="${py + ph}" x2="${px + pw}" y2="${py + ph}" stroke="#2c3235"/>`,
      `<text x="${x + 4}" y="${py + 8}" fill="#8e8e8e" font-size="10">${esc(fmt(vmax, unit))}</text>`,
      `<text x="${x + 4}" y="${py + ph}" fill="#8e8e8e" font-size="10">0</text>`,
    );
    series.forEach((s, i) => {
      const c = COLORS[i % COLORS.length];
      const d = s.points
        .map(
          ([t, v], j) =>
            `${j ? 'L' : 'M'}${(px + ((t - t0) / (t1 - t0 || 1)) * pw).toFixed(1)},${(py + ph - (v / vmax) * ph).toFixed(1)}`,
        )
        .join('');
      if (d) out.push(`<path d="${d}" fill="none" stroke="${c}" stroke-width="1.5"/>`);
      if (i < legendRows) {
        const last = s.points.at(-1)?.[1];
        out.push(
          `<rect x="${px}" y="${py + ph + 8 + i * 13}" width="10" height="3" fill="${c}"/>`,
          `<text x="${px + 14}" y="${py + ph + 12 + i * 13}" fill="#ccccdc" font-size="10">${esc(s.name)}${last !== undefined ? `  ${esc(fmt(last, unit))}` : ''}</text>`,
        );
      }
    });
    if (series.length > legendRows)
      out.push(
        `<text x="${px + pw - 70}" y="${py + ph + 12}" fill="#8e8e8e" font-size="10">+${series.length - legendRows} more</text>`,
      );
  }
  out.push('</svg>');
  return out.join('\n');
}
