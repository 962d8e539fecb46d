// Waiting in tests for something that happens in its own time: poll for the meaning (an object's condition, an
// address, a log line's effect), never sleep a guessed time. One home, so every wait says what it waited for and
// what it saw last when it gives up.
import { setTimeout as sleep } from 'node:timers/promises';

/** Polls fn until it returns something truthy; throws with the last value after timeoutMs. */
export async function eventually<T>(
  what: string,
  fn: () => Promise<T | undefined | null | false>,
  timeoutMs = 15_000,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = v;
    } catch (e) {
      last = e instanceof Error ? e.message : e;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)?.slice(0, 500)})`,
      );
    await sleep(intervalMs);
  }
}

/** eventually() for a synchronous check (an in-memory server's state), polled every 5 ms for 3 s by default. */
export const until = <T>(what: string, fn: () => T | undefined | null | false, timeoutMs = 3000): Promise<T> =>
  eventually(what, async () => fn(), timeoutMs, 5);
