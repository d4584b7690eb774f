/** The job tracker: forge answers and one read per finished job in, start and completion events out. */
import assert from "node:assert/strict";
import type { JobDetail, QueuedJob, RunningJob } from "../../src/forge/gitea_client.ts";
import { type GroupRunners, type JobEvent, JobTracker } from "../../src/runner_group/job_tracker.ts";

const t0 = Date.parse("2026-01-01T10:00:00Z");
const at = (seconds: number): string => new Date(t0 + seconds * 1000).toISOString();

const queued = (id: number, queuedAt = 0): QueuedJob => ({
  id,
  runId: 100 + id,
  name: `job-${id}`,
  runsOn: ["linux"],
  owner: "acme",
  repo: "app",
  createdAt: at(queuedAt),
  htmlUrl: "",
});
const running = (id: number, runner: string, startedAt: number, queuedAt = 0): RunningJob => ({
  id,
  runnerName: runner,
  runId: 100 + id,
  name: `job-${id}`,
  owner: "acme",
  repo: "app",
  createdAt: at(queuedAt),
  startedAt: at(startedAt),
});
const completed = (
  id: number,
  runner: string,
  conclusion: string,
  times: { queued?: number; started: number; completed: number },
): JobDetail => ({
  ...running(id, runner, times.started, times.queued ?? 0),
  status: "completed",
  conclusion,
  completedAt: at(times.completed),
});

/** The group's runners: g-<n> created at the given second. */
function runnersOf(created: Record<string, number>): GroupRunners {
  return {
    isOwn: (name) => name in created,
    createdAt: (name) => (name in created ? t0 + created[name] * 1000 : undefined),
  };
}

const answer = (
  second: number,
  jobs: { queued?: QueuedJob[]; running?: RunningJob[]; owned?: number[] },
) => ({
  fetchedAt: t0 + second * 1000,
  queued: jobs.queued ?? [],
  running: jobs.running ?? [],
  owned: new Set(jobs.owned ?? (jobs.queued ?? []).map((job) => job.id)),
});

Deno.test("a job seen queued, then running on the group's runner, then gone: started once, completed once", () => {
  const tracker = new JobTracker(t0);
  const runners = runnersOf({ "g-1": 2 });
  assert.deepEqual(tracker.observe(answer(1, { queued: [queued(1)] }), runners), []);
  const started = tracker.observe(answer(10, { running: [running(1, "g-1", 8)] }), runners);
  assert.deepEqual(started, [{
    type: "started",
    jobId: 1,
    runId: 101,
    repository: "acme/app",
    queueSeconds: 8,
    runnerStartSeconds: 6, // the runner Job was created at 2 s, after the job was queued
  }]);
  assert.deepEqual(tracker.observe(answer(20, { running: [running(1, "g-1", 8)] }), runners), [], "counted once");
  assert.deepEqual(tracker.leaving(), []);
  assert.deepEqual(tracker.outcomeOf("g-1"), {
    jobId: 1,
    repository: "acme/app",
    jobName: "job-1",
    queuedAt: t0,
    startedAt: t0 + 8000,
  });

  assert.deepEqual(tracker.observe(answer(40, {}), runners), []);
  assert.deepEqual(
    tracker.leaving(),
    [{ id: 1, runId: 101, owner: "acme", repo: "app" }],
    "gone from both lists: read it once",
  );
  const done = tracker.settle(1, completed(1, "g-1", "failure", { started: 8, completed: 38 }), runners, t0);
  assert.deepEqual(done, [{
    type: "completed",
    jobId: 1,
    runId: 101,
    repository: "acme/app",
    result: "failure",
    runSeconds: 30,
  }]);
  assert.deepEqual(tracker.leaving(), [], "read once, not again");
  assert.deepEqual(tracker.observe(answer(50, {}), runners), []);
  assert.deepEqual(tracker.leaving(), []);
  assert.equal(tracker.outcomeOf("g-1")?.result, "failure");
  assert.equal(tracker.outcomeOf("g-1")?.finishedAt, t0 + 38_000);
  tracker.forgetRunner("g-1");
  assert.equal(tracker.outcomeOf("g-1"), undefined);
});

Deno.test("a job that starts and ends between two answers is read once and counted as started and completed", () => {
  const tracker = new JobTracker(t0);
  const runners = runnersOf({ "g-warm-0": -60 });
  tracker.observe(answer(1, { queued: [queued(5, 1)] }), runners);
  tracker.observe(answer(11, {}), runners);
  const events = tracker.settle(
    5,
    completed(5, "g-warm-0", "success", { queued: 1, started: 2, completed: 9 }),
    runners,
    t0,
  );
  assert.deepEqual(events.map((event) => event.type), ["started", "completed"]);
  const [start, end] = events as [Extract<JobEvent, { type: "started" }>, Extract<JobEvent, { type: "completed" }>];
  assert.equal(start.queueSeconds, 1);
  // A warm runner waited before the job was queued: only its pickup counts as runner start time.
  assert.equal(start.runnerStartSeconds, 1);
  assert.equal(end.runSeconds, 7);
  assert.equal(end.result, "success");
});

