import assert from "node:assert/strict";
import { forgeFeatures, parseForgeVersion } from "../../src/forge/forge_client.ts";
import { Limiter, settleBounded } from "../../src/runtime/concurrency.ts";
import { type ApplyOptions, applyPlan, warmSlots } from "../../src/runner_group/apply.ts";
import type { Plan, PlannedRunner } from "../../src/runner_group/planner.ts";
import { logger } from "../../src/log.ts";
import { warmRunnerJobName } from "../../src/runner_group/runner_job.ts";
import { validateGroup } from "../../src/runner_group/validate.ts";
import { queuedJob, repoSpec } from "./fixtures.ts";

/** The apply context of group team/ci: repo scope on acme/app, runs jobs labelled `linux`. */
const ciContext = (maxActiveRunners: number) => ({
  key: "team/ci",
  namespace: "team",
  name: "ci",
  uid: "u1",
  spec: {
    scope: "repo",
    org: "acme",
    repo: "app",
    giteaURL: "https://gitea.example.com",
    maxActiveRunners,
    authToken: { name: "tokens", key: "api" },
  } as never,
  labels: [{ name: "linux" }] as never,
  registrationToken: { name: "tokens", key: "registration" },
});

/** A Gitea 1.26 client whose runner list is `listRunners`; nothing else is called by these applies. */
const gitea126 = (listRunners: () => Promise<unknown[]>) =>
  ({
    listRunners,
    forge: parseForgeVersion("gitea", "1.26.0"),
    features: forgeFeatures(parseForgeVersion("gitea", "1.26.0")),
  }) as never;

/** A plan that creates runner Jobs for `create` (and `createWarm` warm-pool runners) and removes nothing. */
const createPlan = (create: PlannedRunner[], createWarm = 0): Plan => ({
  create,
  createWarm,
  idle: [],
  remove: [],
  active: 0,
  queued: create.length,
  owned: new Set(create.map(({ job }) => job.id)),
  waitingForCapacity: 0,
  gaveUp: [],
});

/** Applies `plan` for group team/ci on Gitea 1.26, a group with no runner Jobs yet and no orphan sweep due. */
const applyForCi = (options: ApplyOptions, plan: Plan, maxActiveRunners: number) =>
  applyPlan({
    options,
    plan,
    context: ciContext(maxActiveRunners),
    forge: "https://gitea.example.com",
    forgeClient: gitea126(() => Promise.resolve([])),
    endpoint: { scope: "repo", owner: "acme", repo: "app" },
    namesInUse: new Set(),
    allRunnerJobs: [],
    idleSince: new Map(),
    orphans: { sweptAt: Date.now(), firstSeen: new Map() },
    target: { apiVersion: "gitea.bpg.pw/v1alpha1", kind: "RunnerGroup", name: "ci", namespace: "team", uid: "u1" },
    log: logger("test"),
    now: Date.now(),
  });

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
  const base = repoSpec;
  const ok = validateGroup({ spec: { ...base, labels: ["linux"] } } as never);
  assert.equal(ok.ok, true);
  const badSpec = validateGroup({ spec: { ...base, scope: "repo", repo: undefined } } as never);
  assert.equal(badSpec.ok, false);
  assert.equal(!badSpec.ok && badSpec.reason, "InvalidSpec");
  const badLabels = validateGroup({ spec: { ...base, labels: ["a::b"] } } as never);
  assert.equal(!badLabels.ok && badLabels.reason, "InvalidLabels");
  const history = validateGroup({ spec: { ...base, history: { recentRunners: 51 } } } as never);
  assert.equal(!history.ok && history.reason, "InvalidSpec");
  assert.match(!history.ok ? history.message : "", /^spec\.history\.recentRunners: .*50/);
});

