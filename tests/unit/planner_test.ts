import assert from "node:assert/strict";
import type { QueuedJob } from "../../src/forge/gitea_client.ts";
import { effectiveRunnerLabels } from "../../src/forge/labels.ts";
import { chooseOwnerGroup, CoverageCache, coverageOf, type GroupCoverage } from "../../src/runner_group/ownership.ts";
import type { RunnerGroup } from "../../src/runner_group/schema.ts";
import { queuedJob } from "./fixtures.ts";
import { type PlanInput, planRunnerJobs, retryDelay, type RunnerJobRecord } from "../../src/runner_group/planner.ts";

const now = 1_000_000;
const job = (id: number, runsOn: string[] = ["linux"], repo = "app"): QueuedJob => queuedJob(id, { runsOn, repo });
const record = (forgeJobId: number, state: RunnerJobRecord["state"], attempt = 0, finishedAt?: number) => ({
  name: `g-${forgeJobId}${attempt ? `-${attempt}` : ""}`,
  forgeJobId,
  attempt,
  state,
  ...(finishedAt !== undefined ? { finishedAt } : {}),
});

function input(overrides: Partial<PlanInput> = {}): PlanInput {
  return {
    groupKey: "ci/g",
    maxActiveRunners: 10,
    labels: effectiveRunnerLabels(["linux:host"], false),
    demand: { jobs: [], fetchedAt: now, busyRunners: new Set<string>() },
    ownerOf: () => "ci/g",
    runnerJobs: [],
    activeElsewhere: new Set(),
    now,
    retry: { limit: 3, baseDelayMs: 10_000, maxDelayMs: 300_000 },
    settleMs: 3000,
    ...overrides,
  };
}
const createdIds = (plan: ReturnType<typeof planRunnerJobs>): number[] => plan.create.map((c) => c.job.id);

Deno.test("one runner per queued matching job, oldest first", () => {
  const plan = planRunnerJobs(
    input({ demand: { jobs: [job(7), job(3), job(5)], fetchedAt: now, busyRunners: new Set<string>() } }),
  );
  assert.deepEqual(createdIds(plan), [3, 5, 7]);
  assert.ok(plan.create.every((c) => c.attempt === 0 && c.replaces === undefined));
  assert.equal(plan.queued, 3);
});

Deno.test("never more active runners than maxActiveRunners", () => {
  const jobs = [job(1), job(2), job(3), job(4)];
  let plan = planRunnerJobs(
    input({ maxActiveRunners: 2, demand: { jobs, fetchedAt: now, busyRunners: new Set<string>() } }),
  );
  assert.deepEqual(createdIds(plan), [1, 2]);
  assert.equal(plan.waitingForCapacity, 2);
  plan = planRunnerJobs(input({
    maxActiveRunners: 2,
    demand: { jobs, fetchedAt: now, busyRunners: new Set<string>() },
    runnerJobs: [record(1, "active"), record(2, "active")],
  }));
  assert.deepEqual(createdIds(plan), []);
  assert.equal(plan.active, 2);
  plan = planRunnerJobs(
    input({ maxActiveRunners: 0, demand: { jobs, fetchedAt: now, busyRunners: new Set<string>() } }),
  );
  assert.deepEqual(createdIds(plan), [], "0 pauses the group");
});

Deno.test("a job with a runner Job already gets no second one, also when it was created by an earlier process", () => {
  const plan = planRunnerJobs(input({
    demand: { jobs: [job(1), job(2)], fetchedAt: now, busyRunners: new Set<string>() },
    runnerJobs: [record(1, "active")],
  }));
  assert.deepEqual(createdIds(plan), [2]);
});

Deno.test("jobs the group cannot run, or another group runs, are left alone", () => {
  const plan = planRunnerJobs(input({
    demand: { jobs: [job(1, ["windows"]), job(2), job(3), job(4)], fetchedAt: now, busyRunners: new Set<string>() },
    ownerOf: (j) => (j.id === 3 ? "ci/other" : "ci/g"),
    activeElsewhere: new Set([4]),
  }));
  assert.deepEqual(createdIds(plan), [2]);
  assert.equal(plan.queued, 2, "jobs 2 and 4 are this group's");
});

