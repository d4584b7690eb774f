/**
 * What became of the jobs a group's runners ran, learned from what the operator reads anyway: every forge answer
 * lists the queued and in-progress jobs (an in-progress job names its runner and when that runner took it), and a job
 * that leaves both lists is read once (`GET /repos/{owner}/{repo}/actions/jobs/{id}`) for its conclusion and end time.
 * So a finished job costs one request, whatever the number of groups or polls.
 *
 * A job belongs to the group whose runner took it (by runner name), not to the group that owned it while queued: a
 * spare runner of the group may take a job another group owned. Jobs the group owned while queued are watched too,
 * so that one that starts and ends between two answers is still read once and counted.
 *
 * Pure: answers and reads go in, events come out (`job_outcomes.ts` does the reads).
 */
import type { JobDetail, QueuedJob, RunningJob } from "../forge/gitea_client.ts";

/** A job that a runner of the group took. */
export interface JobStarted {
  type: "started";
  jobId: number;
  runId: number;
  repository: string;
  /** From the job being queued on the forge to a runner taking it. */
  queueSeconds?: number;
  /**
   * The runner's part of that wait: from the later of its runner Job's creation and the job being queued, to the
   * runner taking the job. A cold start shows here; a warm runner that was waiting already shows only its pickup.
   */
  runnerStartSeconds?: number;
}

/** A job that a runner of the group ran to its end. */
export interface JobCompleted {
  type: "completed";
  jobId: number;
  runId: number;
  repository: string;
  /** Gitea's conclusion: `success`, `failure`, `cancelled`, `skipped`; `unknown` if it gave none. */
  result: string;
  /** From a runner taking the job to the job's end. */
  runSeconds?: number;
}

export type JobEvent = JobStarted | JobCompleted;

/** What a runner of the group ran, for its history entry; `result` is undefined while the job is open. */
export interface JobOutcome {
  jobId: number;
  repository: string;
  jobName: string;
  result?: string;
  queuedAt?: number;
  startedAt?: number;
  finishedAt?: number;
}

/** What the tracker needs to know of the group's runner Jobs. */
export interface GroupRunners {
  /** Whether a runner name is one of the group's runner Jobs. */
  isOwn(name: string): boolean;
  /** When the runner Job of that name was created (ms since epoch). */
  createdAt(name: string): number | undefined;
}

/** A job to read: it left the open lists. */
export interface LeavingJob {
  id: number;
  runId: number;
  owner: string;
  repo: string;
}

interface TrackedJob {
  id: number;
  runId: number;
  name: string;
  owner: string;
  repo: string;
  queuedAt?: number;
  startedAt?: number;
  /** The group's runner that took the job. */
  runner?: string;
  /** Its start was counted, or it started before this tracker (an earlier process counted it). */
  startCounted: boolean;
  /** It left the open lists and waits for its read. */
  leaving: boolean;
  /** Reads that did not settle it (errors, or the job still open). */
  reads: number;
}

/** A job read this often without settling is given up, so a job Gitea keeps showing oddly is not read forever. */
const maxReads = 3;
/** Outcomes of runners whose history entry was never asked for are dropped after this long. */
const outcomeTtlMs = 60 * 60_000;
/** Gitea's job times have one-second resolution: a job that started in the second the tracker began is new. */
const clockResolutionMs = 1000;

/** Parses an RFC 3339 time; undefined for "" or a bad value. */
export function parseTime(text: string | undefined): number | undefined {
  if (!text) return undefined;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : at;
}

const seconds = (from: number | undefined, to: number | undefined): number | undefined =>
  from === undefined || to === undefined ? undefined : Math.max(0, to - from) / 1000;

/** One group's view of its jobs across reconciles. */
export class JobTracker {
  readonly #jobs = new Map<number, TrackedJob>();
  readonly #ranBy = new Map<string, { outcome: JobOutcome; at: number }>();
  #lastFetchedAt = 0;

  /** `since`: when this tracker began (ms since epoch); jobs that started before it are not counted as started. */
  constructor(readonly since: number) {}

