/**
 * Stage 5 of the reconcile, the only one with side effects on the cluster and the forge: creates the planned runner
 * Jobs (a bounded number at once), fills the warm pool, removes idle runners and orphan registrations, and records
 * what it did as events and metrics.
 */
import type { V1Job } from "@kubernetes/client-node";
import type { BatchV1Api, CoreV1Api } from "../kube/api.ts";
import type { ForgeClient, JobsEndpoint } from "../forge/forge_client.ts";
import type { EventRecorder, EventTarget } from "../kube/events.ts";
import type { logger } from "../log.ts";
import type { OperatorMetrics } from "../metrics.ts";
import { type Limiter, settleBounded } from "../runtime/concurrency.ts";
import { type GroupContext, type OrphanSweep, RunnerCleanup, sweepOrphanRegistrations } from "./cleanup.ts";
import type { EvictedRunner } from "./demand.ts";
import { runnerCredentialsSecretName } from "./forgejo_runner.ts";
import type { JobEvent } from "./job_tracker.ts";
import type { Plan, PlannedRunner } from "./planner.ts";
import { buildRunnerJob, runnerJobName, warmRunnerJobName } from "./runner_job.ts";
import { createJobOnce, createRegisteredRunnerJob } from "./runner_registration.ts";

export interface ApplyOptions {
  batch: BatchV1Api;
  /** For the credentials Secrets of runners registered one by one (Forgejo >= 15). */
  core: CoreV1Api;
  events: EventRecorder;
  metrics?: OperatorMetrics;
  runnerImage: string;
  /**
   * Runner Job creates in flight at once, shared by all reconciles (the operator's `--create-concurrency`), so the API
   * server never sees more creates in flight from the operator than that.
   */
  createSlots: Limiter;
  idleGraceMs: number;
  /**
   * Shows a created runner Job in the informer cache before its watch event arrives (see informer.ts `assume`), so
   * that the reconcile the event would start does not need to run, and one that runs meanwhile counts it.
   */
  assume?: (job: V1Job) => void;
}

/** What one apply did. */
export interface Applied {
  /** Runner Jobs that exist now and did not before (created, or found created by an earlier attempt). */
  created: number;
  /** Idle runner Jobs removed. */
  removed: number;
  /** Names of the idle runner Jobs removed. */
  removedNames: string[];
  /** When the orphan-registration sweep wants to look again (ms since epoch). */
  sweepWake?: number;
}

/** A runner Job to create: for a queued job, or for a warm-pool slot. */
type RunFor = PlannedRunner | { warmSlot: number };

/**
 * Applies a plan. Creates run concurrently within `createSlots`, shared with the other groups' reconciles; the plan
 * already keeps the group
 * within `maxActiveRunners`, and names are deterministic, so a create that meets an existing Job (409) is counted as
 * done, never repeated under another name. A failed create does not stop the others; the first failure is thrown
 * after all have settled, so the work queue retries the group with backoff.
 */
export async function applyPlan(input: {
  options: ApplyOptions;
  plan: Plan;
  context: GroupContext;
  /** The warm pool the plan fills, for events; default spec.minIdleRunners. */
  warmPoolSize?: number;
  forge: string;
  /**
   * A client for the group's forge, once its kind and version are known; without one nothing is removed from the
   * forge this time (and nothing is planned either: no answer from the forge yet).
   */
  forgeClient?: ForgeClient;
  /** The group's scope on the forge, where its runners are registered. */
  endpoint: JobsEndpoint;
  /** Names of the runner Jobs in the group's namespace (finished ones too). */
  namesInUse: ReadonlySet<string>;
  allRunnerJobs: V1Job[];
  idleSince: Map<string, number>;
  orphans: OrphanSweep;
  /** Runner Jobs found evicted since the last apply: each is reported once (event and metric). */
  evictions?: readonly EvictedRunner[];
  target: EventTarget;
  log: ReturnType<typeof logger>;
  now: number;
}): Promise<Applied> {
  const { options, plan, context, target, log, now } = input;
  const warmPoolSize = input.warmPoolSize ?? context.spec.minIdleRunners ?? 0;
  for (const evicted of input.evictions ?? []) reportEviction(options, context, evicted, target, log);
  const runs: RunFor[] = [...plan.create, ...warmSlots(context.name, plan.createWarm, input.namesInUse)];
  // Twice the slots: while `createSlots.limit` creates are in flight, as many bodies wait built for the next free slot.
  const outcomes = await settleBounded(
    runs,
    2 * options.createSlots.limit,
    (runFor) => createRunnerJob(options, { ...context, warmPoolSize }, input, runFor, target, log),
  );
  const created = outcomes.filter((outcome) => outcome.status === "fulfilled").length;
  const failed = outcomes.find((outcome) => outcome.status === "rejected");
  const started = outcomes.flatMap((outcome, index) => {
    const runFor = runs[index];
    return outcome.status === "fulfilled" && outcome.value !== undefined && "job" in runFor && !runFor.replaces
      ? [{ name: outcome.value, runFor }]
      : [];
  });
  recordCreated(options.events, target, started);
  // Creates first: what follows them (the forge's runner lists, removals, then job outcomes and status) waits until no
  // group's creates run or wait, so that it does not take the API server's and the forge's time from those creates.
  // Each reconcile queues its creates once, and one that waits keeps its worker, so the creates run out and the wait
  // ends. With a backlog of 5 x 20 jobs: 501 against 362 runner Jobs/s while busy (medians of 12 rounds, alternating).
  if (runs.length > 0) await options.createSlots.whenIdle();

  const removedNames: string[] = [];
  let sweepWake: number | undefined;
  // Without a runners API (Forgejo < 15) nothing tells which runner runs which job: idle runners stay until a job
  // takes them (see the README), and registrations cannot be listed or removed.
  if (input.forgeClient?.features.runnersApi) {
    const cleanup = new RunnerCleanup({
      context,
      client: input.forgeClient,
      endpoint: input.endpoint,
      batch: options.batch,
      events: options.events,
      metrics: options.metrics,
      target,
      log,
    });
    for (const runner of plan.remove) {
      if (await cleanup.removeIdleRunner(runner, input.idleSince.get(runner) ?? now, now)) {
        removedNames.push(runner);
        input.idleSince.delete(runner);
      }
    }
    sweepWake = await sweepOrphanRegistrations(cleanup, input.orphans, input.allRunnerJobs, now, options.idleGraceMs);
  }

  for (const { job, failures } of plan.gaveUp) {
    void options.events.record(
      target,
      "Warning",
      "RunnerJobFailed",
      `Job ${job.id} (${job.name}) of ${job.owner}/${job.repo} is still queued after ${failures} failed runner Jobs; ` +
        "no further runner is started for it",
    );
  }
  if (failed?.status === "rejected") throw failed.reason;
  return {
    created,
    removed: removedNames.length,
    removedNames,
    ...(sweepWake !== undefined ? { sweepWake } : {}),
  };
}

