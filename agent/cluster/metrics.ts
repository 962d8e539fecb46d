// The node agent's /metrics. Each prefix the node serves runs its own router with its own registry (the same
// families `sixbed4 router --metrics` serves, fast path included); the agent serves them all at once with a prefix
// label, so that a dashboard or an alert can tell the prefixes of a node apart (their sum is the node's total).
// Beside them: the node's own families (CNI requests, build info, process) and, per prefix, whether its fast path
// runs, which the prefix's spec may require.
import client from 'prom-client';

/** One prefix of the node, as its metrics see it. */
export interface PrefixMetricsSource {
  prefix: string;
  /** its router's registry, while a router runs */
  registry?: client.Registry;
  /** spec.fastPath in --fast-path's words (off, auto, on) and whether the in-kernel fast path runs now */
  fastPath: { mode: string; running: boolean };
}

/**
 * A router registry's families that are the process's, not the prefix's (served once, by the agent's own): build
 * info and prom-client's process metrics. Every other family of a prefix's router is that prefix's.
 */
const PROCESS_FAMILIES = (() => {
  const r = new client.Registry();
  client.collectDefaultMetrics({ register: r, prefix: 'sixbed4_' });
  return new Set([...r.getMetricsAsArray().map((m) => (m as unknown as { name: string }).name), 'sixbed4_build_info']);
})();

/** spec.fastPath's words for the label: what an operator wrote in the SixBed4Prefix. */
const MODE_NAMES: Record<string, string> = { off: 'Disabled', auto: 'Auto', on: 'Required' };

type Family = { help: string; type: string; values: { value: number; labels: Record<string, string | number> }[] };

/**
 * A registry that, before each scrape, reads every prefix router's registry once and registers any family it has
 * not seen yet (a prefix with the fast path adds families the others lack). Families stay once seen, empty when
 * no prefix has them any more.
 */
export class AgentRegistry extends client.Registry {
  private readonly merged = new Map<string, Family>();
  private readonly known = new Set<string>();

  constructor(private readonly sources: () => PrefixMetricsSource[]) {
    super();
    new client.Gauge({
      name: 'sixbed4_agent_fast_path',
      registers: [this],
      labelNames: ['prefix', 'mode'] as const,
      help: "Per prefix on this node: 1 while its in-kernel fast path runs, 0 when it does not; mode is the prefix's spec.fastPath (Disabled, Auto, Required)",
    });
  }

  private async sync(): Promise<void> {
    const fast = this.getSingleMetric('sixbed4_agent_fast_path') as client.Gauge<'prefix' | 'mode'>;
    fast.reset();
    const next = new Map<string, Family>();
    for (const s of this.sources()) {
      fast.set({ prefix: s.prefix, mode: MODE_NAMES[s.fastPath.mode] ?? s.fastPath.mode }, s.fastPath.running ? 1 : 0);
      if (!s.registry) continue;
      for (const m of await s.registry.getMetricsAsJSON()) {
        if (PROCESS_FAMILIES.has(m.name)) continue;
        let f = next.get(m.name);
        if (!f) next.set(m.name, (f = { help: m.help, type: String(m.type), values: [] }));
        for (const v of m.values) f.values.push({ value: v.value, labels: { ...v.labels, prefix: s.prefix } });
      }
    }
    // Swapped in whole: a scrape that overlaps this one renders one read or the other, never half of each.
    for (const f of this.merged.values()) f.values = [];
    for (const [name, f] of next) this.merged.set(name, f);
    for (const [name, f] of this.merged) {
      if (this.known.has(name)) continue;
      this.known.add(name);
      const get = async () => ({
        name,
        help: f.help,
        type: f.type,
        aggregator: 'sum',
        values: this.merged.get(name)!.values,
      });
      this.registerMetric({
        name,
        help: f.help,
        type: f.type,
        aggregator: 'sum',
        get,
        reset() {},
      } as unknown as client.Metric);
    }
  }

  override async metrics(): Promise<string> {
    await this.sync();
    return super.metrics();
  }

  override async getMetricsAsJSON(): Promise<client.MetricObjectWithValues<client.MetricValue<string>>[]> {
    await this.sync();
    return super.getMetricsAsJSON();
  }
}
