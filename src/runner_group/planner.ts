/**
 * Decides which runner Jobs a group should create now. Pure: everything it needs is passed in, so the rules (limits,
 * blocked jobs, duplicates, overlap between groups, failed runners) are tested without a cluster.
 */
import type { QueuedJob } from "../forge/gitea_client.ts";
import { canRunJob, type RunnerLabel } from "../forge/labels.ts";

/** What the planner knows of one existing runner Job, read from the cluster. */
export interface RunnerJobRecord {
  name: string;
  /** The forge job the runner was started for; undefined for a warm-pool runner. */
  forgeJobId?: number;
  attempt: number;
  state: "active" | "succeeded" | "failed";
  /** When the Job finished (ms since epoch), for finished Jobs. */
  finishedAt?: number;
  /** A failed Job whose pod was disrupted (evicted, preempted, its node gone) rather than a runner that failed. */
  evicted?: boolean;
}

export interface RetryPolicy {
  /** Failed runner Jobs after which a queued job gets no further runner. */
  limit: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export interface PlanInput {
  groupKey: string;
  maxActiveRunners: number;
  /** Idle runners to keep ready (the warm pool); capped at maxActiveRunners. */
  minIdleRunners?: number;
  /**
   * When this process first saw a runner idle (ms since epoch); undefined when it did not yet. Idle runners beyond
   * the warm pool are removed once idle for `idleGraceMs`.
   */
  idleSince?: (name: string) => number | undefined;
  idleGraceMs?: number;
  /**
   * When the warm pool last got smaller (ms since epoch): a runner idle within the pool until then is beyond it only
   * since, so its grace period starts then.
   */
  warmPoolShrunkAt?: number;
  labels: readonly RunnerLabel[];
  /**
   * The latest answer of the group's forge target, or undefined before the first: queued jobs and the names of the
   * runners that are running a job.
   */
  demand?: { jobs: readonly QueuedJob[]; busyRunners: ReadonlySet<string>; fetchedAt: number };
  /** The group that runs a job (see `ownership.ts`). */
  ownerOf: (job: QueuedJob) => string | undefined;
  /**
   * The group a job counts as queued for, when that differs from `ownerOf`: a paused group owns no job, yet shows
   * the jobs it would run if it were not paused.
   */
  queuedFor?: (job: QueuedJob) => string | undefined;
  /** This group's runner Jobs. */
  runnerJobs: readonly RunnerJobRecord[];
  /** Forge job ids that already have an unfinished runner Job in another group. */
  activeElsewhere: ReadonlySet<number>;
  now: number;
  retry: RetryPolicy;
  /** How long after a runner Job finished a forge answer may still show its job as queued. */
  settleMs: number;
  /**
   * Whether an idle runner takes any of the group's queued jobs (default true, as Gitea hands a runner the oldest
   * matching job). False when each runner is bound to its own job (a Forgejo 15 runner started with the job's
   * handle): an idle runner then covers no other job, so every job without a runner gets one.
   */
  idleRunnersTakeAnyJob?: boolean;
  /**
   * Runners that ran a job and have not exited yet (see `group_memory.ts` `noteFinishingRunners`). Every runner takes
   * one job and exits, so such a runner takes no queued job: it is not idle, and a job queued meanwhile gets a runner
   * of its own at once instead of waiting for this one to exit.
   */
  finishing?: ReadonlySet<string>;
}

export interface PlannedRunner {
  job: QueuedJob;
  attempt: number;
  /** Set when this replaces a failed runner Job. */
  replaces?: string;
}

export interface Plan {
  create: PlannedRunner[];
  /** Warm-pool runner Jobs to create, after `create`. */
  createWarm: number;
  /**
   * Active runner Jobs without a job to run: not running one, not finishing one, and their own job (if any) no longer
   * queued.
   */
  idle: string[];
  /** Idle runner Jobs to remove (with their registrations): beyond the warm pool and idle past the grace period. */
  remove: string[];
  /** Unfinished runner Jobs of the group, before the new ones. */
  active: number;
  /** Queued jobs this group runs (with or without a runner yet); for a paused group, those it would run. */
  queued: number;
  /** Ids of the queued jobs this group runs. */
  owned: Set<number>;
  /** Queued jobs that wait for a free slot. */
  waitingForCapacity: number;
  /** Queued jobs whose runners failed `retry.limit` times. */
  gaveUp: { job: QueuedJob; failures: number }[];
  /** When a backoff ends and the group should be planned again (ms since epoch). */
  wakeAt?: number;
  /**
   * A runner finished after the forge answer was fetched, so the answer may be stale: plan again on an answer
   * fetched at or after this time (ms since epoch).
   */
  answerAfter?: number;
}

/** When the last of `records` finished (ms since epoch); -Infinity when none did. */
function latestFinish(records: readonly RunnerJobRecord[]): number {
  return Math.max(...records.map((record) => record.finishedAt ?? -Infinity), -Infinity);
}

/** Delay before attempt `failures + 1`, doubling from the base. */
export function retryDelay(failures: number, retry: RetryPolicy): number {
  return Math.min(retry.maxDelayMs, retry.baseDelayMs * 2 ** Math.max(0, failures - 1));
}

/**
 * Plans runner Jobs for one group. Each queued job the group runs gets a runner Job named after it; but a Gitea
 * runner takes whichever matching job Gitea hands it, not necessarily the one it was started for. So a runner whose
 * own job was taken by another runner, or cancelled, is *idle*, like a warm-pool runner: it is still waiting and will
 * take one of the group's queued jobs. Queued jobs without a runner of their own are first counted against the idle
 * runners, oldest first, and only the rest get new runner Jobs, so no job gets two. Idle runners left over keep the
 * warm pool (`minIdleRunners`) filled; those beyond it are removed after a grace period, so none lingers as a ghost.
 */
export function planRunnerJobs(input: PlanInput): Plan {
  const byForgeJob = new Map<number, RunnerJobRecord[]>();
  for (const record of input.runnerJobs) {
    if (record.forgeJobId === undefined) continue;
    const list = byForgeJob.get(record.forgeJobId) ?? [];
    list.push(record);
    byForgeJob.set(record.forgeJobId, list);
  }
  const activeRecords = input.runnerJobs.filter((record) => record.state === "active");
  const active = activeRecords.length;
  const plan: Plan = {
    create: [],
    createWarm: 0,
    idle: [],
    remove: [],
    active,
    queued: 0,
    owned: new Set(),
    waitingForCapacity: 0,
    gaveUp: [],
  };
  const demand = input.demand;
  if (!demand) return plan;
  const wake = (at: number): void => {
    plan.wakeAt = plan.wakeAt === undefined ? at : Math.min(plan.wakeAt, at);
  };
  // Whether the answer was fetched at least settleMs after `finishedAt`; if not, a later answer is asked for.
  const settled = (finishedAt: number): boolean => {
    const due = finishedAt + input.settleMs;
    if (demand.fetchedAt >= due) return true;
    plan.answerAfter = Math.max(plan.answerAfter ?? due, due);
    return false;
  };

  const runs = (ownerOf: (job: QueuedJob) => string | undefined) => (job: QueuedJob): boolean =>
    canRunJob(input.labels, job.runsOn) && ownerOf(job) === input.groupKey;
  const owned = demand.jobs.filter(runs(input.ownerOf)).sort((a, b) => a.id - b.id);
  plan.owned = new Set(owned.map((job) => job.id));
  plan.queued = input.queuedFor ? demand.jobs.filter(runs(input.queuedFor)).length : owned.length;
  const queuedIds = new Set(demand.jobs.map((job) => job.id));

  const uncovered: PlannedRunner[] = [];
  for (const job of owned) {
    const records = byForgeJob.get(job.id) ?? [];
    if (records.some((record) => record.state === "active") || input.activeElsewhere.has(job.id)) continue;

    // A runner that just finished may have run this very job; only a later answer from the forge tells.
    if (!settled(latestFinish(records))) continue;

    // An eviction says nothing about the runner (a node drained, a pod preempted), so it does not count toward the
    // retry limit, or a drain could leave a job without runners; its replacement still waits the doubling delay,
    // counted over every ended attempt, so that a pod evicted again and again does not spin.
    const ended = records.filter((record) => record.state === "failed");
    const failures = ended.filter((record) => !record.evicted);
    if (failures.length >= input.retry.limit) {
      plan.gaveUp.push({ job, failures: failures.length });
      continue;
    }
    const last = records.reduce<RunnerJobRecord | undefined>(
      (latest, record) => (latest === undefined || record.attempt > latest.attempt ? record : latest),
      undefined,
    );
    if (last?.state === "failed") {
      const retryAt = last.finishedAt! + retryDelay(ended.length, input.retry);
      if (input.now < retryAt) {
        wake(retryAt);
        continue;
      }
    }
    uncovered.push({
      job,
      attempt: last === undefined ? 0 : last.attempt + 1,
      ...(last?.state === "failed" ? { replaces: last.name } : {}),
    });
  }

  // Idle runners: not running a job, not finishing one, and their own job (if any) no longer queued. A Gitea runner
  // takes whichever matching job it is handed, so each idle runner will take one of the uncovered jobs; those get no
  // runner of their own.
  const idle = activeRecords.filter((record) =>
    !demand.busyRunners.has(record.name) && !input.finishing?.has(record.name) &&
    (record.forgeJobId === undefined || !queuedIds.has(record.forgeJobId))
  );
  plan.idle = idle.map((record) => record.name);
  const spare = input.idleRunnersTakeAnyJob === false ? 0 : idle.length;
  for (const planned of uncovered.slice(spare)) {
    if (active + plan.create.length >= input.maxActiveRunners) {
      plan.waitingForCapacity++;
      continue;
    }
    plan.create.push(planned);
  }

  // The warm pool: idle runners left once the uncovered jobs took theirs, topped up to minIdleRunners.
  const leftover = Math.max(0, idle.length - (spare > 0 ? uncovered.length : 0));
  const warmTarget = Math.min(input.minIdleRunners ?? 0, input.maxActiveRunners);
  const room = Math.max(0, input.maxActiveRunners - active - plan.create.length);
  plan.createWarm = Math.min(room, Math.max(0, warmTarget - leftover));
  // A runner that finished after this answer was fetched may have run one of the jobs it still shows queued, which
  // then looks like a job an idle runner must cover: wait for a later answer before growing the pool.
  if (plan.createWarm > 0 && !settled(latestFinish(input.runnerJobs))) plan.createWarm = 0;
  // Warm runners that fail (a bad image, a wrong token) are not replaced in a tight loop: after each failure still
  // on record, the next one waits the retry delay, doubling.
  const warmFailures = input.runnerJobs.filter((record) =>
    record.forgeJobId === undefined && record.state === "failed"
  );
  if (plan.createWarm > 0 && warmFailures.length > 0) {
    const lastFailure = Math.max(...warmFailures.map((record) => record.finishedAt ?? input.now));
    const retryAt = lastFailure + retryDelay(warmFailures.length, input.retry);
    if (input.now < retryAt) {
      plan.createWarm = 0;
      wake(retryAt);
    } else plan.createWarm = Math.min(plan.createWarm, 1);
  }

  // Idle runners beyond the pool (or beyond a lowered limit) are removed once idle for the grace period, longest
  // idle first; after the pool shrank (a scheduled window closed), the grace counts from then. Unknown idle times
  // count as "just now": a restart only delays removal.
  const excess = Math.min(leftover, Math.max(leftover - warmTarget, active - input.maxActiveRunners));
  if (excess > 0) {
    const grace = input.idleGraceMs ?? 0;
    const since = (record: RunnerJobRecord): number => input.idleSince?.(record.name) ?? input.now;
    const candidates = [...idle].sort((a, b) => since(a) - since(b) || a.name.localeCompare(b.name));
    for (const record of candidates.slice(0, excess)) {
      const due = Math.max(since(record), input.warmPoolShrunkAt ?? -Infinity) + grace;
      if (due <= input.now) plan.remove.push(record.name);
      else wake(due);
    }
  }
  return plan;
}
