/**
 * `status.recentRunners`: the group's last finished runner Jobs, each with the job it ran, that job's result and
 * times, and why the runner ended. They live in the group's status, so they outlive the Jobs (deleted
 * `ttlSecondsAfterFinished` after they end) and the operator process (read back from the group). Pure.
 */
import type { V1Job } from "@kubernetes/client-node";
import type { JobOutcome } from "./job_tracker.ts";
import { annotationKeys, labelKeys, runnerJobEviction } from "./runner_job.ts";
import type { RecentRunner } from "./schema.ts";

export type RunnerEndReason = "Completed" | "Failed" | "DeadlineExceeded" | "Evicted" | "RemovedIdle" | "Deleted";

export interface RunnerEnd {
  at: number;
  reason: RunnerEndReason;
  message?: string;
}

/** A runner Job as the history remembers it. */
interface SeenRunner {
  name: string;
  createdAt: number;
  /** The forge job the runner was started for; undefined for a warm-pool runner. */
  forJobId?: number;
  repository?: string;
  jobName?: string;
  end?: RunnerEnd;
  /** Whether its Job is still in the informer cache. */
  present: boolean;
}

/** How long an entry waits for the outcome of a job still shown running on an ended runner. */
const maxOutcomeWaitMs = 10 * 60_000;

const time = (value: Date | string | undefined): number | undefined => {
  if (value === undefined) return undefined;
  const at = new Date(value).getTime();
  return Number.isNaN(at) ? undefined : at;
};
const iso = (at: number): string => new Date(at).toISOString();

/** How a runner Job ended, by its conditions (or its deletion); undefined while it runs. */
export function runnerJobEnd(job: V1Job, now: number): RunnerEnd | undefined {
  const conditions = job.status?.conditions ?? [];
  const condition = (type: string) => conditions.find((c) => c.type === type && c.status === "True");
  const failed = condition("Failed");
  if (failed) {
    return {
      at: time(failed.lastTransitionTime) ?? now,
      // An evicted runner's Job fails by the pod failure policy (see runner_job.ts); a deadline, by its own reason.
      reason: runnerJobEviction(job) ? "Evicted" : failed.reason === "DeadlineExceeded" ? "DeadlineExceeded" : "Failed",
      ...(failed.message ? { message: failed.message } : {}),
    };
  }
  const complete = condition("Complete");
  if (complete) return { at: time(complete.lastTransitionTime) ?? now, reason: "Completed" };
  if (job.metadata?.deletionTimestamp) {
    return { at: time(job.metadata.deletionTimestamp) ?? now, reason: "Deleted" };
  }
  return undefined;
}

const entryKey = (entry: Pick<RecentRunner, "runnerJob" | "createdAt">): string =>
  `${entry.runnerJob}@${entry.createdAt}`;

/**
 * Merges new entries into the previous ones: an entry of the same runner Job is replaced when the new one knows the
 * result (an entry written before the job's outcome was known), kept otherwise (after a restart the operator knows
 * less than the status it wrote). Newest end first, at most `limit`.
 */
export function mergeRecentRunners(
  previous: readonly RecentRunner[],
  fresh: readonly RecentRunner[],
  limit: number,
): RecentRunner[] {
  const byKey = new Map(previous.map((entry) => [entryKey(entry), entry]));
  for (const entry of fresh) {
    const before = byKey.get(entryKey(entry));
    if (!before || (entry.result !== undefined && before.result === undefined)) byKey.set(entryKey(entry), entry);
  }
  return [...byKey.values()]
    .sort((a, b) => Date.parse(b.endedAt) - Date.parse(a.endedAt) || a.runnerJob.localeCompare(b.runnerJob))
    .slice(0, limit);
}

function describe(runner: SeenRunner, end: RunnerEnd, outcome: JobOutcome | undefined): string {
  if (outcome?.result !== undefined) {
    return `Ran job ${outcome.jobId} (${outcome.jobName}) of ${outcome.repository}: ${outcome.result}`;
  }
  if (outcome) return `Job ${outcome.jobId} (${outcome.jobName}) was still running in the forge when the runner ended`;
  switch (end.reason) {
    case "RemovedIdle":
      return runner.forJobId === undefined
        ? "Removed while idle: beyond the warm pool"
        : `Removed while idle: job ${runner.forJobId} was taken by another runner or cancelled`;
    case "Deleted":
      return "Deleted before it ran a job";
    case "Evicted":
      return `Evicted before it ran a job${end.message ? `: ${end.message}` : ""}`;
    case "Failed":
    case "DeadlineExceeded":
      return `Failed before it ran a job${end.message ? `: ${end.message}` : ""}`;
    case "Completed":
      return "Ended without running a job that the operator saw";
  }
}

/** One group's runner Jobs across reconciles, for its history. */
export class RunnerHistory {
  readonly #seen = new Map<string, SeenRunner>();