  /**
   * Folds in a forge answer (skipped when it is not newer than the last one): counts the jobs that the group's
   * runners took since, and marks the watched jobs that left both lists for their read.
   */
  observe(
    answer: {
      fetchedAt: number;
      queued: readonly QueuedJob[];
      running: readonly RunningJob[];
      /** Ids of the queued jobs this group runs. */
      owned: ReadonlySet<number>;
    },
    runners: GroupRunners,
  ): JobEvent[] {
    if (answer.fetchedAt <= this.#lastFetchedAt) return [];
    this.#lastFetchedAt = answer.fetchedAt;
    this.#prune(answer.fetchedAt);
    const events: JobEvent[] = [];
    const running = new Map(answer.running.map((job) => [job.id, job]));
    for (const job of answer.running) {
      if (!job.runnerName || !runners.isOwn(job.runnerName)) continue;
      const tracked = this.#jobs.get(job.id) ?? this.#track(job);
      tracked.runner = job.runnerName;
      tracked.startedAt = parseTime(job.startedAt) ?? tracked.startedAt;
      tracked.leaving = false;
      events.push(...this.#countStart(tracked, runners));
    }
    for (const job of answer.queued) {
      if (answer.owned.has(job.id) && !this.#jobs.has(job.id)) this.#track(job);
    }
    const queued = new Set(answer.queued.map((job) => job.id));
    for (const tracked of [...this.#jobs.values()]) {
      if (tracked.leaving) continue;
      const run = running.get(tracked.id);
      if (run) {
        // Taken by a runner that is not the group's: another group's, or one outside the operator.
        if (!run.runnerName || !runners.isOwn(run.runnerName)) this.#jobs.delete(tracked.id);
      } else if (queued.has(tracked.id)) {
        if (!answer.owned.has(tracked.id)) this.#jobs.delete(tracked.id);
      } else {
        tracked.leaving = true;
      }
    }
    return events;
  }

  /** The jobs that left the open lists, each to be read once. */
  leaving(): LeavingJob[] {
    return [...this.#jobs.values()].filter((job) => job.leaving)
      .map(({ id, runId, owner, repo }) => ({ id, runId, owner, repo }));
  }

  /**
   * Folds in the read of a job that left the open lists (undefined: the forge no longer has it). A completed job
   * that a runner of the group ran is counted as completed (and as started, if its start was never seen).
   */
  settle(id: number, detail: JobDetail | undefined, runners: GroupRunners, now: number): JobEvent[] {
    const tracked = this.#jobs.get(id);
    if (!tracked?.leaving) return [];
    if (detail === undefined) {
      this.#jobs.delete(id);
      return [];
    }
    if (detail.status !== "completed") {
      // Still (or again) open: the next answer shows it. Blocked again (a re-run waiting on `needs:`): not ours now.
      const open = detail.status === "queued" || detail.status === "in_progress";
      if (open && ++tracked.reads < maxReads) tracked.leaving = false;
      else this.#jobs.delete(id);
      return [];
    }
    this.#jobs.delete(id);
    // Cancelled before any runner took it, or run by a runner that is not the group's.
    if (!detail.runnerName || !runners.isOwn(detail.runnerName)) return [];
    tracked.runner = detail.runnerName;
    tracked.startedAt = parseTime(detail.startedAt) ?? tracked.startedAt;
    tracked.queuedAt = parseTime(detail.createdAt) ?? tracked.queuedAt;
    const finishedAt = parseTime(detail.completedAt);
    const result = detail.conclusion || "unknown";
    const events = this.#countStart(tracked, runners);
    events.push({
      type: "completed",
      jobId: id,
      runId: tracked.runId,
      repository: `${tracked.owner}/${tracked.repo}`,
      result,
      ...optional("runSeconds", seconds(tracked.startedAt, finishedAt)),
    });
    this.#ranBy.set(tracked.runner, { outcome: { ...this.#outcome(tracked), result, finishedAt }, at: now });
    return events;
  }

  /** A read that failed: tried again by a later reconcile, at most a few times. */
  readFailed(id: number): void {
    const tracked = this.#jobs.get(id);
    if (tracked && ++tracked.reads >= maxReads) this.#jobs.delete(id);
  }

  /** The job that the runner named `runner` runs or ran, as far as the tracker knows. */
  outcomeOf(runner: string): JobOutcome | undefined {
    for (const tracked of this.#jobs.values()) if (tracked.runner === runner) return this.#outcome(tracked);
    return this.#ranBy.get(runner)?.outcome;
  }

  /** Forgets what a runner ran, once its history entry is final. */
  forgetRunner(runner: string): void {
    this.#ranBy.delete(runner);
  }

  #track(job: QueuedJob | RunningJob): TrackedJob {
    const tracked: TrackedJob = {
      id: job.id,
      runId: job.runId,
      name: job.name,
      owner: job.owner,
      repo: job.repo,
      queuedAt: parseTime(job.createdAt),
      startCounted: false,
      leaving: false,
      reads: 0,
    };
    this.#jobs.set(job.id, tracked);
    return tracked;
  }

  /** The start of a job on one of the group's runners, once; not for jobs that started before this tracker. */
  #countStart(tracked: TrackedJob, runners: GroupRunners): JobEvent[] {
    if (tracked.startCounted) return [];
    tracked.startCounted = true;
    if (tracked.startedAt !== undefined && tracked.startedAt < this.since - clockResolutionMs) return [];
    const runnerCreatedAt = tracked.runner === undefined ? undefined : runners.createdAt(tracked.runner);
    const waitFrom = runnerCreatedAt === undefined
      ? undefined
      : Math.max(runnerCreatedAt, tracked.queuedAt ?? runnerCreatedAt);
    return [{
      type: "started",
      jobId: tracked.id,
      runId: tracked.runId,
      repository: `${tracked.owner}/${tracked.repo}`,
      ...optional("queueSeconds", seconds(tracked.queuedAt, tracked.startedAt)),
      ...optional("runnerStartSeconds", seconds(waitFrom, tracked.startedAt)),
    }];
  }

  #outcome(tracked: TrackedJob): JobOutcome {
    return {
      jobId: tracked.id,
      repository: `${tracked.owner}/${tracked.repo}`,
      jobName: tracked.name,
      ...optional("queuedAt", tracked.queuedAt),
      ...optional("startedAt", tracked.startedAt),
    };
  }

  #prune(now: number): void {
    for (const [runner, { at }] of this.#ranBy) if (now - at > outcomeTtlMs) this.#ranBy.delete(runner);
  }
}

function optional<K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } {
  return (value === undefined ? {} : { [key]: value }) as { [P in K]?: V };
}
