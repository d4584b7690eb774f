/**
 * Decides which runner Jobs a group should create now. Pure: everything it needs is passed in, so the rules (limits,
 * blocked jobs, duplicates, overlap between groups, failed runners) are tested without a cluster.
 */
import type { QueuedJob } from "../forge/gitea_client.ts";
import { canRunJob, type RunnerLabel } from "../forge/labels.ts";

/** What the planner knows of one existing runner Job, read from the cluster. */
export interface RunnerJobRecord {
  name: string;
  forgeJobId: number;
  attempt: number;
  state: "active" | "succeeded" | "failed";
  /** When the Job finished (ms since epoch), for finished Jobs. */
  finishedAt?: number;
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
  labels: readonly RunnerLabel[];
  /**
   * The latest answer of the group's forge target, or undefined before the first: queued jobs and the names of the
   * runners that are running a job.
   */
  demand?: { jobs: readonly QueuedJob[]; busyRunners: ReadonlySet<string>; fetchedAt: number };
  /** The group that runs a job (see `ownership.ts`). */
  ownerOf: (job: QueuedJob) => string | undefined;
  /** This group's runner Jobs. */
  runnerJobs: readonly RunnerJobRecord[];
  /** Forge job ids that already have an unfinished runner Job in another group. */
  activeElsewhere: ReadonlySet<number>;
  now: number;
  retry: RetryPolicy;
  /** How long after a runner Job finished a forge answer may still show its job as queued. */
  settleMs: number;
}

export interface PlannedRunner {
  job: QueuedJob;
  attempt: number;
  /** Set when this replaces a failed runner Job. */
  replaces?: string;
}

export interface Plan {
  create: PlannedRunner[];
  /** Unfinished runner Jobs of the group, before the new ones. */
  active: number;
  /** Queued jobs this group runs (with or without a runner yet). */
  queued: number;
  /** Queued jobs that wait for a free slot. */
  waitingForCapacity: number;
  /** Queued jobs whose runners failed `retry.limit` times. */
  gaveUp: { job: QueuedJob; failures: number }[];
  /** When a backoff ends and the group should be planned again (ms since epoch). */
  wakeAt?: number;
}

/** Delay before attempt `failures + 1`, doubling from the base. */
export function retryDelay(failures: number, retry: RetryPolicy): number {
  return Math.min(retry.maxDelayMs, retry.baseDelayMs * 2 ** Math.max(0, failures - 1));
}

/**
 * Plans runner Jobs for one group. Each queued job the group runs gets a runner Job named after it; but a Gitea
 * runner takes whichever matching job Gitea hands it, not necessarily the one it was started for. So a runner whose
 * own job was taken by another runner is *spare*: it is still waiting and will take one of the group's queued jobs.
 * Queued jobs without a runner of their own are first counted against the spare runners, oldest first, and only the
 * rest get new runner Jobs. This never starts more runners than queued jobs, so no job gets two.
 */
export function planRunnerJobs(input: PlanInput): Plan {
  const byForgeJob = new Map<number, RunnerJobRecord[]>();
  for (const record of input.runnerJobs) {
    const list = byForgeJob.get(record.forgeJobId) ?? [];
    list.push(record);
    byForgeJob.set(record.forgeJobId, list);
  }
  const activeRecords = input.runnerJobs.filter((record) => record.state === "active");
  const active = activeRecords.length;
  const plan: Plan = { create: [], active, queued: 0, waitingForCapacity: 0, gaveUp: [] };
  const demand = input.demand;
  if (!demand) return plan;
  const wake = (at: number): void => {
    plan.wakeAt = plan.wakeAt === undefined ? at : Math.min(plan.wakeAt, at);
  };

  const owned = [...demand.jobs]
    .filter((job) => canRunJob(input.labels, job.runsOn) && input.ownerOf(job) === input.groupKey)
    .sort((a, b) => a.id - b.id);
  plan.queued = owned.length;
  const queuedIds = new Set(demand.jobs.map((job) => job.id));

  const uncovered: PlannedRunner[] = [];
  for (const job of owned) {
    const records = byForgeJob.get(job.id) ?? [];
    if (records.some((record) => record.state === "active") || input.activeElsewhere.has(job.id)) continue;

    const finished = records.filter((record) => record.finishedAt !== undefined);
    const lastFinishedAt = Math.max(...finished.map((record) => record.finishedAt!), -Infinity);
    // A runner that just finished may have run this very job; only a later answer from the forge tells.
    if (demand.fetchedAt < lastFinishedAt + input.settleMs) continue;

    const failures = records.filter((record) => record.state === "failed");
    if (failures.length >= input.retry.limit) {
      plan.gaveUp.push({ job, failures: failures.length });
      continue;
    }
    const last = records.reduce<RunnerJobRecord | undefined>(
      (latest, record) => (latest === undefined || record.attempt > latest.attempt ? record : latest),
      undefined,
    );
    if (last?.state === "failed") {
      const retryAt = last.finishedAt! + retryDelay(failures.length, input.retry);
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

  // Runners still waiting for a job although theirs is no longer queued: they will take one of the uncovered jobs.
  const spare =
    activeRecords.filter((record) => !demand.busyRunners.has(record.name) && !queuedIds.has(record.forgeJobId)).length;
  for (const planned of uncovered.slice(spare)) {
    if (active + plan.create.length >= input.maxActiveRunners) {
      plan.waitingForCapacity++;
      continue;
    }
    plan.create.push(planned);
  }
  return plan;
}
