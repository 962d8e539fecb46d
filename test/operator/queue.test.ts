// The operator's work queue: one entry per key, no key handed out twice at
// once, re-queued if added while being processed, delays and backoff.
import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { WorkQueue } from '../../kube/queue.js';

test('a key is queued once and not handed out again until done; added meanwhile, it comes back', async (t) => {
  const q = new WorkQueue();
  q.add('a');
  q.add('b');
  q.add('a');
  t.is(q.length, 2);
  t.is(await q.get(), 'a');
  q.add('a'); // while processing
  t.is(await q.get(), 'b');
  t.is(q.length, 0, 'a is not handed out while being processed');
  q.done('a');
  t.is(await q.get(), 'a');
  q.done('a');
  q.done('b');
  t.is(q.length, 0);
  q.shutdown();
  t.is(await q.get(), undefined);
});

test('delayed adds keep the earliest; failures back off exponentially; forget resets', async (t) => {
  const q = new WorkQueue(20, 100);
  q.addAfter('x', 200);
  q.addAfter('x', 30);
  const t0 = Date.now();
  t.is(await q.get(), 'x');
  t.true(Date.now() - t0 < 190, 'the 30 ms add won, not the 200 ms one');
  q.done('x');
  t.is(q.addRateLimited('x'), 20);
  t.is(q.addRateLimited('x'), 40);
  t.is(q.addRateLimited('x'), 80);
  t.is(q.addRateLimited('x'), 100, 'capped');
  q.forget('x');
  t.is(q.addRateLimited('x'), 20);
  await sleep(50);
  t.is(await q.get(), 'x');
  q.shutdown();
});
