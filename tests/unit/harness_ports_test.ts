import assert from "node:assert/strict";
import { freeLoopbackPorts } from "../harness/process.ts";

/** As the harness reads it: Linux's ephemeral range start, 32768 where /proc cannot be read (without --allow-all). */
function ephemeralStart(): number {
  try {
    return Number(Deno.readTextFileSync("/proc/sys/net/ipv4/ip_local_port_range").trim().split(/\s+/)[0]);
  } catch {
    return 32_768;
  }
}

Deno.test("the harness picks free loopback ports below the ephemeral range, all different", () => {
  const below = ephemeralStart();
  const ports = freeLoopbackPorts(5);
  assert.equal(new Set(ports).size, 5, `ports ${ports} must differ`);
  for (const port of ports) {
    assert.ok(port >= 1024 && port < below, `port ${port} must be below the ephemeral range (from ${below})`);
    // Free now: a server can bind it.
    Deno.listen({ hostname: "127.0.0.1", port }).close();
  }
});
