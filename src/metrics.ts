/**
 * Prometheus metrics (prom-client), served at `/metrics`. Label values are bounded: namespaces, group names,
 * repositories, job results, endpoint templates and status classes (and workflow files, when asked for), never job
 * ids or URLs.
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";

const prefix = "gitea_runner_operator_";

/** Buckets for job and runner durations: seconds to hours. */
const jobBuckets = [1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200];

export interface MetricsOptions {
  /** Label the job counters with the workflow file too (`--job-metrics-workflow-label`); one series per workflow. */
  jobWorkflowLabel?: boolean;
}

export class OperatorMetrics {
  readonly registry = new Registry();
  readonly jobWorkflowLabel: boolean;
  readonly jobsStarted: Counter<string>;
  readonly jobsCompleted: Counter<string>;

  constructor(options: MetricsOptions = {}) {
    this.jobWorkflowLabel = options.jobWorkflowLabel ?? false;
    const workflow = this.jobWorkflowLabel ? ["workflow"] : [];
    this.jobsStarted = new Counter({
      name: `${prefix}jobs_started_total`,
      help: "Forge jobs that a runner of the RunnerGroup took.",
      labelNames: ["namespace", "runnergroup", "repository", ...workflow],
      registers: [this.registry],
    });
    this.jobsCompleted = new Counter({
      name: `${prefix}jobs_completed_total`,
      help:
        "Forge jobs that a runner of the RunnerGroup ran to their end, by result (success, failure, cancelled, ...).",
      labelNames: ["namespace", "runnergroup", "repository", "result", ...workflow],
      registers: [this.registry],
    });
  }

