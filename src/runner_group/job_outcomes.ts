/**
 * The step of the reconcile after apply: what became of the jobs the group's runners took (`job_tracker.ts`) and of
 * its runner Jobs (`job_history.ts`). It reads from the forge, and writes nothing: at most one read per job that left
 * the open lists (jobs of one run that left together share one), and, with `--job-metrics-workflow-label`, one per
 * workflow run for its file name. The reconcile records the events it returns as metrics (apply.ts) and the history
 * in status.
 */
import type { V1Job } from "@kubernetes/client-node";
import { ForgeError } from "../forge/errors.ts";
import type { GiteaClient, JobDetail } from "../forge/gitea_client.ts";
import { describeError, type logger } from "../log.ts";
import { settleBounded } from "../runtime/concurrency.ts";
import { RunnerHistory } from "./job_history.ts";
import { type GroupRunners, type JobEvent, JobTracker, type LeavingJob } from "./job_tracker.ts";
import type { GroupDemand } from "./demand.ts";
import { labelKeys } from "./runner_job.ts";
import { defaultRecentRunners, type RecentRunner, type RunnerGroup, type RunnerGroupSpec } from "./schema.ts";

/** Reads in flight at once, per group. */
const readConcurrency = 4;
/** Workflow file names kept per process: one per workflow run. */
const workflowCacheSize = 2000;

export interface JobOutcomesInput {
  key: string;
  /** The group as cached: its uid, and its status.recentRunners as last written. */
  group: Pick<RunnerGroup, "metadata" | "status">;
  spec: Pick<RunnerGroupSpec, "history">;
  /** The forge's latest answer (see demand.ts). */
  demand: Pick<GroupDemand, "forge" | "snapshot" | "usable">;
  /** Ids of the queued jobs the group runs (see planner.ts). */
  owned: ReadonlySet<number>;
  /** Every runner Job in the cache; the group's are picked by its uid. */
  runnerJobs: readonly V1Job[];
  /** Runner Jobs this reconcile removed as idle. */
  removed: readonly string[];
  /** Reads of single jobs and runs: Gitea's API has them; without them (Forgejo) no outcome is read. */
  client?: ForgeReads;
  log: ReturnType<typeof logger>;
  now: number;
}

export interface JobOutcomesResult {
  events: JobEvent[];
  /** The workflow file of an event's run, when the metrics carry it. */
  workflowOf: (event: JobEvent) => string | undefined;
  recentRunners: RecentRunner[];
}

/** The forge reads this step makes. */
export type ForgeReads = Pick<GiteaClient, "getJob" | "listCompletedRunJobs" | "getRunWorkflow">;

/**
 * Reads the jobs that left the open lists. Jobs of one run that left together (a matrix) are read in one request,
 * the run's completed jobs; any other job, or one that list does not show, is read by itself. Each job's answer is
 * its detail, undefined when the forge no longer has it (404), or the error.
 */
export async function readJobs(
  jobs: readonly LeavingJob[],
  client: Pick<ForgeReads, "getJob" | "listCompletedRunJobs">,
): Promise<Map<number, JobDetail | undefined | Error>> {
  const answers = new Map<number, JobDetail | undefined | Error>();
  const fail = (job: LeavingJob, error: unknown): void => {
    const gone = error instanceof ForgeError && error.kind === "NotFound";
    answers.set(job.id, gone ? undefined : error instanceof Error ? error : new Error(String(error)));
  };
  const runs = new Map<string, LeavingJob[]>();
  for (const job of jobs) {
    const key = `${job.owner}/${job.repo}#${job.runId}`;
    runs.set(key, [...runs.get(key) ?? [], job]);
  }
  const batches = [...runs.values()].filter((batch) => batch.length > 1);
  const singles = [...runs.values()].filter((batch) => batch.length === 1).flat();
  const lists = await settleBounded(batches, readConcurrency, ([{ owner, repo, runId }]) => {
    return client.listCompletedRunJobs(owner, repo, runId);
  });
  lists.forEach((list, index) => {
    for (const job of batches[index]) {
      if (list.status === "rejected") fail(job, list.reason);
      else {
        const detail = list.value.find((candidate) => candidate.id === job.id);
        if (detail) answers.set(job.id, detail);
        else singles.push(job);
      }
    }
  });
  const reads = await settleBounded(singles, readConcurrency, (job) => client.getJob(job.owner, job.repo, job.id));
  reads.forEach((read, index) => {
    if (read.status === "fulfilled") answers.set(singles[index].id, read.value);
    else fail(singles[index], read.reason);
  });
  return answers;
}

