import assert from "node:assert/strict";
import { configureLogging, logger, redact, registerSecret } from "../../src/log.ts";

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