Deno.test("no demand yet means nothing to create", () => {
  const plan = planRunnerJobs(input({ demand: undefined, runnerJobs: [record(1, "active")] }));
  assert.deepEqual(plan.create, []);
  assert.equal(plan.active, 1);
});

Deno.test("a failed runner is replaced after its backoff, up to the retry limit", () => {
  const failedAt = now - 60_000;
  const demand = { jobs: [job(1)], fetchedAt: now, busyRunners: new Set<string>() };
  // First failure: base delay 10 s has passed.
  let plan = planRunnerJobs(input({ demand, runnerJobs: [record(1, "failed", 0, failedAt)] }));
  assert.deepEqual(plan.create.map((c) => [c.job.id, c.attempt, c.replaces]), [[1, 1, "g-1"]]);
  // Still within the backoff: nothing now, wake up when it ends.
  plan = planRunnerJobs(input({ demand, runnerJobs: [record(1, "failed", 0, now - 5000)] }));
  assert.deepEqual(plan.create, []);
  assert.equal(plan.wakeAt, now - 5000 + 10_000);
  // Third failure reaches the limit of 3.
  plan = planRunnerJobs(input({
    demand,
    runnerJobs: [record(1, "failed", 0, failedAt), record(1, "failed", 1, failedAt), record(1, "failed", 2, failedAt)],
  }));
  assert.deepEqual(plan.create, []);
  assert.deepEqual(plan.gaveUp.map((g) => [g.job.id, g.failures]), [[1, 3]]);
});

Deno.test("an evicted runner's job is replaced after the backoff, and evictions do not count toward the limit", () => {
  const evicted = (attempt: number, finishedAt: number): RunnerJobRecord => ({
    ...record(1, "failed", attempt, finishedAt),
    evicted: true,
  });
  const demand = { jobs: [job(1)], fetchedAt: now, busyRunners: new Set<string>() };
  const limitOne = { limit: 1, baseDelayMs: 10_000, maxDelayMs: 300_000 };
  // With a retry limit of 1, one failure gives up; one eviction does not.
  let plan = planRunnerJobs(input({ demand, retry: limitOne, runnerJobs: [record(1, "failed", 0, now - 60_000)] }));
  assert.deepEqual(plan.create, []);
  assert.deepEqual(plan.gaveUp.map((g) => g.failures), [1]);
  plan = planRunnerJobs(input({ demand, retry: limitOne, runnerJobs: [evicted(0, now - 60_000)] }));
  assert.deepEqual(plan.create.map((c) => [c.job.id, c.attempt, c.replaces]), [[1, 1, "g-1"]]);
  assert.deepEqual(plan.gaveUp, []);
  // Five evictions and a failure: still below a limit of 3 failures, and the next runner comes.
  plan = planRunnerJobs(input({
    demand,
    runnerJobs: [0, 1, 2, 3, 4].map((attempt) => evicted(attempt, now - 3_600_000)).concat(
      record(1, "failed", 5, now - 3_600_000),
    ),
  }));
  assert.deepEqual(plan.create.map((c) => c.attempt), [6]);
  // The delay counts every ended attempt, evictions too: after two, 20 s.
  plan = planRunnerJobs(input({ demand, runnerJobs: [evicted(0, now - 60_000), evicted(1, now - 15_000)] }));
  assert.deepEqual(plan.create, []);
  assert.equal(plan.wakeAt, now - 15_000 + 20_000);
  // And, as after any runner's end, only on a forge answer fetched after it (the runner may have run the job).
  plan = planRunnerJobs(input({
    demand: { ...demand, fetchedAt: now - 30_000 },
    runnerJobs: [evicted(0, now - 31_000)],
  }));
  assert.deepEqual(plan.create, []);
  assert.equal(plan.answerAfter, now - 31_000 + 3000);
});

Deno.test("failed runner Jobs hold no capacity", () => {
  const plan = planRunnerJobs(input({
    maxActiveRunners: 1,
    demand: { jobs: [job(2)], fetchedAt: now, busyRunners: new Set<string>() },
    runnerJobs: [record(1, "failed", 0, now - 600_000)],
  }));
  assert.equal(plan.active, 0);
  assert.deepEqual(createdIds(plan), [2]);
});