/** Records one evicted runner: a Warning event on the group and the evictions counter. */
function reportEviction(
  options: ApplyOptions,
  context: GroupContext,
  evicted: EvictedRunner,
  target: EventTarget,
  log: ReturnType<typeof logger>,
): void {
  options.metrics?.runnerEvictions.inc({ namespace: context.namespace, runnergroup: context.name });
  const runner = evicted.forgeJobId === undefined
    ? `Warm-pool runner Job ${evicted.name}`
    : `Runner Job ${evicted.name} for job ${evicted.forgeJobId}`;
  const next = evicted.forgeJobId === undefined
    ? "The warm pool is filled again"
    : "If the job is still queued it gets a new runner (evictions do not count toward the retry limit)";
  log.warn("{runner} lost its pod to an eviction, preemption or node loss: {reason}", {
    runner,
    jobName: evicted.name,
    ...(evicted.forgeJobId !== undefined ? { forgeJobId: evicted.forgeJobId } : {}),
    reason: evicted.message,
  });
  void options.events.record(
    target,
    "Warning",
    "RunnerEvicted",
    `${runner} lost its pod to an eviction, preemption or node loss (${evicted.message}). ${next}`,
  );
}

/** The lowest free warm-pool slots; a slot whose name any Job holds (finished ones too) is not free. */
export function warmSlots(groupName: string, count: number, namesInUse: ReadonlySet<string>): { warmSlot: number }[] {
  const slots: { warmSlot: number }[] = [];
  for (let slot = 0; slots.length < count; slot++) {
    if (!namesInUse.has(warmRunnerJobName(groupName, slot))) slots.push({ warmSlot: slot });
  }
  return slots;
}

/**
 * One `RunnerJobCreated` event for the runner Jobs an apply created for queued jobs: a burst is one API write, not
 * one per Job (each Job's creation is in the log).
 */
function recordCreated(
  events: EventRecorder,
  target: EventTarget,
  started: readonly { name: string; runFor: PlannedRunner }[],
): void {
  if (started.length === 0) return;
  const describe = ({ name, runFor: { job } }: { name: string; runFor: PlannedRunner }, long: boolean): string =>
    long
      ? `${name} for job ${job.id} (${job.name}) of ${job.owner}/${job.repo}`
      : `${name} for job ${job.id} of ${job.owner}/${job.repo}`;
  if (started.length === 1) {
    void events.record(target, "Normal", "RunnerJobCreated", `Created runner Job ${describe(started[0], true)}`);
    return;
  }
  const shown = started.slice(0, 10).map((entry) => describe(entry, false)).join(", ");
  const more = started.length > 10 ? ` and ${started.length - 10} more (see the operator's log)` : "";
  void events.record(target, "Normal", "RunnerJobCreated", `Created ${started.length} runner Jobs: ${shown}${more}`);
}