  /**
   * A runner Job of the group that is in the cache, or gone but not yet in the history; of two with the name (a
   * warm-pool slot used again), the newer.
   */
  runner(name: string): { createdAt: number } | undefined {
    let found: SeenRunner | undefined;
    for (const seen of this.#seen.values()) {
      if (seen.name === name && (found === undefined || seen.createdAt > found.createdAt)) found = seen;
    }
    return found;
  }

  /**
   * Takes in the group's runner Jobs from the cache, and the names of those this reconcile removed as idle. A runner
   * Job that left the cache before it was seen ending was deleted by someone else.
   */
  observe(runnerJobs: readonly V1Job[], removed: ReadonlySet<string>, now: number): void {
    const present = new Set<string>();
    for (const job of runnerJobs) {
      const uid = job.metadata?.uid;
      const name = job.metadata?.name;
      if (!uid || !name) continue;
      present.add(uid);
      let seen = this.#seen.get(uid);
      if (!seen) {
        const labels = job.metadata?.labels ?? {};
        const annotations = job.metadata?.annotations ?? {};
        const forJobId = Number(labels[labelKeys.jobId]);
        seen = {
          name,
          createdAt: time(job.metadata?.creationTimestamp) ?? now,
          ...(labels[labelKeys.warm] !== "true" && Number.isSafeInteger(forJobId) ? { forJobId } : {}),
          ...(annotations[annotationKeys.repository] ? { repository: annotations[annotationKeys.repository] } : {}),
          ...(annotations[annotationKeys.jobName] ? { jobName: annotations[annotationKeys.jobName] } : {}),
          present: true,
        };
        this.#seen.set(uid, seen);
      }
      seen.end ??= removed.has(name) ? { at: now, reason: "RemovedIdle" } : runnerJobEnd(job, now);
    }
    for (const [uid, seen] of this.#seen) {
      if (present.has(uid)) continue;
      seen.present = false;
      seen.end ??= { at: now, reason: removed.has(seen.name) ? "RemovedIdle" : "Deleted" };
    }
  }

  /**
   * The history to write: the previous entries merged with those of runners that ended. An entry waits until the
   * outcome of the runner's job is known, or, when the tracker saw it run no job, for a forge answer fetched
   * `settleMs` after its end (the job it may have run must have left the open lists by then, and been read); a job
   * still shown running is waited for at most 10 minutes. Runners whose Jobs are gone and whose entries are written
   * (in `previous`) or fell off the end are forgotten; `forgotten` names them.
   */
  entries(input: {
    previous: readonly RecentRunner[];
    limit: number;
    outcomeOf: (runner: string) => JobOutcome | undefined;
    fetchedAt: number;
    settleMs: number;
    now: number;
  }): { entries: RecentRunner[]; forgotten: string[] } {
    const fresh: RecentRunner[] = [];
    const finals = new Map<string, RecentRunner>();
    for (const [uid, runner] of this.#seen) {
      const end = runner.end;
      if (!end) continue;
      const outcome = input.outcomeOf(runner.name);
      const final = outcome?.result !== undefined || (!outcome && input.fetchedAt >= end.at + input.settleMs);
      if (!final && input.now < end.at + maxOutcomeWaitMs) continue;
      const job = outcome ? { forgeJobId: outcome.jobId, repository: outcome.repository, jobName: outcome.jobName } : {
        ...(runner.forJobId !== undefined ? { forgeJobId: runner.forJobId } : {}),
        ...(runner.repository ? { repository: runner.repository } : {}),
        ...(runner.jobName ? { jobName: runner.jobName } : {}),
      };
      const entry: RecentRunner = {
        runnerJob: runner.name,
        createdAt: iso(runner.createdAt),
        endedAt: iso(end.at),
        reason: end.reason,
        ...job,
        ...(outcome?.result !== undefined ? { result: outcome.result } : {}),
        ...(outcome?.queuedAt !== undefined ? { queuedAt: iso(outcome.queuedAt) } : {}),
        ...(outcome?.startedAt !== undefined ? { startedAt: iso(outcome.startedAt) } : {}),
        ...(outcome?.finishedAt !== undefined ? { finishedAt: iso(outcome.finishedAt) } : {}),
        message: describe(runner, end, outcome),
      };
      fresh.push(entry);
      if (final) finals.set(uid, entry);
    }
    const entries = mergeRecentRunners(input.previous, fresh, input.limit);
    const previous = new Map(input.previous.map((entry) => [entryKey(entry), entry]));
    const kept = new Set(entries.map(entryKey));
    const forgotten: string[] = [];
    for (const [uid, entry] of finals) {
      const runner = this.#seen.get(uid)!;
      const before = previous.get(entryKey(entry));
      const written = before !== undefined && (before.result !== undefined || entry.result === undefined);
      if (runner.present || (kept.has(entryKey(entry)) && !written)) continue;
      this.#seen.delete(uid);
      forgotten.push(runner.name);
    }
    return { entries, forgotten };
  }
}
