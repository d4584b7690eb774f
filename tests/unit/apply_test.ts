import assert from "node:assert/strict";
import { settleBounded } from "../../src/runtime/concurrency.ts";
import { warmSlots } from "../../src/runner_group/apply.ts";
import { warmRunnerJobName } from "../../src/runner_group/runner_job.ts";
import { validateGroup } from "../../src/runner_group/validate.ts";

Deno.test("settleBounded never has more than the limit in flight, and runs every item", async () => {
  let inFlight = 0;
  let peak = 0;
  const done: number[] = [];
  const results = await settleBounded(Array.from({ length: 25 }, (_, i) => i), 4, async (item) => {
    inFlight++;
    peak = Math.max(peak, inFlight);
    await new Promise((resolve) => setTimeout(resolve, 2 + (item % 3)));
    inFlight--;
    done.push(item);
    if (item === 7) throw new Error("seven");
    return item * 2;
  });
  assert.equal(peak, 4);
  assert.equal(done.length, 25);
  assert.deepEqual(results[3], { status: "fulfilled", value: 6 });
  assert.equal(results[7].status, "rejected");
  assert.equal(results.filter((result) => result.status === "fulfilled").length, 24);
});

Deno.test("settleBounded with fewer items than the limit runs them all at once", async () => {
  let inFlight = 0;
  let peak = 0;
  await settleBounded([1, 2, 3], 8, async () => {
    inFlight++;
    peak = Math.max(peak, inFlight);
    await new Promise((resolve) => setTimeout(resolve, 5));
    inFlight--;
  });
  assert.equal(peak, 3);
  assert.deepEqual(await settleBounded([], 8, () => Promise.resolve(1)), []);
});

Deno.test("warmSlots takes the lowest slots whose names no Job holds", () => {
  const inUse = new Set([warmRunnerJobName("pool", 0), warmRunnerJobName("pool", 2), "other-job"]);
  assert.deepEqual(warmSlots("pool", 3, inUse), [{ warmSlot: 1 }, { warmSlot: 3 }, { warmSlot: 4 }]);
  assert.deepEqual(warmSlots("pool", 0, inUse), []);
});

Deno.test("validateGroup reports an invalid spec and invalid labels with their reasons", () => {
  const base = {
    scope: "repo",
    org: "acme",
    repo: "app",
    giteaURL: "https://gitea.example.com",
    maxActiveRunners: 2,
    authToken: { name: "tokens", key: "api" },
  };
  const ok = validateGroup({ spec: { ...base, labels: ["linux"] } } as never);
  assert.equal(ok.ok, true);
  const badSpec = validateGroup({ spec: { ...base, scope: "repo", repo: undefined } } as never);
  assert.equal(badSpec.ok, false);
  assert.equal(!badSpec.ok && badSpec.reason, "InvalidSpec");
  const badLabels = validateGroup({ spec: { ...base, labels: ["a::b"] } } as never);
  assert.equal(!badLabels.ok && badLabels.reason, "InvalidLabels");
});
