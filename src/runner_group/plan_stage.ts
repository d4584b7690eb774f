/**
 * Stage 4 of the reconcile: the group's plan, from its spec, its demand and what the reconciler remembers of it. It
 * reads the group's memory and notes in it what this plan saw (warm pool size, runners finishing, idle runners); the
 * rules themselves are the pure planner's (`planner.ts`). Nothing here touches the cluster or the forge.
 */
import type { RunnerLabel } from "../forge/labels.ts";
import type { GroupDemand } from "./demand.ts";
import { type GroupMemory, noteFinishingRunners, noteIdleRunners, noteWarmPool } from "./group_memory.ts";
import { chooseOwnerGroup, type GroupCoverage } from "./ownership.ts";
import { type Plan, planRunnerJobs, type RetryPolicy } from "./planner.ts";
import { isPaused, type RunnerGroupSpec } from "./schema.ts";
import type { WarmPool } from "./warm_schedule.ts";

export interface PlanStageInput {
  groupKey: string;
  spec: RunnerGroupSpec;
  labels: readonly RunnerLabel[];
  memory: GroupMemory;
  demand: GroupDemand;
  /** The warm pool in effect now (`warm_schedule.ts`). */
  warmPool: WarmPool;
  /** Every group's coverage, for the one owner of each job (`ownership.ts`). */
  coverages: readonly GroupCoverage[];
  /** The forge is Forgejo, and whether its runners are bound to their job's handle (Forgejo 15). */
  forgejo: boolean;
  jobHandles: boolean;
  idleGraceMs: number;
  retry: RetryPolicy;
  settleMs: number;
  now: number;
}

export function planGroup(input: PlanStageInput): Plan {
  const { groupKey, spec, memory, demand, now } = input;
  const { snapshot, usable } = demand;
  // Which runner ran a job: Gitea names it, a Forgejo 15 runner is bound to its own; before 15 nothing tells.
  const finishing = usable && (!input.forgejo || input.jobHandles)
    ? noteFinishingRunners(memory, demand.records, demand.busyRunners, now, input.idleGraceMs)
    : undefined;
  const plan = planRunnerJobs({
    groupKey,
    maxActiveRunners: spec.maxActiveRunners,
    // Forgejo has no warm pool (see apply.ts: WarmPoolUnsupported).
    minIdleRunners: input.forgejo ? 0 : input.warmPool.size,
    warmPoolShrunkAt: noteWarmPool(memory, input.warmPool.size, now),
    // Forgejo 15 runners are started with their job's handle and can take no other job.
    idleRunnersTakeAnyJob: !(input.forgejo && input.jobHandles),
    ...(finishing ? { finishing } : {}),
    idleSince: (runner) => memory.idleSince.get(runner),
    idleGraceMs: input.idleGraceMs,
    labels: input.labels,
    demand: usable
      ? { jobs: snapshot!.jobs, busyRunners: demand.busyRunners, fetchedAt: snapshot!.fetchedAt }
      : undefined,
    ownerOf: (job) => chooseOwnerGroup(demand.forge, job, input.coverages),
    ...(isPaused(spec) ? { queuedFor: (job) => chooseOwnerGroup(demand.forge, job, input.coverages, groupKey) } : {}),
    runnerJobs: demand.records,
    activeElsewhere: demand.activeElsewhere,
    now,
    retry: input.retry,
    settleMs: input.settleMs,
  });
  noteIdleRunners(memory, plan.idle, now);
  return plan;
}