  readonly queuedJobs = new Gauge({
    name: `${prefix}queued_jobs`,
    help: "Queued forge jobs that a RunnerGroup runs.",
    labelNames: ["namespace", "runnergroup"] as const,
    registers: [this.registry],
  });
  readonly activeRunners = new Gauge({
    name: `${prefix}active_runners`,
    help: "Runner Jobs of a RunnerGroup that have not finished.",
    labelNames: ["namespace", "runnergroup"] as const,
    registers: [this.registry],
  });
  readonly idleRunners = new Gauge({
    name: `${prefix}idle_runners`,
    help: "Active runner Jobs of a RunnerGroup without a job to run: the warm pool and spare runners.",
    labelNames: ["namespace", "runnergroup"] as const,
    registers: [this.registry],
  });
  readonly eventsDropped = new Counter({
    name: `${prefix}events_dropped_total`,
    help: "Occurrences of Kubernetes Events the operator did not write, by reason: queue_full (the event queue was " +
      "full), write_failed (the API server refused or failed the write), namespace_terminating (the Event's " +
      "namespace is being deleted), shutdown (still queued at stop).",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly runnerJobsCreated = new Counter({
    name: `${prefix}runner_jobs_created_total`,
    help: "Runner Jobs created, replacements included.",
    labelNames: ["namespace", "runnergroup"] as const,
    registers: [this.registry],
  });
  readonly runnerJobsReplaced = new Counter({
    name: `${prefix}runner_jobs_replaced_total`,
    help: "Runner Jobs created to replace a failed or evicted one.",
    labelNames: ["namespace", "runnergroup"] as const,
    registers: [this.registry],
  });
  readonly runnerJobsFailed = new Counter({
    name: `${prefix}runner_jobs_failed_total`,
    help: "Runner Jobs seen failed, evictions excluded.",
    labelNames: ["namespace", "runnergroup"] as const,
    registers: [this.registry],
  });
  readonly runnerEvictions = new Counter({
    name: `${prefix}runner_evictions_total`,
    help: "Runner Jobs whose pod was evicted, preempted or lost with its node.",
    labelNames: ["namespace", "runnergroup"] as const,
    registers: [this.registry],
  });
  readonly idleRunnersRemoved = new Counter({
    name: `${prefix}idle_runners_removed_total`,
    help:
      "Idle runner Jobs removed with their registrations: job cancelled or taken by another runner, or beyond the warm pool.",
    labelNames: ["namespace", "runnergroup"] as const,
    registers: [this.registry],
  });
  readonly registrationsRemoved = new Counter({
    name: `${prefix}runner_registrations_removed_total`,
    help: "Offline runner registrations removed from the forge because their runner Job is gone.",
    labelNames: ["namespace", "runnergroup"] as const,
    registers: [this.registry],
  });
  readonly spawnLatency = new Histogram({
    name: `${prefix}spawn_latency_seconds`,
    help: "Time from a job being queued on the forge to its runner Job being created.",
    labelNames: ["namespace", "runnergroup"] as const,
    buckets: [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600],
    registers: [this.registry],
  });
  readonly jobQueueDuration = new Histogram({
    name: `${prefix}job_queue_duration_seconds`,
    help: "Time from a job being queued on the forge to a runner of the RunnerGroup taking it.",
    labelNames: ["namespace", "runnergroup"] as const,
    buckets: jobBuckets,
    registers: [this.registry],
  });
  readonly jobRunDuration = new Histogram({
    name: `${prefix}job_run_duration_seconds`,
    help: "Time from a runner of the RunnerGroup taking a job to the job's end.",
    labelNames: ["namespace", "runnergroup"] as const,
    buckets: jobBuckets,
    registers: [this.registry],
  });
  readonly runnerStartDuration = new Histogram({
    name: `${prefix}runner_start_duration_seconds`,
    help: "Time from the later of a runner Job's creation and its job being queued, to the runner taking the job: " +
      "the cold start a warm pool hides.",
    labelNames: ["namespace", "runnergroup"] as const,
    buckets: [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600],
    registers: [this.registry],
  });
  readonly runnerSeconds = new Counter({
    name: `${prefix}runner_seconds_total`,
    help: "Seconds the RunnerGroup's runners spent running jobs, by repository: for usage and cost reports.",
    labelNames: ["namespace", "runnergroup", "repository"] as const,
    registers: [this.registry],
  });
  readonly forgeRequests = new Counter({
    name: `${prefix}forge_requests_total`,
    help: "Requests to the forge API by endpoint and status class (2xx, 4xx, 5xx, error).",
    labelNames: ["endpoint", "code"] as const,
    registers: [this.registry],
  });
  readonly forgeRequestDuration = new Histogram({
    name: `${prefix}forge_request_duration_seconds`,
    help: "Duration of forge API requests by endpoint.",
    labelNames: ["endpoint"] as const,
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly reconcileDuration = new Histogram({
    name: `${prefix}reconcile_duration_seconds`,
    help: "Duration of RunnerGroup reconciles.",
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  readonly reconcileErrors = new Counter({
    name: `${prefix}reconcile_errors_total`,
    help: "RunnerGroup reconciles that failed (and were retried with backoff).",
    registers: [this.registry],
  });
  readonly workQueueDepth = new Gauge({
    name: `${prefix}work_queue_depth`,
    help: "RunnerGroup keys waiting in the work queue.",
    registers: [this.registry],
  });
  readonly informerRestarts = new Counter({
    name: `${prefix}informer_restarts_total`,
    help: "Restarts of an informer after a watch or list error.",
    labelNames: ["informer"] as const,
    registers: [this.registry],
  });
  readonly leader = new Gauge({
    name: `${prefix}leader`,
    help: "1 when this instance creates runner Jobs: the leader, or the only instance without --leader-elect.",
    registers: [this.registry],
  });

  /** Forgets the per-group series of a deleted group. */
  forgetGroup(namespace: string, runnergroup: string): void {
    for (const metric of [this.queuedJobs, this.activeRunners, this.idleRunners]) {
      metric.remove({ namespace, runnergroup });
    }
  }

  /** The exposition text. */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