Deno.test("a job is not given a new runner on a forge answer older than its last runner's end", () => {
  const plan = planRunnerJobs(input({
    demand: { jobs: [job(1)], fetchedAt: now - 10_000, busyRunners: new Set<string>() },
    runnerJobs: [record(1, "succeeded", 0, now - 9000)],
  }));
  assert.deepEqual(plan.create, []);
  const later = planRunnerJobs(input({
    demand: { jobs: [job(1)], fetchedAt: now, busyRunners: new Set<string>() },
    runnerJobs: [record(1, "succeeded", 0, now - 9000)],
  }));
  assert.deepEqual(later.create.map((c) => c.attempt), [1], "still queued after a runner that took another job");
});

Deno.test("a runner whose job another runner took is spare: it covers an uncovered job, so none is added", () => {
  // Runner g-1 took job 2; g-2 (made for job 2) still waits. Job 1's runner finished; job 1 is still queued.
  const demand = { jobs: [job(1)], fetchedAt: now, busyRunners: new Set<string>() };
  const runnerJobs = [record(1, "succeeded", 0, now - 60_000), record(2, "active")];
  let plan = planRunnerJobs(input({ demand, runnerJobs }));
  assert.deepEqual(plan.create, [], "g-2 is spare and will take job 1");
  // Once g-2 is busy (it took job 1, which then shows as in progress, not queued) nothing changes either.
  plan = planRunnerJobs(input({ demand: { ...demand, jobs: [] }, runnerJobs }));
  assert.deepEqual(plan.create, []);
  // Without a spare runner, the still-queued job gets a new attempt.
  plan = planRunnerJobs(input({
    demand: { ...demand, busyRunners: new Set(["g-2"]) },
    runnerJobs,
  }));
  assert.deepEqual(plan.create.map((c) => [c.job.id, c.attempt]), [[1, 1]]);
});

Deno.test("spare runners cover the oldest uncovered jobs; newer ones get runners", () => {
  const demand = { jobs: [job(3), job(4), job(5)], fetchedAt: now, busyRunners: new Set<string>() };
  const plan = planRunnerJobs(input({ demand, runnerJobs: [record(1, "active")] }));
  assert.deepEqual(createdIds(plan), [4, 5]);
});

Deno.test("retryDelay doubles up to the maximum", () => {
  const retry = { limit: 5, baseDelayMs: 1000, maxDelayMs: 5000 };
  assert.deepEqual([1, 2, 3, 4, 5].map((n) => retryDelay(n, retry)), [1000, 2000, 4000, 5000, 5000]);
});

const coverage = (key: string, overrides: Partial<GroupCoverage>): GroupCoverage => ({
  key,
  forge: "https://git.example.com",
  scope: "global",
  labels: effectiveRunnerLabels(["linux:host"], false),
  paused: false,
  ...overrides,
});

Deno.test("the coverage cache parses a group's spec again only for a new generation, uid or (without one) version", () => {
  const cache = new CoverageCache((namespace, name) => `${namespace}/${name}`);
  const group = (
    metadata: Partial<RunnerGroup["metadata"]>,
    org: string,
  ): RunnerGroup => ({
    metadata: { namespace: "ci", name: "g", uid: "u1", generation: 1, resourceVersion: "10", ...metadata },
    spec: {
      scope: "org",
      org,
      giteaURL: "https://git.example.com",
      labels: ["linux:host"],
      maxActiveRunners: 2,
      authToken: { name: "tokens", key: "api" },
    },
  });
  const owners = (groups: RunnerGroup[]): (string | undefined)[] => cache.of(groups).map((entry) => entry.owner);
  assert.deepEqual(owners([group({}, "acme")]), ["acme"]);
  // A status write or a finalizer patch: a new resourceVersion, the same generation. The spec is not parsed again (a
  // spec that changed without a new generation, which the API server never sends, shows it).
  assert.deepEqual(owners([group({ resourceVersion: "11" }, "other")]), ["acme"]);
  assert.deepEqual(owners([group({ resourceVersion: "12", generation: 2 }, "other")]), ["other"]);
  // The group deleted and created again under the same name, edited up to the same generation: a new uid.
  assert.deepEqual(owners([group({ uid: "u2", resourceVersion: "20", generation: 2 }, "acme")]), ["acme"]);
  // Without a generation, the resourceVersion decides.
  assert.deepEqual(owners([group({ uid: "u2", generation: undefined, resourceVersion: "21" }, "third")]), ["third"]);
  assert.deepEqual(owners([group({ uid: "u2", generation: undefined, resourceVersion: "21" }, "fourth")]), ["third"]);
  // Groups being deleted are left out, and invalid specs give no coverage.
  assert.deepEqual(owners([group({ uid: "u2", generation: 3, deletionTimestamp: new Date() }, "acme")]), []);
  assert.deepEqual(owners([group({ uid: "u2", generation: 4 }, "")]), []);
});

