// A NOTIFY_SOCKET of the test's own, as systemd makes for a Type=notify unit:
// an AF_UNIX datagram socket at a path. Node.js has none, so a tiny python3
// program binds it and prints every datagram as one line (fields joined by |).
import { Proc } from '../../lab/proc.js';

const PROGRAM = `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("listening", flush=True)
while True:
    m = s.recv(4096).decode()
    print("notify " + m.replace("\\n", "|"), flush=True)
`;

export async function notifyListener(path: string): Promise<Proc> {
  const p = new Proc(['python3', '-u', '-c', PROGRAM, path]);
  await p.waitFor(/^listening/, 5000);
  return p;
}
