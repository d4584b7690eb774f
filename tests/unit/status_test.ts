import assert from "node:assert/strict";
import type { CustomObjectsApi } from "../../src/kube/api.ts";
import type { RunnerGroup } from "../../src/runner_group/schema.ts";
import { canonicalJson, computeConditions, statusNeedsWrite, writeStatus } from "../../src/runner_group/status.ts";

const t0 = new Date("2026-01-01T00:00:00Z");
const t1 = new Date("2026-01-01T00:05:00Z");

Deno.test("Ready is True only when spec, credentials and forge are all fine", () => {
  const ok = computeConditions(
    { spec: { ok: true }, credentials: { ok: true }, forge: { ok: true, message: "Gitea 1.26.0 answered" } },
    undefined,
    3,
    t0,
  );
  assert.deepEqual(ok.map((c) => [c.type, c.status]), [
    ["Ready", "True"],
    ["SpecValid", "True"],
    ["CredentialsAvailable", "True"],
    ["ForgeReachable", "True"],
  ]);
  assert.ok(ok.every((c) => c.observedGeneration === 3));
  const down = computeConditions(
    { spec: { ok: true }, credentials: { ok: true }, forge: { ok: false, reason: "Unauthorized", message: "401" } },
    ok,
    3,
    t1,
  );
  const ready = down.find((c) => c.type === "Ready")!;
  assert.equal(ready.status, "False");
  assert.equal(ready.reason, "Unauthorized");
  assert.equal(ready.lastTransitionTime, t1.toISOString());
  const spec = down.find((c) => c.type === "SpecValid")!;
  assert.equal(spec.lastTransitionTime, t0.toISOString(), "unchanged conditions keep their transition time");
});

Deno.test("a paused group is not Ready, with reason Paused; a failure still comes first", () => {
  const fine = { spec: { ok: true }, credentials: { ok: true }, forge: { ok: true, message: "answered" } } as const;
  const paused = computeConditions({ ...fine, paused: true }, undefined, 1, t0);
  assert.deepEqual(paused.map((c) => [c.type, c.status, c.reason]), [
    ["Ready", "False", "Paused"],
    ["SpecValid", "True", "Valid"],
    ["CredentialsAvailable", "True", "Found"],
    ["ForgeReachable", "True", "Reachable"],
  ]);
  assert.match(paused[0].message, /paused \(maxActiveRunners is 0\)/);
  const pausedAndDown = computeConditions(
    { ...fine, forge: { ok: false, reason: "Unauthorized", message: "401" }, paused: true },
    undefined,
    1,
    t0,
  );
  assert.equal(pausedAndDown[0].reason, "Unauthorized");
  const running = computeConditions({ ...fine, paused: false }, paused, 1, t1);
  assert.deepEqual([running[0].status, running[0].reason], ["True", "Ready"]);
  assert.equal(running[0].lastTransitionTime, t1.toISOString());
});

Deno.test("before the forge first answers, ForgeReachable stays as observed for this generation (a restart)", () => {
  const pending = { ok: false, reason: "Pending", message: "Waiting for the first answer from the forge" } as const;
  const fine = { spec: { ok: true }, credentials: { ok: true } } as const;
  const reachable = computeConditions(
    { ...fine, forge: { ok: true, message: "Gitea 1.26.0 answered" } },
    undefined,
    3,
    t0,
  );
  // A new process (or a new API token) has no answer yet: Ready and ForgeReachable keep status and transition time.
  const restarted = computeConditions({ ...fine, forge: pending }, reachable, 3, t1);
  assert.deepEqual(restarted, reachable);
  assert.equal(statusNeedsWrite({ conditions: reachable }, { conditions: restarted }, 60_000), false);

  const refused = computeConditions(
    { ...fine, forge: { ok: false, reason: "Unauthorized", message: "401" } },
    reachable,
    3,
    t1,
  );
  const stillRefused = computeConditions({ ...fine, forge: pending }, refused, 3, t1);
  assert.deepEqual(stillRefused.map((c) => [c.type, c.status, c.reason]), [
    ["Ready", "False", "Unauthorized"],
    ["SpecValid", "True", "Valid"],
    ["CredentialsAvailable", "True", "Found"],
    ["ForgeReachable", "False", "Unauthorized"],
  ]);

  // A new generation (giteaURL or token Secret changed) has not been observed: Pending until its first answer.
  const changed = computeConditions({ ...fine, forge: pending }, reachable, 4, t1);
  assert.deepEqual(changed.map((c) => [c.type, c.status, c.reason]), [
    ["Ready", "Unknown", "Pending"],
    ["SpecValid", "True", "Valid"],
    ["CredentialsAvailable", "True", "Found"],
    ["ForgeReachable", "Unknown", "Pending"],
  ]);
  // So is a group never checked.
  assert.equal(computeConditions({ ...fine, forge: pending }, undefined, 3, t0)[0].reason, "Pending");
});