Deno.test("applyPlan creates a burst concurrently within the bound, counts AlreadyExists as done, and never repeats", async () => {
  let inFlight = 0;
  let peak = 0;
  const names: string[] = [];
  const batch = {
    createNamespacedJob: async ({ body }: { body: { metadata: { name: string } } }) => {
      names.push(body.metadata.name);
      inFlight++;
      peak = Math.max(peak, inFlight);
      await new Promise((resolve) => setTimeout(resolve, 5));
      inFlight--;
      // Two of them exist already (created by an earlier attempt that the cache has not shown yet).
      if (body.metadata.name.endsWith("-3") || body.metadata.name.endsWith("-7")) throw { code: 409 };
      return body;
    },
  };
  const job = (id: number) => queuedJob(id, { createdAt: new Date().toISOString() });
  const events: { reason: string; message: string }[] = [];
  const assumed: string[] = [];
  const applied = await applyForCi(
    {
      batch: batch as never,
      core: {} as never,
      events: {
        record: (_t: unknown, _k: string, reason: string, message: string) => (
          events.push({ reason, message }), Promise.resolve()
        ),
      } as never,
      assume: (created) => assumed.push(created.metadata!.name!),
      runnerImage: "runner:1",
      createSlots: new Limiter(3),
      idleGraceMs: 60_000,
    },
    createPlan(Array.from({ length: 10 }, (_, i) => ({ job: job(i + 1), attempt: 0 })), 2),
    12,
  );
  assert.equal(peak, 3, "at most the limiter's creates in flight");
  assert.equal(names.length, 12, "one create per planned runner, none repeated");
  assert.equal(new Set(names).size, 12);
  assert.equal(applied.created, 12, "AlreadyExists counts as a runner that exists");
  assert.deepEqual(assumed.toSorted(), names.filter((name) => !/-(3|7)$/.test(name)).toSorted(), "created Jobs only");
  // The 8 Jobs created for queued jobs are one event: a burst is one API write (409s were created earlier).
  const created = events.filter((event) => event.reason === "RunnerJobCreated");
  assert.equal(created.length, 1);
  assert.match(
    created[0].message,
    /^Created 8 runner Jobs: ci-1 for job 1 of acme\/app, ci-2 for job 2 of acme\/app, /,
  );
  assert.doesNotMatch(created[0].message, /ci-3 |ci-7 |more/);
  assert.equal(events.filter((event) => event.reason === "WarmRunnerCreated").length, 2);
});

Deno.test("applyPlan reports each evicted runner as a RunnerEvicted event and in the evictions counter", async () => {
  const { OperatorMetrics } = await import("../../src/metrics.ts");
  const metrics = new OperatorMetrics();
  const events: { type: string; reason: string; message: string }[] = [];
  await applyPlan({
    options: {
      batch: {} as never,
      core: {} as never,
      events: {
        record: (_target: unknown, type: string, reason: string, message: string) => (
          events.push({ type, reason, message }), Promise.resolve()
        ),
      } as never,
      metrics,
      runnerImage: "runner:1",
      createSlots: new Limiter(1),
      idleGraceMs: 60_000,
    },
    plan: createPlan([]),
    context: {
      key: "team/ci",
      namespace: "team",
      name: "ci",
      uid: "u1",
      spec: {} as never,
      labels: [],
      registrationToken: { name: "tokens", key: "registration" },
    },
    forge: "https://gitea.example.com",
    endpoint: { scope: "repo", owner: "acme", repo: "app" },
    namesInUse: new Set(),
    allRunnerJobs: [],
    idleSince: new Map(),
    orphans: { sweptAt: Date.now(), firstSeen: new Map() },
    evictions: [
      { name: "ci-41", uid: "j1", forgeJobId: 41, message: "Pod team/ci-41-x has condition DisruptionTarget" },
      { name: "ci-warm-0", uid: "j2", message: "Pod team/ci-warm-0-y has condition DisruptionTarget" },
    ],
    target: { apiVersion: "gitea.bpg.pw/v1alpha1", kind: "RunnerGroup", name: "ci", namespace: "team", uid: "u1" },
    log: logger("test"),
    now: Date.now(),
  });
  assert.deepEqual(events.map((event) => [event.type, event.reason]), [
    ["Warning", "RunnerEvicted"],
    ["Warning", "RunnerEvicted"],
  ]);
  assert.match(events[0].message, /^Runner Job ci-41 for job 41 lost its pod .*DisruptionTarget.*still queued/);
  assert.match(events[1].message, /^Warm-pool runner Job ci-warm-0 lost its pod/);
  assert.match(
    await metrics.render(),
    /^gitea_runner_operator_runner_evictions_total\{namespace="team",runnergroup="ci"\} 2$/m,
  );
});

