// Runs the data path on N worker threads (N > 1) or on the main thread (N = 1,
// no thread hop at all). Either way the caller sees one start/stop and one
// set of counters.
import { Worker } from 'node:worker_threads';
import { Counters, type CountersSnapshot } from './counters.js';
import { Engine, type EngineConfig } from './engine.js';
import { Datapath } from './datapath.js';
import { native, type NativeIO } from '../io/native.js';
import type { WorkerInit } from './worker.js';
import { LivePeers, type LiveChange } from './live.js';
import type { IPv4Range } from './refused.js';
import type { Prefix } from '../../lib/ip.js';
import type { RateLimitConfig } from './ratelimit.js';
import { every, guarded, TaskFailures } from './periodic.js';

/** What a reload of the router's configuration changes while the data path runs. */
export interface LiveSettings {
  routes?: readonly Prefix[];
  rateLimit?: Omit<RateLimitConfig, 'tableSize'>;
}

/** Applies live settings to one engine (the main thread's, or a worker's). */
export function applyLiveSettings(engine: Engine, s: LiveSettings): void {
  if (s.routes) engine.setRoutes(s.routes);
  if (s.rateLimit) engine.setRateLimit(s.rateLimit);
}

/** How often new peers are reported (quickly: the neighbour proxy must answer for them) and idle ones expired. */
export const LIVE_REPORT_MS = 250;
export const LIVE_EXPIRE_MS = 5000;
export type LiveListener = (added: LiveChange[], removed: LiveChange[]) => void;

/**
 * Reports an engine's (or a table's) peer changes on the two schedules above; returns a function that stops it.
 * A report that throws is a failure of that task (periodic.ts), not of the data path.
 */
export function watchLive(
  engine: Pick<Engine, 'newPeers' | 'expirePeers'>,
  report: LiveListener,
  failures = new TaskFailures(),
): () => void {
  const stopFresh = every(
    'live-report',
    LIVE_REPORT_MS,
    () => {
      const added = engine.newPeers();
      if (added.length) report(added, []);
    },
    failures,
  );
  const stopStale = every(
    'live-expire',
    LIVE_EXPIRE_MS,
    () => {
      const removed = engine.expirePeers(Date.now());
      if (removed.length) report([], removed);
    },
    failures,
  );
  return () => {
    stopFresh();
    stopStale();
  };
}

export interface Forwarding {
  counters(): Promise<CountersSnapshot>;
  /** Peers the in-kernel fast path forwarded for since the last call: tracked live as if the router had seen them. */
  touchPeers(peers: readonly LiveChange[]): void;
  /** New refused destinations (the host's local table changed). */
  setRefused(ranges: readonly IPv4Range[]): void;
  /** New routes or reply rate limits, without stopping the data path (a reload). */
  setLive(settings: LiveSettings): void;
  stop(): Promise<void>;
}

/**
 * One engine on the main thread over its UDP sockets and one TUN queue, through io (the addon, or a stand-in such
 * as FakeIO). Workers always use the addon: a stand-in's sockets live in this thread's memory.
 */
export function forwardInline(
  cfg: EngineConfig,
  batch: number,
  udpFds: number[],
  tunFd: number,
  onLive?: LiveListener,
  io: NativeIO = native,
  failures?: TaskFailures,
  steered = false,
): Forwarding & { engine: Engine } {
  const engine = new Engine(cfg, batch);
  const datapath = new Datapath(engine, udpFds, tunFd, io, steered);
  datapath.start();
  const unwatch = watchLive(engine, (added, removed) => onLive?.(added, removed), failures);
  return {
    engine,
    counters: async () => engine.snapshot(),
    setRefused: (ranges) => engine.setRefused(ranges),
    touchPeers: (peers) => engine.touchPeers(peers, Date.now()),
    setLive: (settings) => applyLiveSettings(engine, settings),
    stop: async () => {
      unwatch();
      datapath.stop();
    },
  };
}

