// A real Prometheus for the operations tests: started with a scrape configuration the test writes, asked over its
// HTTP API, stopped with its data directory removed.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { freePort, startProc, stopProc, tail, type Proc } from '../k8s/controlplane.js';
import { PROMETHEUS } from './tools.js';

export interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

export class Prometheus {
  private constructor(
    readonly url: string,
    private readonly proc: Proc,
    private readonly dir: string,
  ) {}

  /** config: Prometheus' configuration (global, scrape_configs, ...), written as YAML. */
  static async start(config: Record<string, unknown>): Promise<Prometheus> {
    const dir = await mkdtemp(join(tmpdir(), 'sixbed4-prometheus-'));
    const port = await freePort();
    await writeFile(join(dir, 'prometheus.yml'), YAML.stringify(config));
    const proc = startProc(
      'prometheus',
      PROMETHEUS,
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
      ],
      dir,
      process.env,
    );
    const p = new Prometheus(`http://127.0.0.1:${port}`, proc, dir);
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (
        await fetch(`${p.url}/-/ready`).then(
          (r) => r.ok,
          () => false,
        )
      )
        return p;
      if (Date.now() > deadline || proc.child.exitCode !== null) {
        const log = await tail(proc.log).catch(() => '');
        await p.stop();
        throw new Error(`prometheus did not become ready on ${p.url}:\n${log}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  async api<T>(path: string, params: Record<string, string> = {}): Promise<T> {
    const res = await fetch(`${this.url}/api/v1/${path}?${new URLSearchParams(params)}`);
    const body = (await res.json()) as { status: string; data: T; error?: string };
    if (body.status !== 'success')
      throw new Error(`prometheus ${path} ${JSON.stringify(params)}: ${body.error ?? res.status}`);
    return body.data;
  }

  async query(expr: string): Promise<Sample[]> {
    return (await this.api<{ result: Sample[] }>('query', { query: expr })).result;
  }

  /** Active targets with their labels and health. */
  async targets(): Promise<
    { labels: Record<string, string>; scrapePool: string; health: string; lastError: string; scrapeUrl: string }[]
  > {
    return (
      await this.api<{
        activeTargets: {
          labels: Record<string, string>;
          scrapePool: string;
          health: string;
          lastError: string;
          scrapeUrl: string;
        }[];
      }>('targets')
    ).activeTargets;
  }

  async stop(): Promise<void> {
    await stopProc(this.proc);
    await rm(this.dir, { recursive: true, force: true });
  }
}
