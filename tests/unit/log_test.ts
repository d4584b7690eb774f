import assert from "node:assert/strict";
import { configureLogging, LineBuffer, logger, redact, registerSecret } from "../../src/log.ts";

Deno.test("registered secrets never reach a log line, in messages or properties", () => {
  const lines: string[] = [];
  configureLogging({ level: "debug", format: "json", write: (line) => lines.push(line) });
  const token = "gta_9f8e7d6c5b4a39281706";
  registerSecret(token);
  const log = logger("test");
  log.info("Request failed with token {token}", { token });
  log.warn(`Inline ${token} in the message`);
  log.error("Nested {detail}", { detail: { header: `token ${token}` } });
  assert.equal(lines.length, 3);
  for (const line of lines) {
    assert.ok(!line.includes(token), line);
    assert.ok(line.includes("[REDACTED]"), line);
    JSON.parse(line);
  }
  assert.equal(redact(`a ${token} b`), "a [REDACTED] b");
});

Deno.test("the line buffer writes pending lines together, in order, after its delay", async () => {
  const writes: string[] = [];
  const decoder = new TextDecoder();
  const buffer = new LineBuffer((bytes) => {
    writes.push(decoder.decode(bytes));
    return bytes.length;
  }, { delayMs: 5 });
  buffer.write("one\n");
  buffer.write("two\n");
  buffer.write("three\n");
  assert.deepEqual(writes, [], "nothing is written before the delay");
  await new Promise((resolve) => setTimeout(resolve, 30));
  assert.deepEqual(writes, ["one\ntwo\nthree\n"]);
  buffer.write("four\n");
  buffer.flush();
  assert.deepEqual(writes, ["one\ntwo\nthree\n", "four\n"], "flush writes at once");
  buffer.flush();
  assert.equal(writes.length, 2, "an empty flush writes nothing");
  await new Promise((resolve) => setTimeout(resolve, 30));
  assert.equal(writes.length, 2, "a flushed line is not written again by the timer");
});

Deno.test("the line buffer writes at once past its size bound, and continues short writes", () => {
  const received: number[] = [];
  // Takes at most 3 bytes per call, as a pipe may.
  const buffer = new LineBuffer((bytes) => {
    const taken = Math.min(3, bytes.length);
    received.push(...bytes.subarray(0, taken));
    return taken;
  }, { delayMs: 60_000, maxPending: 10 });
  buffer.write("héllo\n");
  assert.equal(received.length, 0);
  buffer.write("wörld\n");
  assert.equal(new TextDecoder().decode(new Uint8Array(received)), "héllo\nwörld\n");
  buffer.flush();
});

Deno.test("a failing write drops its batch and later lines are still written", () => {
  let fail = true;
  const written: string[] = [];
  const buffer = new LineBuffer((bytes) => {
    if (fail) throw new Error("EPIPE");
    written.push(new TextDecoder().decode(bytes));
    return bytes.length;
  }, { delayMs: 60_000 });
  buffer.write("lost\n");
  buffer.flush();
  fail = false;
  buffer.write("kept\n");
  buffer.flush();
  assert.deepEqual(written, ["kept\n"]);
});
