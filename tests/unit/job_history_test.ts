/** status.recentRunners: which finished runner Jobs it shows, when, in what order, and that it outlives Jobs and restarts. */
import assert from "node:assert/strict";
import type { V1Job } from "@kubernetes/client-node";
import { mergeRecentRunners, RunnerHistory, runnerJobEnd } from "../../src/runner_group/job_history.ts";
import type { JobOutcome } from "../../src/runner_group/job_tracker.ts";
import { evictedJobReason } from "../../src/runner_group/runner_job.ts";
import type { RecentRunner } from "../../src/runner_group/schema.ts";

const t0 = Date.parse("2026-01-01T10:00:00Z");
const iso = (second: number): string => new Date(t0 + second * 1000).toISOString();

/** A runner Job of the group as the informer shows it; `end` adds a finished condition at that second. */
function runnerJob(
  name: string,
  options: { created?: number; forJob?: number; end?: { type: "Complete" | "Failed"; at: number; reason?: string } } =
    {},
): V1Job {
  return {
    metadata: {
      name,
      uid: `uid-${name}-${options.created ?? 0}`,
      creationTimestamp: new Date(t0 + (options.created ?? 0) * 1000),
      labels: options.forJob === undefined
        ? { "gitea.bpg.pw/warm": "true" }
        : { "gitea.bpg.pw/job-id": String(options.forJob) },
      annotations: options.forJob === undefined
        ? {}
        : { "gitea.bpg.pw/repository": "acme/app", "gitea.bpg.pw/job-name": `job-${options.forJob}` },
    },
    status: options.end
      ? {
        conditions: [{
          type: options.end.type,
          status: "True",
          lastTransitionTime: new Date(t0 + options.end.at * 1000),
          ...(options.end.reason
            ? { reason: options.end.reason, message: "Job was active longer than specified" }
            : {}),
        }],
      }
      : {},
  };
}

const outcome = (jobId: number, result?: string): JobOutcome => ({
  jobId,
  repository: "acme/app",
  jobName: `job-${jobId}`,
  queuedAt: t0,
  startedAt: t0 + 5000,
  ...(result ? { result, finishedAt: t0 + 25_000 } : {}),
});

const entriesAt = (
  history: RunnerHistory,
  second: number,
  options: { previous?: RecentRunner[]; outcomes?: Record<string, JobOutcome>; fetched?: number; limit?: number } = {},
) =>
  history.entries({
    previous: options.previous ?? [],
    limit: options.limit ?? 10,
    outcomeOf: (runner) => options.outcomes?.[runner],
    fetchedAt: t0 + (options.fetched ?? second) * 1000,
    settleMs: 3000,
    now: t0 + second * 1000,
  });

Deno.test("how a runner Job ended, by its conditions or its deletion", () => {
  const now = t0 + 99_000;
  assert.equal(runnerJobEnd(runnerJob("g-1", { forJob: 1 }), now), undefined, "still running");
  assert.deepEqual(runnerJobEnd(runnerJob("g-1", { forJob: 1, end: { type: "Complete", at: 30 } }), now), {
    at: t0 + 30_000,
    reason: "Completed",
  });
  assert.deepEqual(runnerJobEnd(runnerJob("g-1", { forJob: 1, end: { type: "Failed", at: 40 } }), now), {
    at: t0 + 40_000,
    reason: "Failed",
  });
  const deadline = runnerJobEnd(
    runnerJob("g-1", { forJob: 1, end: { type: "Failed", at: 50, reason: "DeadlineExceeded" } }),
    now,
  );
  assert.deepEqual(deadline, {
    at: t0 + 50_000,
    reason: "DeadlineExceeded",
    message: "Job was active longer than specified",
  });
  const deleting = runnerJob("g-1", { forJob: 1 });
  deleting.metadata!.deletionTimestamp = new Date(t0 + 60_000);
  assert.deepEqual(runnerJobEnd(deleting, now), { at: t0 + 60_000, reason: "Deleted" });
});