Deno.test("a group's coverage is paused exactly when its maxActiveRunners is 0", () => {
  const spec = (maxActiveRunners: number): Pick<RunnerGroup, "spec"> => ({
    spec: {
      scope: "org",
      org: "acme",
      giteaURL: "https://git.example.com",
      labels: ["linux:host"],
      maxActiveRunners,
      authToken: { name: "tokens", key: "api" },
    },
  });
  assert.equal(coverageOf("ci/g", spec(0))?.paused, true);
  assert.equal(coverageOf("ci/g", spec(1))?.paused, false);
});

Deno.test("a job several groups can run goes to the most specific scope, ties to the first namespace/name", () => {
  const forge = "https://git.example.com";
  const groups = [
    coverage("a/global", { scope: "global" }),
    coverage("b/org", { scope: "org", owner: "ACME" }),
    coverage("c/repo", { scope: "repo", owner: "acme", repo: "app" }),
    coverage("a/repo", { scope: "repo", owner: "acme", repo: "app" }),
  ];
  assert.equal(chooseOwnerGroup(forge, job(1), groups), "a/repo");
  assert.equal(chooseOwnerGroup(forge, job(1, ["linux"], "other"), groups), "b/org");
  assert.equal(chooseOwnerGroup(forge, job(1, ["gpu"]), groups), undefined);
  assert.equal(chooseOwnerGroup("https://elsewhere", job(1), groups), undefined);
  // Groups in any order give the same owner.
  assert.equal(chooseOwnerGroup(forge, job(1), [...groups].reverse()), "a/repo");
});

Deno.test("paused groups and groups whose labels do not match never own a job", () => {
  const forge = "https://git.example.com";
  const groups = [
    coverage("x/repo", { scope: "repo", owner: "acme", repo: "app", paused: true }),
    coverage("x/user", { scope: "user", owner: "acme", labels: effectiveRunnerLabels(["arm:host"], false) }),
    coverage("x/global", {}),
  ];
  assert.equal(chooseOwnerGroup(forge, job(1), groups), "x/global");
});

Deno.test("a paused group counts the queued jobs it would own if it ran, and starts none of them", () => {
  const forge = "https://git.example.com";
  const groups = [
    coverage("ci/g", { scope: "repo", owner: "acme", repo: "app", paused: true }),
    coverage("ci/other", { scope: "org", owner: "acme" }),
  ];
  const jobs = [job(1), job(2), job(3, ["gpu"]), job(4, ["linux"], "elsewhere")];
  // Job 4 is in another repository: the org group owns it whether or not ci/g runs.
  assert.deepEqual(jobs.map((j) => chooseOwnerGroup(forge, j, groups)), [
    "ci/other",
    "ci/other",
    undefined,
    "ci/other",
  ]);
  assert.deepEqual(jobs.map((j) => chooseOwnerGroup(forge, j, groups, "ci/g")), [
    "ci/g",
    "ci/g",
    undefined,
    "ci/other",
  ]);
  const plan = planRunnerJobs(input({
    maxActiveRunners: 0,
    demand: { jobs, fetchedAt: now, busyRunners: new Set<string>() },
    ownerOf: (j) => chooseOwnerGroup(forge, j, groups),
    queuedFor: (j) => chooseOwnerGroup(forge, j, groups, "ci/g"),
  }));
  assert.equal(plan.queued, 2, "jobs 1 and 2: the group's repository and labels");
  assert.deepEqual(plan.owned, new Set(), "it owns none: the org group runs them meanwhile");
  assert.deepEqual(plan.create, []);
  assert.equal(plan.createWarm, 0);
  // Not paused, the same group owns and counts the same jobs.
  const running = planRunnerJobs(input({
    demand: { jobs, fetchedAt: now, busyRunners: new Set<string>() },
    ownerOf: (j) => chooseOwnerGroup(forge, j, [{ ...groups[0], paused: false }, groups[1]]),
  }));
  assert.equal(running.queued, 2);
  assert.deepEqual(running.owned, new Set([1, 2]));
});

