// The fast path's cached FIB answers (fastpath.bpf.h: the next hop towards a peer's IPv4, the egress of a direct
// IPv6 packet) hold for one generation of the host's routes. This watches rtnetlink and starts a new generation on
// every notification that may change an answer, so an answer outlives the change that made it wrong by the time
// the router takes to read that notification: one turn of its event loop.
import { native, routeWatch, routeWatchDrain } from '../io/native.js';
import type { Logger } from '../../lib/log.js';

export interface RoutesChanged {
  routesChanged(): void;
}

/** Watches the host's routing state for prog (the uplink's IPv4 neighbours among the neighbours); returns the stop. */
export function watchRoutes(prog: RoutesChanged, uplinkIfindex: number, log: Logger): () => void {
  const fd = routeWatch();
  let failed = false;
  const poll = native.poll(fd, () => {
    let changes = 1;
    try {
      changes = routeWatchDrain(fd, uplinkIfindex);
    } catch (err) {
      // Unreadable: whatever it held may have mattered. Said once; every readiness still starts a new generation.
      if (!failed) log.warn(`fast path: reading the host's route changes failed: ${(err as Error).message}`);
      failed = true;
    }
    if (changes > 0) prog.routesChanged();
  });
  return () => {
    poll.close();
    native.close(fd);
  };
}
