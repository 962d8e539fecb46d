// The one form of the route that sends the /64 into the 6bed4 tunnel, shared
// by the router (which adds it when it brings the tunnel up) and the host plan.
//
// Through a fixed next hop rather than `dev 6bed4` alone: with a bare device
// route the kernel creates a neighbour entry per destination address, even on
// a NOARP device like a TUN, so 6→4 traffic to many peers overflows the
// neighbour table (gc_thresh3, 1024 by default) and the kernel spends its time
// collecting garbage (measured: 6→4 to 100,000 peers fell by a quarter). Via
// one next hop it keeps one entry. The next hop needs no owner: a TUN never
// resolves it.
export const TUNNEL_NEXT_HOP = 'fe80::1';
export const TUNNEL_ROUTE_METRIC = 1024;

export function tunnelRouteArgs(verb: 'add' | 'replace' | 'del', prefix: string, tunnel: string): string[] {
  return ['-6', 'route', verb, prefix, 'via', TUNNEL_NEXT_HOP, 'dev', tunnel, 'metric', String(TUNNEL_ROUTE_METRIC)];
}