const warm = (slot: number): RunnerJobRecord => ({ name: `g-warm-${slot}`, attempt: 0, state: "active" });
const demandOf = (jobs: QueuedJob[], busy: string[] = []) => ({
  jobs,
  fetchedAt: now,
  busyRunners: new Set(busy),
});

Deno.test("a runner whose job was cancelled is idle, and removed once idle for the grace period", () => {
  // Job 4 is neither queued nor running any more (cancelled); its runner waits for nothing.
  const base = input({ runnerJobs: [record(4, "active")], demand: demandOf([]), idleGraceMs: 60_000 });
  let plan = planRunnerJobs({ ...base, idleSince: () => undefined });
  assert.deepEqual(plan.idle, ["g-4"]);
  assert.deepEqual(plan.remove, [], "first seen idle now: not removed yet");
  assert.equal(plan.wakeAt, now + 60_000, "the reconcile comes back when the grace period ends");
  plan = planRunnerJobs({ ...base, idleSince: () => now - 59_999 });
  assert.deepEqual(plan.remove, []);
  plan = planRunnerJobs({ ...base, idleSince: () => now - 60_000 });
  assert.deepEqual(plan.remove, ["g-4"]);
});

Deno.test("a runner that is running a job, or whose own job is still queued, is never idle", () => {
  const plan = planRunnerJobs(input({
    runnerJobs: [record(1, "active"), record(2, "active")],
    // g-1 runs job 9 (taken from another runner); job 2 is still queued and waits for g-2.
    demand: demandOf([job(2)], ["g-1"]),
    idleGraceMs: 0,
    idleSince: () => now - 1_000_000,
  }));
  assert.deepEqual(plan.idle, []);
  assert.deepEqual(plan.remove, []);
  assert.deepEqual(createdIds(plan), []);
});

Deno.test("an idle runner that will take an uncovered job is kept, and that job gets no runner of its own", () => {
  const plan = planRunnerJobs(input({
    runnerJobs: [record(4, "active")],
    demand: demandOf([job(8)]),
    idleGraceMs: 0,
    idleSince: () => now - 1_000_000,
  }));
  assert.deepEqual(plan.idle, ["g-4"]);
  assert.deepEqual(plan.remove, []);
  assert.deepEqual(createdIds(plan), []);
});

Deno.test("a runner finishing its job is not idle: a job queued meanwhile gets a runner at once", () => {
  // g-4 ran job 4 and has not exited yet; job 8 was queued meanwhile. g-4 takes no other job (each runner takes one),
  // so job 8 gets its own runner now, not once g-4 has exited.
  const finishing = new Set(["g-4"]);
  let plan = planRunnerJobs(input({
    runnerJobs: [record(4, "active")],
    demand: demandOf([job(8)]),
    finishing,
    idleGraceMs: 0,
    idleSince: () => now - 1_000_000,
  }));
  assert.deepEqual(plan.idle, []);
  assert.deepEqual(createdIds(plan), [8]);
  assert.deepEqual(plan.remove, [], "a finishing runner exits by itself: it is not removed as an idle one");
  assert.equal(plan.active, 1);
  // It still holds its slot until it exits.
  plan = planRunnerJobs(
    input({ maxActiveRunners: 1, runnerJobs: [record(4, "active")], demand: demandOf([job(8)]), finishing }),
  );
  assert.deepEqual(createdIds(plan), []);
  assert.equal(plan.waitingForCapacity, 1);
  // A warm runner that ran a job does not fill the pool while it winds down.
  plan = planRunnerJobs(
    input({ minIdleRunners: 1, runnerJobs: [warm(0)], demand: demandOf([]), finishing: new Set(["g-warm-0"]) }),
  );
  assert.equal(plan.createWarm, 1);
});