Deno.test("an entry waits for its job's outcome, then shows the job, its result and times", () => {
  const history = new RunnerHistory();
  const job = runnerJob("g-1", { created: 1, forJob: 1, end: { type: "Complete", at: 30 } });
  history.observe([job], new Set(), t0 + 31_000);
  // The forge still showed job 1 running on g-1 at the last answer: wait.
  const waiting = entriesAt(history, 31, { outcomes: { "g-1": outcome(1) }, fetched: 40 });
  assert.deepEqual(waiting.entries, []);
  const done = entriesAt(history, 45, { outcomes: { "g-1": outcome(1, "success") } });
  assert.deepEqual(done.entries, [{
    runnerJob: "g-1",
    createdAt: iso(1),
    endedAt: iso(30),
    reason: "Completed",
    forgeJobId: 1,
    repository: "acme/app",
    jobName: "job-1",
    result: "success",
    queuedAt: iso(0),
    startedAt: iso(5),
    finishedAt: iso(25),
    message: "Ran job 1 (job-1) of acme/app: success",
  }]);
  assert.deepEqual(done.forgotten, [], "its Job is still in the cache");
});

Deno.test("a runner that ran no job the tracker saw is shown once an answer settled after its end", () => {
  const history = new RunnerHistory();
  history.observe([runnerJob("g-2", { forJob: 2, end: { type: "Failed", at: 10 } })], new Set(), t0 + 11_000);
  assert.deepEqual(entriesAt(history, 11, { fetched: 12 }).entries, [], "answer fetched 2 s after the end: too early");
  const [entry] = entriesAt(history, 14, { fetched: 13 }).entries;
  assert.equal(entry.reason, "Failed");
  assert.equal(entry.forgeJobId, 2, "the job it was started for");
  assert.equal(entry.result, undefined);
  assert.match(entry.message!, /^Failed before it ran a job/);
  // A job still shown running on an ended runner is waited for at most 10 minutes.
  const stuck = new RunnerHistory();
  stuck.observe([runnerJob("g-3", { forJob: 3, end: { type: "Failed", at: 10 } })], new Set(), t0);
  assert.deepEqual(entriesAt(stuck, 609, { outcomes: { "g-3": outcome(3) } }).entries, []);
  const [late] = entriesAt(stuck, 611, { outcomes: { "g-3": outcome(3) } }).entries;
  assert.match(late.message!, /still running in the forge/);
  // ... and its entry is completed when the outcome arrives.
  const [completed] = entriesAt(stuck, 700, { previous: [late], outcomes: { "g-3": outcome(3, "cancelled") } }).entries;
  assert.equal(completed.result, "cancelled");
});

Deno.test("runners removed as idle, and runner Jobs deleted by someone else, say so", () => {
  const history = new RunnerHistory();
  const idle = runnerJob("g-5", { forJob: 5 });
  const warm = runnerJob("g-warm-0");
  const other = runnerJob("g-6", { forJob: 6 });
  history.observe([idle, warm, other], new Set(), t0);
  // This reconcile removed g-5 and g-warm-0; g-6 disappears without the operator removing it.
  history.observe([idle, warm], new Set(["g-5", "g-warm-0"]), t0 + 20_000);
  history.observe([], new Set(), t0 + 30_000);
  const { entries } = entriesAt(history, 40);
  assert.deepEqual(entries.map((entry) => [entry.runnerJob, entry.reason, entry.endedAt]), [
    ["g-5", "RemovedIdle", iso(20)],
    ["g-6", "Deleted", iso(20)],
    ["g-warm-0", "RemovedIdle", iso(20)],
  ]);
  assert.match(entries[0].message!, /job 5 was taken by another runner or cancelled/);
  assert.equal(entries[1].message, "Deleted before it ran a job");
  assert.equal(entries[2].message, "Removed while idle: beyond the warm pool");
  assert.equal(entries[2].forgeJobId, undefined);
});