/**
 * Creates one runner Job; resolves with its name when it was created now, undefined when it existed already (both
 * count as a runner that exists). A create slot is held for the API requests only: the body is built before the slot
 * is taken, and the cache, metrics, log and events are written after it is given back, so the next create starts as
 * soon as an answer arrives (a trace of a 5 x 20 backlog put 0.24-0.41 ms of such work between one answer and the
 * next request, median per round, against 0.01 ms for a loop with ready bodies).
 */
async function createRunnerJob(
  options: ApplyOptions,
  context: GroupContext & { warmPoolSize: number },
  input: { forge: string; forgeClient?: ForgeClient; endpoint: JobsEndpoint },
  runFor: RunFor,
  target: EventTarget,
  log: ReturnType<typeof logger>,
): Promise<string | undefined> {
  const { namespace, name } = context;
  const client = input.forgeClient;
  // Forgejo 15 registers each job's runner on its own; a warm runner (no job) uses the shared token.
  const ownRegistration = client?.features.runnerRegistration === true && "job" in runFor;
  const jobName = "job" in runFor
    ? runnerJobName(name, runFor.job.id, runFor.attempt)
    : warmRunnerJobName(name, runFor.warmSlot);
  const job = buildRunnerJob({
    group: { name, namespace, uid: context.uid, spec: context.spec },
    forge: input.forge,
    labels: context.labels,
    for: runFor,
    defaultImage: options.runnerImage,
    registrationToken: context.registrationToken,
    runner: client?.forge.kind ?? "gitea",
    ...(ownRegistration ? { runnerCredentials: { secretName: runnerCredentialsSecretName(jobName) } } : {}),
  });
  const created = await options.createSlots.run(() =>
    ownRegistration
      ? createRegisteredRunnerJob({
        batch: options.batch,
        core: options.core,
        client: client!,
        endpoint: input.endpoint,
        group: { name, uid: context.uid },
        job,
        purpose: "job" in runFor ? `job ${runFor.job.id} of ${runFor.job.owner}/${runFor.job.repo}` : "the warm pool",
        log,
      })
      : createJobOnce(options.batch, job, log)
  );
  if (!created) return undefined;
  options.assume?.(created);
  const metrics = options.metrics;
  metrics?.runnerJobsCreated.inc({ namespace, runnergroup: name });
  if ("warmSlot" in runFor) {
    log.info("Created warm-pool runner Job {jobName}", { jobName });
    void options.events.record(
      target,
      "Normal",
      "WarmRunnerCreated",
      `Created runner Job ${jobName} for the warm pool (size ${context.warmPoolSize})`,
    );
    return jobName;
  }
  if (runFor.replaces) metrics?.runnerJobsReplaced.inc({ namespace, runnergroup: name });
  const queuedAt = Date.parse(runFor.job.createdAt);
  if (metrics && !runFor.replaces && !Number.isNaN(queuedAt)) {
    metrics.spawnLatency.observe({ namespace, runnergroup: name }, Math.max(0, Date.now() - queuedAt) / 1000);
  }
  log.info("Created runner Job {jobName} for forge job {forgeJobId} ({repository}, runs-on {runsOn})", {
    jobName,
    forgeJobId: runFor.job.id,
    repository: `${runFor.job.owner}/${runFor.job.repo}`,
    runsOn: runFor.job.runsOn.join(","),
    attempt: runFor.attempt,
  });
  if (runFor.replaces) {
    void options.events.record(
      target,
      "Normal",
      "RunnerJobReplaced",
      `Created runner Job ${jobName} for job ${runFor.job.id} (${runFor.job.name}), replacing failed ${runFor.replaces}`,
    );
  }
  return jobName;
}

/**
 * Records what the group's runners did with their jobs (see job_tracker.ts). `workflowOf` names a run's workflow
 * file, asked only when the metrics carry the workflow label.
 */
export function recordJobMetrics(
  metrics: OperatorMetrics | undefined,
  group: { namespace: string; name: string },
  events: readonly JobEvent[],
  workflowOf: (event: JobEvent) => string | undefined = () => undefined,
): void {
  if (!metrics) return;
  const groupLabels = { namespace: group.namespace, runnergroup: group.name };
  for (const event of events) {
    const labels: Record<string, string> = { ...groupLabels, repository: event.repository };
    if (metrics.jobWorkflowLabel) labels.workflow = workflowOf(event) ?? "";
    if (event.type === "started") {
      metrics.jobsStarted.inc(labels);
      if (event.queueSeconds !== undefined) metrics.jobQueueDuration.observe(groupLabels, event.queueSeconds);
      if (event.runnerStartSeconds !== undefined) {
        metrics.runnerStartDuration.observe(groupLabels, event.runnerStartSeconds);
      }
      continue;
    }
    metrics.jobsCompleted.inc({ ...labels, result: event.result });
    if (event.runSeconds !== undefined) {
      metrics.jobRunDuration.observe(groupLabels, event.runSeconds);
      metrics.runnerSeconds.inc({ ...groupLabels, repository: event.repository }, event.runSeconds);
    }
  }
}