/** One worker per (UDP sockets, TUN queue) pair. Resolves once every worker has its data path running. */
export async function forwardOnWorkers(
  cfg: EngineConfig,
  batch: number,
  udpFds: number[][],
  tunFds: number[],
  onLive?: LiveListener,
  onFailure: (err: Error) => void = (err) => {
    throw err;
  },
  failures?: TaskFailures,
  steered = false,
): Promise<Forwarding> {
  const workers = udpFds.map(
    (fds, i) =>
      new Worker(new URL('./worker.js', import.meta.url), {
        workerData: { engine: cfg, batch, udpFds: fds, tunFd: tunFds[i]!, steered } satisfies WorkerInit,
      }),
  );
  const stopAll = async () => {
    await Promise.all(workers.map((w) => w.terminate()));
  };
  // A peer is live while any table has it: its worker's (the kernel steers a peer's datagrams to one socket, so to
  // one worker), or the one here of peers the in-kernel fast path forwarded for, whose worker is not known. Each
  // table reports its own additions and expiries; counted here, the listener hears each peer come and go once,
  // and the gauge counts it once.
  const holders = new Map<number, number>();
  const deliver: LiveListener = (added, removed) => {
    const a: LiveChange[] = [],
      r: LiveChange[] = [];
    for (const p of added) {
      const k = p.ipv4 * 65536 + p.port,
        n = (holders.get(k) ?? 0) + 1;
      holders.set(k, n);
      if (n === 1) a.push(p);
    }
    for (const p of removed) {
      const k = p.ipv4 * 65536 + p.port,
        n = (holders.get(k) ?? 0) - 1;
      if (n > 0) {
        holders.set(k, n);
        continue;
      }
      holders.delete(k);
      r.push(p);
    }
    if (onLive && (a.length || r.length)) onLive(a, r);
  };
  const fastLive = new LivePeers();
  const unwatchFast = watchLive(
    { newPeers: () => fastLive.takeAdded(), expirePeers: (now) => fastLive.expire(now) },
    deliver,
    failures,
  );
  for (const w of workers) {
    w.on('message', (m: { type: string; added?: LiveChange[]; removed?: LiveChange[] }) => {
      if (m.type === 'live')
        guarded('live-report', () => deliver(m.added!, m.removed!), failures ?? new TaskFailures());
    });
  }
  try {
    await Promise.all(
      workers.map(
        (w) =>
          new Promise<void>((resolve, reject) => {
            const onMessage = (m: { type: string }) => {
              if (m.type === 'ready') {
                w.off('message', onMessage);
                resolve();
              }
            };
            w.on('message', onMessage);
            w.once('error', reject);
            w.once('exit', (code) =>
              reject(new Error(`forwarding worker exited with code ${code} before it was ready`)),
            );
          }),
      ),
    );
  } catch (err) {
    unwatchFast();
    await stopAll();
    throw err;
  }
  // A worker that dies takes its share of the flows with it (the kernel keeps steering them to its
  // socket and queue): that is a router failure, not something to carry on quietly with.
  let stopping = false;
  const alive = new Set(workers);
  for (const w of workers) {
    w.on('error', (err) => {
      if (!stopping) onFailure(new Error(`forwarding worker failed: ${err.message}`));
    });
    w.on('exit', (code) => {
      alive.delete(w);
      if (!stopping) onFailure(new Error(`forwarding worker exited (code ${code})`));
    });
  }
  let nextId = 0;
  return {
    async counters() {
      const id = ++nextId;
      // A worker that does not answer within a second (dying, or gone) counts as nothing.
      const parts = await Promise.all(
        [...alive].map(
          (w) =>
            new Promise<CountersSnapshot | null>((resolve) => {
              const timer = setTimeout(() => {
                w.off('message', onMessage);
                resolve(null);
              }, 1000);
              const onMessage = (m: { type: string; id: number; counters: CountersSnapshot }) => {
                if (m.type === 'snapshot' && m.id === id) {
                  clearTimeout(timer);
                  w.off('message', onMessage);
                  resolve(m.counters);
                }
              };
              w.on('message', onMessage);
              w.postMessage({ type: 'snapshot', id });
            }),
        ),
      );
      const sum = new Counters();
      for (const p of parts) if (p) sum.add(p);
      return { ...sum.snapshot(), livePeers: holders.size, liveUntracked: sum.liveUntracked + fastLive.untracked };
    },
    setRefused(ranges) {
      for (const w of alive) w.postMessage({ type: 'refused', ranges });
    },
    touchPeers(peers) {
      const now = Date.now();
      for (const p of peers) fastLive.touch(p.ipv4, p.port, now);
    },
    setLive(settings) {
      for (const w of alive) w.postMessage({ type: 'live-settings', settings });
    },
    async stop() {
      stopping = true;
      unwatchFast();
      // Ask politely so each worker closes its polls before its fds go away, then make sure.
      for (const w of workers) w.postMessage({ type: 'stop' });
      await Promise.all(
        workers.map(
          (w) =>
            new Promise<void>((resolve) => {
              const t = setTimeout(() => {
                void w.terminate().then(() => resolve());
              }, 2000);
              w.once('exit', () => {
                clearTimeout(t);
                resolve();
              });
            }),
        ),
      );
    },
  };
}