Deno.test("newest first, at most the limit; a Job gone and written is forgotten, its entry stays", () => {
  const history = new RunnerHistory();
  const jobs = Array.from(
    { length: 12 },
    (_, i) => runnerJob(`g-${i}`, { forJob: i, end: { type: "Complete", at: i } }),
  );
  history.observe(jobs, new Set(), t0 + 20_000);
  const first = entriesAt(history, 20, { limit: 10 });
  assert.deepEqual(
    first.entries.map((entry) => entry.runnerJob),
    [11, 10, 9, 8, 7, 6, 5, 4, 3, 2].map((i) => `g-${i}`),
  );
  assert.deepEqual(first.forgotten, []);
  // The Jobs are deleted (ttlSecondsAfterFinished): the two that fell off the end and the ones written are forgotten.
  history.observe([], new Set(), t0 + 400_000);
  const later = entriesAt(history, 400, { previous: first.entries, limit: 10 });
  assert.deepEqual(later.entries, first.entries, "the history outlives the Jobs");
  assert.equal(later.forgotten.length, 12);
  assert.deepEqual(entriesAt(history, 401, { previous: later.entries }).entries, first.entries);
  assert.deepEqual(entriesAt(history, 402, { previous: later.entries, limit: 3 }).entries, first.entries.slice(0, 3));
});

Deno.test("after a restart the history knows less than the status it wrote, and keeps the status", () => {
  const before = new RunnerHistory();
  const job = runnerJob("g-1", { created: 1, forJob: 1, end: { type: "Complete", at: 30 } });
  before.observe([job], new Set(), t0 + 31_000);
  const written = entriesAt(before, 40, { outcomes: { "g-1": outcome(1, "failure") } }).entries;
  assert.equal(written[0].result, "failure");
  // A new process: the Job is still cached, the tracker knows nothing of job 1.
  const after = new RunnerHistory();
  after.observe([job], new Set(), t0 + 100_000);
  assert.deepEqual(entriesAt(after, 100, { previous: written }).entries, written);
});

Deno.test("merging: a new entry replaces an old one of the same runner Job only when it knows the result", () => {
  const entry = (name: string, created: number, ended: number, result?: string): RecentRunner => ({
    runnerJob: name,
    createdAt: iso(created),
    endedAt: iso(ended),
    reason: "Completed",
    ...(result ? { result } : {}),
  });
  const previous = [entry("g-warm-0", 0, 10), entry("g-1", 0, 5, "success")];
  const merged = mergeRecentRunners(previous, [
    entry("g-warm-0", 0, 10, "failure"),
    entry("g-1", 0, 5),
    // The same warm slot, used again by a newer Job: another entry.
    entry("g-warm-0", 20, 30, "success"),
  ], 10);
  assert.deepEqual(merged, [entry("g-warm-0", 20, 30, "success"), entry("g-warm-0", 0, 10, "failure"), previous[1]]);
  assert.deepEqual(mergeRecentRunners(previous, [], 0), [], "limit 0 keeps none");
});

Deno.test("an evicted runner Job ends Evicted, not Failed", () => {
  const failedBy = (reason: string): V1Job => ({
    metadata: { name: "ci-7", creationTimestamp: new Date(0) },
    status: {
      conditions: [{
        type: "Failed",
        status: "True",
        reason,
        message: "Pod ci/ci-7-x has condition DisruptionTarget matching FailJob rule at index 0",
        lastTransitionTime: new Date(5000),
      }],
    },
  });
  assert.equal(runnerJobEnd(failedBy(evictedJobReason), 9000)?.reason, "Evicted");
  assert.equal(runnerJobEnd(failedBy("BackoffLimitExceeded"), 9000)?.reason, "Failed");
  assert.equal(runnerJobEnd(failedBy("DeadlineExceeded"), 9000)?.reason, "DeadlineExceeded");
});