Deno.test("an invalid spec reports SpecValid False and Ready False with the message", () => {
  const conditions = computeConditions(
    { spec: { ok: false, reason: "InvalidLabels", message: 'Cannot parse runner label "a::b"' } },
    undefined,
    1,
    t0,
  );
  assert.deepEqual(conditions.map((c) => [c.type, c.status, c.reason]), [
    ["Ready", "False", "InvalidLabels"],
    ["SpecValid", "False", "InvalidLabels"],
  ]);
  assert.match(conditions[0].message, /a::b/);
});

Deno.test("status is written when something but the check time changed, or the check time is stale", () => {
  const conditions = computeConditions({ spec: { ok: true } }, undefined, 1, t0);
  const base = { activeRunners: 1, queuedJobs: 2, observedGeneration: 1, conditions, lastCheckTime: t0.toISOString() };
  const reordered = JSON.parse(canonicalJson(base));
  assert.equal(statusNeedsWrite(reordered, base, 60_000), false);
  assert.equal(statusNeedsWrite(base, { ...base, lastCheckTime: "2026-01-01T00:00:30Z" }, 60_000), false);
  assert.equal(statusNeedsWrite(base, { ...base, lastCheckTime: "2026-01-01T00:01:00Z" }, 60_000), true);
  assert.equal(statusNeedsWrite(base, { ...base, activeRunners: 2 }, 60_000), true);
  assert.equal(statusNeedsWrite(undefined, base, 60_000), true);
});

Deno.test("a status write returns the API server's answer for the cache, and nothing when it wrote nothing", async () => {
  const group: RunnerGroup = {
    metadata: { name: "ci", namespace: "team", uid: "uid-1", resourceVersion: "7", generation: 1 },
    spec: {} as RunnerGroup["spec"],
  };
  const patches: unknown[] = [];
  let answer: unknown;
  const custom = {
    patchNamespacedCustomObjectStatus: (param: { body: unknown }) => {
      patches.push(param.body);
      return Promise.resolve(answer);
    },
  } as unknown as CustomObjectsApi;
  const write = (current: RunnerGroup) =>
    writeStatus(custom, current, { spec: { ok: true } }, { activeRunners: 3 }, t0.getTime(), 60_000);

  answer = { ...group, metadata: { ...group.metadata, resourceVersion: "8" }, status: { activeRunners: 3 } };
  const written = await write(group);
  assert.equal(patches.length, 1);
  assert.equal(written?.metadata.resourceVersion, "8");
  // Read back as written, the same status needs no second write (and keeps its conditions' transition times).
  assert.equal(await write({ ...group, status: (patches[0] as { status: RunnerGroup["status"] }).status }), undefined);
  assert.equal(patches.length, 1);

  // An answer that is not this group (another uid: deleted and created again) is not handed to the cache.
  answer = { ...group, metadata: { ...group.metadata, uid: "uid-2", resourceVersion: "9" } };
  assert.equal(await write(group), undefined);
  assert.equal(patches.length, 2);
});