Deno.test("jobs taken by other runners, cancelled before any runner took them, or gone are not counted", () => {
  const tracker = new JobTracker(t0);
  const runners = runnersOf({ "g-1": 0, "g-2": 0 });
  tracker.observe(answer(1, { queued: [queued(1), queued(2), queued(3)] }), runners);
  // Job 1 is taken by a runner outside the group: dropped at once, never read.
  tracker.observe(answer(10, { queued: [queued(2), queued(3)], running: [running(1, "elsewhere", 5)] }), runners);
  tracker.observe(answer(20, {}), runners);
  assert.deepEqual(tracker.leaving().map((job) => job.id), [2, 3]);
  const cancelled = { ...completed(2, "", "cancelled", { started: 0, completed: 15 }), startedAt: "" };
  assert.deepEqual(tracker.settle(2, cancelled, runners, t0), [], "cancelled while queued");
  assert.deepEqual(tracker.settle(3, undefined, runners, t0), [], "the forge no longer has it (404)");
  assert.deepEqual(tracker.leaving(), []);
  // A job that another runner took between two answers: read, and not the group's.
  tracker.observe(answer(30, { queued: [queued(4)] }), runners);
  tracker.observe(answer(40, {}), runners);
  assert.deepEqual(
    tracker.settle(4, completed(4, "elsewhere", "success", { started: 31, completed: 35 }), runners, t0),
    [],
  );
  assert.equal(tracker.outcomeOf("elsewhere"), undefined);
});

Deno.test("a job owned by another group, taken by a spare runner of this group, is this group's", () => {
  const tracker = new JobTracker(t0);
  const runners = runnersOf({ "g-7": 0 });
  const events = tracker.observe(
    answer(10, { queued: [queued(8)], running: [running(9, "g-7", 9)], owned: [] }),
    runners,
  );
  assert.deepEqual(events.map((event) => [event.type, event.jobId]), [["started", 9]]);
  tracker.observe(answer(20, { queued: [queued(8)], owned: [] }), runners);
  assert.deepEqual(tracker.leaving().map((job) => job.id), [9], "job 8 was never this group's to watch");
});

Deno.test("a job that started before the tracker (an earlier process counted it) is counted only when it ends", () => {
  const tracker = new JobTracker(t0 + 60_000);
  const runners = runnersOf({ "g-1": 0 });
  assert.deepEqual(tracker.observe(answer(61, { running: [running(1, "g-1", 30)] }), runners), []);
  tracker.observe(answer(70, {}), runners);
  const events = tracker.settle(1, completed(1, "g-1", "success", { started: 30, completed: 65 }), runners, t0);
  assert.deepEqual(events.map((event) => event.type), ["completed"]);
  // Gitea's times have one-second resolution: a start in the tracker's own second is new.
  const fresh = new JobTracker(t0 + 60_500);
  assert.equal(fresh.observe(answer(62, { running: [running(2, "g-1", 60)] }), runners).length, 1);
});

Deno.test("an answer no newer than the last is ignored; a job read while still open is read again, at most 3 times", () => {
  const tracker = new JobTracker(t0);
  const runners = runnersOf({ "g-1": 0 });
  const first = answer(10, { running: [running(1, "g-1", 5)] });
  assert.equal(tracker.observe(first, runners).length, 1);
  assert.deepEqual(tracker.observe({ ...first, running: [] }, runners), [], "same fetch time: nothing new");
  assert.deepEqual(tracker.leaving(), []);
  const stillRunning: JobDetail = { ...running(1, "g-1", 5), status: "in_progress", conclusion: "", completedAt: "" };
  for (let second = 20; second <= 40; second += 10) {
    tracker.observe(answer(second, {}), runners);
    assert.deepEqual(tracker.leaving().map((job) => job.id), [1], `left at ${second} s`);
    assert.deepEqual(tracker.settle(1, stillRunning, runners, t0), []);
  }
  tracker.observe(answer(50, {}), runners);
  assert.deepEqual(tracker.leaving(), [], "given up after 3 reads");
  // Failed reads are tried again by later reconciles, also at most 3 times.
  tracker.observe(answer(60, { running: [running(2, "g-1", 55)] }), runners);
  tracker.observe(answer(70, {}), runners);
  tracker.readFailed(2);
  tracker.readFailed(2);
  assert.deepEqual(tracker.leaving().map((job) => job.id), [2]);
  tracker.readFailed(2);
  assert.deepEqual(tracker.leaving(), []);
});