/** Per group across reconciles: its job tracker and runner history. */
export class JobOutcomes {
  readonly #groups = new Map<string, { tracker: JobTracker; history: RunnerHistory }>();
  readonly #workflows = new Map<string, string>();

  constructor(readonly options: { workflowLabel: boolean; settleMs: number }) {}

  async observe(input: JobOutcomesInput): Promise<JobOutcomesResult> {
    const { now, log, demand } = input;
    let state = this.#groups.get(input.key);
    if (!state) {
      state = { tracker: new JobTracker(now), history: new RunnerHistory() };
      this.#groups.set(input.key, state);
    }
    const { tracker, history } = state;
    const uid = input.group.metadata.uid;
    const own = input.runnerJobs.filter((job) => job.metadata?.labels?.[labelKeys.groupUid] === uid);
    history.observe(own, new Set(input.removed), now);
    const runners: GroupRunners = {
      isOwn: (name) => history.runner(name) !== undefined,
      createdAt: (name) => history.runner(name)?.createdAt,
    };

    const events: JobEvent[] = [];
    const snapshot = demand.snapshot;
    // Without a usable answer the forge is failing: reads would fail too, and use up the retries of leaving jobs.
    if (demand.usable && snapshot && input.client) {
      events.push(...tracker.observe({
        fetchedAt: snapshot.fetchedAt,
        queued: snapshot.jobs,
        running: snapshot.running,
        owned: input.owned,
      }, runners));
      for (const [id, answer] of await readJobs(tracker.leaving(), input.client)) {
        if (answer instanceof Error) {
          tracker.readFailed(id);
          log.warn("Cannot read job {forgeJobId}: {error}", { forgeJobId: id, error: describeError(answer) });
        } else events.push(...tracker.settle(id, answer, runners, now));
      }
    }
    const workflowOf = await this.#workflowNames(input, events);

    const { entries, forgotten } = history.entries({
      previous: input.group.status?.recentRunners ?? [],
      limit: input.spec.history?.recentRunners ?? defaultRecentRunners,
      outcomeOf: (runner) => tracker.outcomeOf(runner),
      fetchedAt: demand.usable ? snapshot?.fetchedAt ?? 0 : 0,
      settleMs: this.options.settleMs,
      now,
    });
    for (const runner of forgotten) tracker.forgetRunner(runner);
    return { events, workflowOf, recentRunners: entries };
  }

  forget(groupKey: string): void {
    this.#groups.delete(groupKey);
  }

  /** Reads the workflow file of each run among the events that is not cached yet (only with the workflow label). */
  async #workflowNames(
    input: JobOutcomesInput,
    events: readonly JobEvent[],
  ): Promise<(event: JobEvent) => string | undefined> {
    const key = (event: JobEvent): string => `${input.demand.forge}|${event.repository}|${event.runId}`;
    const client = input.client;
    if (!this.options.workflowLabel || !client) return () => undefined;
    const missing = new Map<string, JobEvent>();
    for (const event of events) if (!this.#workflows.has(key(event))) missing.set(key(event), event);
    const runs = [...missing.values()];
    const answers = await settleBounded(runs, readConcurrency, (event) => {
      const [owner, repo] = event.repository.split("/");
      return client.getRunWorkflow(owner, repo, event.runId);
    });
    answers.forEach((answer, index) => {
      if (answer.status === "fulfilled") {
        this.#workflows.set(key(runs[index]), answer.value);
        // A Map iterates in insertion order: the first key is the oldest.
        if (this.#workflows.size > workflowCacheSize) this.#workflows.delete(this.#workflows.keys().next().value!);
      } else {
        input.log.warn("Cannot read the workflow of run {runId}: {error}", {
          runId: runs[index].runId,
          error: describeError(answer.reason),
        });
      }
    });
    return (event) => this.#workflows.get(key(event));
  }
}
