// A forwarding worker thread: one engine and data path over its own TUN queue
// and its own SO_REUSEPORT sockets. The kernel spreads flows over the queues
// and sockets, so workers share nothing and need no locks; the main thread
// only asks them for their counters.
import { parentPort, workerData } from 'node:worker_threads';
import { Engine, type EngineConfig } from './engine.js';
import { Datapath } from './datapath.js';
import { applyLiveSettings, watchLive, type LiveSettings } from './workers.js';
import type { IPv4Range } from './refused.js';

export interface WorkerInit {
  engine: EngineConfig;
  batch: number;
  udpFds: number[];
  tunFd: number;
  steered?: boolean;
}
export type WorkerRequest =
  | { type: 'snapshot'; id: number }
  | { type: 'stop' }
  | { type: 'refused'; ranges: IPv4Range[] }
  | { type: 'live-settings'; settings: LiveSettings };

const init = workerData as WorkerInit;
const engine = new Engine(init.engine, init.batch);
const datapath = new Datapath(engine, init.udpFds, init.tunFd, undefined, init.steered === true);
datapath.start();
const unwatch = watchLive(engine, (added, removed) => parentPort!.postMessage({ type: 'live', added, removed }));
parentPort!.on('message', (m: WorkerRequest) => {
  if (m.type === 'snapshot') parentPort!.postMessage({ type: 'snapshot', id: m.id, counters: engine.snapshot() });
  else if (m.type === 'refused') engine.setRefused(m.ranges);
  else if (m.type === 'live-settings') applyLiveSettings(engine, m.settings);
  else if (m.type === 'stop') {
    unwatch();
    datapath.stop();
    parentPort!.close();
  }
});
parentPort!.postMessage({ type: 'ready' });
