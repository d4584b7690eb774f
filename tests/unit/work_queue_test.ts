import assert from "node:assert/strict";
import { WorkQueue } from "../../src/runtime/work_queue.ts";

Deno.test("duplicate keys collapse while queued", async () => {
  const queue = new WorkQueue();
  queue.add("a");
  queue.add("b");
  queue.add("a");
  assert.equal(queue.length, 2);
  assert.equal(await queue.get(), "a");
  assert.equal(await queue.get(), "b");
  queue.shutDown();
});

Deno.test("a key is never handed to two workers at once; re-adds while processing come back after done", async () => {
  const queue = new WorkQueue();
  queue.add("a");
  const first = await queue.get();
  queue.add("a");
  assert.equal(queue.length, 0, "not queued while being processed");
  let second: string | undefined;
  const waiting = queue.get().then((key) => (second = key));
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(second, undefined);
  queue.done(first!);
  await waiting;
  assert.equal(second, "a");
  queue.done("a");
  queue.shutDown();
});

Deno.test("addRateLimited backs off per key, doubling until forget", () => {
  const queue = new WorkQueue({ baseDelayMs: 100, maxDelayMs: 350 });
  assert.deepEqual([1, 2, 3, 4].map(() => queue.addRateLimited("a")), [100, 200, 350, 350]);
  assert.equal(queue.addRateLimited("b"), 100);
  queue.forget("a");
  assert.equal(queue.addRateLimited("a"), 100);
  queue.shutDown();
});

Deno.test("addAfter delivers later; shutDown releases waiting workers", async () => {
  const queue = new WorkQueue();
  const started = Date.now();
  queue.addAfter("x", 50);
  assert.equal(await queue.get(), "x");
  assert.ok(Date.now() - started >= 45);
  const waiter = queue.get();
  queue.shutDown();
  assert.equal(await waiter, undefined);
});