Deno.test("the warm pool is filled up to minIdleRunners, within maxActiveRunners, after the queued jobs", () => {
  let plan = planRunnerJobs(input({ minIdleRunners: 2, demand: demandOf([]) }));
  assert.equal(plan.createWarm, 2);
  plan = planRunnerJobs(input({ minIdleRunners: 2, runnerJobs: [warm(0)], demand: demandOf([]) }));
  assert.equal(plan.createWarm, 1);
  // Three queued jobs, limit 4: the jobs take three slots, one is left for the pool.
  plan = planRunnerJobs(input({ maxActiveRunners: 4, minIdleRunners: 2, demand: demandOf([job(1), job(2), job(3)]) }));
  assert.deepEqual(createdIds(plan), [1, 2, 3]);
  assert.equal(plan.createWarm, 1);
  // minIdleRunners above the limit is capped by it; a paused group keeps no pool.
  plan = planRunnerJobs(input({ maxActiveRunners: 1, minIdleRunners: 5, demand: demandOf([]) }));
  assert.equal(plan.createWarm, 1);
  plan = planRunnerJobs(input({ maxActiveRunners: 0, minIdleRunners: 5, demand: demandOf([]) }));
  assert.equal(plan.createWarm, 0);
  // No answer from the forge: nothing is created, nothing removed.
  plan = planRunnerJobs(input({ minIdleRunners: 2, demand: undefined }));
  assert.equal(plan.createWarm, 0);
  assert.deepEqual(plan.remove, []);
});

Deno.test("a warm runner that takes a queued job is replaced; the job gets no runner of its own", () => {
  // Job 5 is queued and warm-0 is idle: warm-0 will take it, and the pool needs a new runner.
  let plan = planRunnerJobs(input({ minIdleRunners: 1, runnerJobs: [warm(0)], demand: demandOf([job(5)]) }));
  assert.deepEqual(createdIds(plan), []);
  assert.equal(plan.createWarm, 1);
  // warm-0 now runs job 5: it is busy; warm-1 is the pool.
  plan = planRunnerJobs(input({
    minIdleRunners: 1,
    runnerJobs: [warm(0), warm(1)],
    demand: demandOf([], ["g-warm-0"]),
  }));
  assert.deepEqual(plan.idle, ["g-warm-1"]);
  assert.equal(plan.createWarm, 0);
  assert.deepEqual(plan.remove, []);
});

Deno.test("idle runners beyond the warm pool are removed, longest idle first; the pool itself is kept", () => {
  const idleSince = new Map([["g-warm-0", now - 500_000], ["g-4", now - 900_000], ["g-6", now - 100_000]]);
  const plan = planRunnerJobs(input({
    minIdleRunners: 1,
    runnerJobs: [warm(0), record(4, "active"), record(6, "active")],
    demand: demandOf([]),
    idleGraceMs: 60_000,
    idleSince: (name) => idleSince.get(name),
  }));
  assert.deepEqual(plan.idle.sort(), ["g-4", "g-6", "g-warm-0"]);
  assert.deepEqual(plan.remove, ["g-4", "g-warm-0"]);
  assert.equal(plan.createWarm, 0);
});

Deno.test("lowering maxActiveRunners below the active count removes idle runners, never busy ones", () => {
  const plan = planRunnerJobs(input({
    maxActiveRunners: 1,
    minIdleRunners: 3,
    runnerJobs: [warm(0), warm(1), warm(2)],
    demand: demandOf([], ["g-warm-1"]),
    idleGraceMs: 0,
    idleSince: () => now,
  }));
  assert.deepEqual(plan.remove.sort(), ["g-warm-0", "g-warm-2"]);
  assert.equal(plan.createWarm, 0);
});

