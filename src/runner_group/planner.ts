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
  /** The latest queued jobs of the group's forge target, or undefined before the first answer. */
  demand?: { jobs: readonly QueuedJob[]; fetchedAt: number };
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

export function planRunnerJobs(input: PlanInput): Plan {
  const byForgeJob = new Map<number, RunnerJobRecord[]>();
  for (const record of input.runnerJobs) {
    const list = byForgeJob.get(record.forgeJobId) ?? [];
    list.push(record);
    byForgeJob.set(record.forgeJobId, list);
  }
  const active = input.runnerJobs.filter((record) => record.state === "active").length;
  const plan: Plan = { create: [], active, queued: 0, waitingForCapacity: 0, gaveUp: [] };
  if (!input.demand) return plan;
  const wake = (at: number): void => {
    plan.wakeAt = plan.wakeAt === undefined ? at : Math.min(plan.wakeAt, at);
  };

  const oldestFirst = [...input.demand.jobs].sort((a, b) => a.id - b.id);
  for (const job of oldestFirst) {
    if (!canRunJob(input.labels, job.runsOn) || input.ownerOf(job) !== input.groupKey) continue;
    plan.queued++;
    const records = byForgeJob.get(job.id) ?? [];
    if (records.some((record) => record.state === "active") || input.activeElsewhere.has(job.id)) continue;

    const finished = records.filter((record) => record.finishedAt !== undefined);
    const lastFinishedAt = Math.max(...finished.map((record) => record.finishedAt!), -Infinity);
    // A runner that just finished may have run this very job; only a later answer from the forge tells.
    if (input.demand.fetchedAt < lastFinishedAt + input.settleMs) continue;

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
    if (active + plan.create.length >= input.maxActiveRunners) {
      plan.waitingForCapacity++;
      continue;
    }
    plan.create.push({
      job,
      attempt: last === undefined ? 0 : last.attempt + 1,
      ...(last?.state === "failed" ? { replaces: last.name } : {}),
    });
  }
  return plan;
}