Deno.test("a Limiter bounds the tasks of all its callers together, in the order they asked", async () => {
  const limiter = new Limiter(3);
  let inFlight = 0;
  let peak = 0;
  const started: string[] = [];
  const task = (name: string, ms: number) => async () => {
    started.push(name);
    inFlight++;
    peak = Math.max(peak, inFlight);
    await new Promise((resolve) => setTimeout(resolve, ms));
    inFlight--;
    if (name === "a2") throw new Error("a2 failed");
    return name;
  };
  // Two reconciles at once, each bounded on its own to 3 as well: together still 3 in flight.
  const [a, b] = await Promise.all([
    settleBounded(["a1", "a2", "a3", "a4", "a5"], 3, (name) => limiter.run(task(name, 5))),
    settleBounded(["b1", "b2", "b3", "b4"], 3, (name) => limiter.run(task(name, 3))),
  ]);
  assert.equal(peak, 3);
  assert.equal(limiter.running, 0, "every slot given back, a failed task's too");
  assert.deepEqual(a.map((result) => result.status), ["fulfilled", "rejected", "fulfilled", "fulfilled", "fulfilled"]);
  assert.deepEqual(b.map((result) => result.status === "fulfilled" && result.value), ["b1", "b2", "b3", "b4"]);
  // The first three asked first; the others waited in turn (b's first three asked before a's fourth).
  assert.deepEqual(started.slice(0, 3), ["a1", "a2", "a3"]);
  assert.deepEqual(started.slice(3, 6), ["b1", "b2", "b3"]);
  assert.throws(() => new Limiter(0), /whole number from 1/);
});

Deno.test("a Limiter is idle once no task runs or waits for a slot", async () => {
  const limiter = new Limiter(1);
  await limiter.whenIdle();
  const ended: string[] = [];
  const task = (name: string, ms: number) => () =>
    new Promise<void>((resolve) => setTimeout(() => (ended.push(name), resolve()), ms));
  const a = limiter.run(task("a", 20));
  const b = limiter.run(task("b", 5));
  await limiter.whenIdle().then(() => ended.push("idle"));
  await Promise.all([a, b]);
  assert.deepEqual(ended, ["a", "b", "idle"], "the waiting task too");
  assert.equal(limiter.running, 0);
});

Deno.test("applyPlan's work after its creates waits until the shared creates of other groups are done", async () => {
  const slots = new Limiter(2);
  const order: string[] = [];
  // Another group's create, in flight when this group's reconcile starts.
  const other = slots.run(() => new Promise<void>((resolve) => setTimeout(() => (order.push("other"), resolve()), 30)));
  const job = queuedJob(1, { createdAt: "" });
  await applyPlan({
    options: {
      batch: {
        createNamespacedJob: ({ body }: { body: { metadata: { name: string } } }) => (order.push("create"), body),
      } as never,
      core: {} as never,
      events: { record: () => Promise.resolve() } as never,
      runnerImage: "runner:1",
      createSlots: slots,
      idleGraceMs: 60_000,
    },
    plan: createPlan([{ job, attempt: 0 }]),
    context: ciContext(2),
    forge: "https://gitea.example.com",
    forgeClient: gitea126(() => (order.push("list runners"), Promise.resolve([]))),
    endpoint: { scope: "repo", owner: "acme", repo: "app" },
    namesInUse: new Set(),
    allRunnerJobs: [],
    idleSince: new Map(),
    // The sweep is due, so the apply lists the forge's runners after its creates.
    orphans: { sweptAt: 0, firstSeen: new Map() },
    target: { apiVersion: "gitea.bpg.pw/v1alpha1", kind: "RunnerGroup", name: "ci", namespace: "team", uid: "u1" },
    log: logger("test"),
    now: Date.now(),
  });
  await other;
  assert.deepEqual(order, ["create", "other", "list runners"]);
});

Deno.test("applyPlan holds a create slot for the request only: the next create starts before the last one is recorded", async () => {
  const order: string[] = [];
  let inFlight = 0;
  let peak = 0;
  const batch = {
    createNamespacedJob: async ({ body }: { body: { metadata: { name: string } } }) => {
      order.push(`create ${body.metadata.name}`);
      peak = Math.max(peak, ++inFlight);
      await new Promise((resolve) => setTimeout(resolve, 5));
      inFlight--;
      return body;
    },
  };
  await applyForCi(
    {
      batch: batch as never,
      core: {} as never,
      events: { record: () => Promise.resolve() } as never,
      assume: (created) => order.push(`assume ${created.metadata!.name}`),
      runnerImage: "runner:1",
      createSlots: new Limiter(1),
      idleGraceMs: 60_000,
    },
    createPlan([1, 2, 3].map((id) => ({ job: queuedJob(id, { createdAt: "" }), attempt: 0 }))),
    3,
  );
  assert.equal(peak, 1, "one create in flight with one slot");
  assert.equal(order.length, 6);
  // The slot passes to the next create (its body built while it waited) as soon as an answer arrives; the answer is
  // put in the cache after that. This is the order of calls: the real client writes the request when the event loop
  // next turns, after the bookkeeping of every answer read in this turn (see tests/bench/NOTES.md, "What the live rate
  // answers to").
  assert.ok(order.indexOf("create ci-2") < order.indexOf("assume ci-1"), order.join(", "));
  assert.ok(order.indexOf("create ci-3") < order.indexOf("assume ci-2"), order.join(", "));
});