Deno.test("failing warm runners are replaced one at a time, after a doubling delay", () => {
  const failed = (slot: number, finishedAt: number): RunnerJobRecord => ({
    name: `g-warm-${slot}`,
    attempt: 0,
    state: "failed",
    finishedAt,
  });
  // One failure 5 s ago: the base delay (10 s) has not passed.
  let plan = planRunnerJobs(input({ minIdleRunners: 2, runnerJobs: [failed(0, now - 5_000)], demand: demandOf([]) }));
  assert.equal(plan.createWarm, 0);
  assert.equal(plan.wakeAt, now + 5_000);
  // Once it has, one runner at a time.
  plan = planRunnerJobs(input({ minIdleRunners: 2, runnerJobs: [failed(0, now - 10_000)], demand: demandOf([]) }));
  assert.equal(plan.createWarm, 1);
  // Three failures on record: 40 s after the last.
  const three = [failed(0, now - 60_000), failed(1, now - 50_000), failed(2, now - 30_000)];
  plan = planRunnerJobs(input({ minIdleRunners: 2, runnerJobs: three, demand: demandOf([]) }));
  assert.equal(plan.createWarm, 0);
  assert.equal(plan.wakeAt, now + 10_000);
  // Queued jobs still get their runners meanwhile.
  plan = planRunnerJobs(input({ minIdleRunners: 2, runnerJobs: three, demand: demandOf([job(3)]) }));
  assert.deepEqual(createdIds(plan), [3]);
});

Deno.test("no warm runner is added on a forge answer older than a runner's end: that runner may have run the job", () => {
  // warm-0 ran job 5 and finished 1 s ago; the answer (fetched 2 s ago) still shows job 5 queued, so warm-1 looks
  // like it must take job 5 and the pool looks empty.
  const finished: RunnerJobRecord = { name: "g-warm-0", attempt: 0, state: "succeeded", finishedAt: now - 1_000 };
  const stale = { jobs: [job(5)], fetchedAt: now - 2_000, busyRunners: new Set<string>() };
  let plan = planRunnerJobs(input({ minIdleRunners: 1, runnerJobs: [finished, warm(1)], demand: stale }));
  assert.equal(plan.createWarm, 0);
  assert.deepEqual(createdIds(plan), []);
  // A later answer no longer shows job 5: warm-1 is the pool.
  plan = planRunnerJobs(input({ minIdleRunners: 1, runnerJobs: [finished, warm(1)], demand: demandOf([]) }));
  assert.equal(plan.createWarm, 0);
  assert.deepEqual(plan.idle, ["g-warm-1"]);
  // With the pool empty, an answer fetched less than settleMs after the end still waits; a later one refills it.
  plan = planRunnerJobs(input({ minIdleRunners: 1, runnerJobs: [finished], demand: demandOf([]) }));
  assert.equal(plan.createWarm, 0);
  const older = { ...finished, finishedAt: now - 3_000 };
  plan = planRunnerJobs(input({ minIdleRunners: 1, runnerJobs: [older], demand: demandOf([]) }));
  assert.equal(plan.createWarm, 1);
});

Deno.test("an answer older than a runner's end asks for a later answer, for a job's own runner and for the pool", () => {
  // Job 3's runner finished 1 s ago; the answer was fetched 2 s ago and still shows job 3 queued.
  const stale = { jobs: [job(3)], fetchedAt: now - 2_000, busyRunners: new Set<string>() };
  let plan = planRunnerJobs(input({ runnerJobs: [record(3, "succeeded", 0, now - 1_000)], demand: stale }));
  assert.deepEqual(createdIds(plan), []);
  assert.equal(plan.answerAfter, now - 1_000 + 3_000, "an answer fetched settleMs after the end");
  // The same for the warm pool.
  const finished: RunnerJobRecord = { name: "g-warm-0", attempt: 0, state: "succeeded", finishedAt: now - 500 };
  plan = planRunnerJobs(input({ minIdleRunners: 1, runnerJobs: [finished], demand: demandOf([]) }));
  assert.equal(plan.createWarm, 0);
  assert.equal(plan.answerAfter, now - 500 + 3_000);
  // A settled answer asks for nothing.
  plan = planRunnerJobs(input({ minIdleRunners: 1, runnerJobs: [{ ...finished, finishedAt: now - 3_000 }] }));
  assert.equal(plan.createWarm, 1);
  assert.equal(plan.answerAfter, undefined);
});
