/**
 * Ghost-runner cleanup for one group: idle runner Jobs beyond the warm pool are removed with their registrations, and
 * offline registrations whose runner Job is gone are deleted from the forge. The reconcile decides *which* runners are
 * idle (see planner.ts); this module does the removal safely against the forge's runners API.
 */
import type { V1Job } from "@kubernetes/client-node";
import type { BatchV1Api } from "../kube/api.ts";
import { ForgeError } from "../forge/errors.ts";
import type { ForgeClient, JobsEndpoint, RunnerRegistration } from "../forge/forge_client.ts";
import type { RunnerLabel } from "../forge/labels.ts";
import type { EventRecorder, EventTarget } from "../kube/events.ts";
import { apiMessage, apiStatus } from "../kube/client.ts";
import type { logger } from "../log.ts";
import type { OperatorMetrics } from "../metrics.ts";
import { isGroupRunnerName } from "./runner_job.ts";
import type { RunnerGroupSpec } from "./schema.ts";

export interface RunnerCleanupOptions {
  context: GroupContext;
  /** A client with the group's API token, for a forge with a runners API. */
  client: ForgeClient;
  /** The group's scope, where its runners are registered. */
  endpoint: JobsEndpoint;
  batch: BatchV1Api;
  events: EventRecorder;
  metrics?: OperatorMetrics;
  /** The group, for events. */
  target: EventTarget;
  log: ReturnType<typeof logger>;
}

/** Per group, across reconciles: when the registrations were last swept, and when each orphan was first seen. */
export interface OrphanSweep {
  sweptAt: number;
  firstSeen: Map<number, number>;
}

/** What the reconcile knows of a group whose spec and credentials are valid. */
export interface GroupContext {
  key: string;
  namespace: string;
  name: string;
  uid: string;
  spec: RunnerGroupSpec;
  labels: RunnerLabel[];
  registrationToken: { name: string; key: string };
}

/**
 * Removes idle runners and stale registrations of one group, within one reconcile. The group's runner list is read
 * at most once per reconcile. Forge errors are reported (event, log) and end the cleanup for this round: removal is
 * retried by a later reconcile, and nothing is removed on a guess.
 */
export class RunnerCleanup {
  #registrations?: Promise<RunnerRegistration[] | undefined>;
  readonly #options: RunnerCleanupOptions;

  constructor(options: RunnerCleanupOptions) {
    this.#options = options;
  }

  get context(): GroupContext {
    return this.#options.context;
  }

  /** The group's runner registrations, or undefined when the forge did not answer (reported). */
  registrations(): Promise<RunnerRegistration[] | undefined> {
    this.#registrations ??= this.#options.client.listRunners(this.#options.endpoint).catch(async (error) => {
      await this.#reportForgeError(error, "list the runner registrations");
      return undefined;
    });
    return this.#registrations;
  }

  /**
   * Removes an idle runner Job and its registration. A registered runner is first disabled, so Gitea hands it no
   * task, and the jobs list is read again: if it took a job meanwhile, it is enabled again and kept.
   */
  async removeIdleRunner(jobName: string, idleSince: number, now: number): Promise<boolean> {
    const { namespace, name, key } = this.context;
    const registrations = await this.registrations();
    if (!registrations) return false;
    const registration = registrations.find((runner) => runner.name === jobName);
    try {
      // Forgejo can neither disable a runner nor name a job's runner; its runners that register on their own are
      // bound to their job by its handle, and an idle one's job is neither waiting nor running: it can take no task.
      if (registration && this.#options.client.features.disableRunners) {
        if (registration.busy) return false;
        if (!registration.disabled) {
          await this.#options.client.setRunnerDisabled(this.#options.endpoint, registration.id, true);
        }
        const open = await this.#options.client.listOpenJobs(this.#options.endpoint);
        if (open.running.some((job) => job.runnerName === jobName)) {
          await this.#options.client.setRunnerDisabled(this.#options.endpoint, registration.id, false);
          this.#options.log.info("Kept runner {jobName}: it took a job while being removed", { jobName });
          return false;
        }
      } else if (registration?.busy) return false;
    } catch (error) {
      await this.#reportForgeError(error, `remove idle runner ${jobName}`);
      return false;
    }
    try {
      await this.#options.batch.deleteNamespacedJob({
        name: jobName,
        namespace,
        propagationPolicy: "Background",
      });
    } catch (error) {
      if (apiStatus(error) !== 404) {
        throw new Error(`Cannot delete runner Job ${namespace}/${jobName}: ${apiMessage(error)}`, { cause: error });
      }
    }
    if (registration) {
      try {
        await this.#options.client.deleteRunner(this.#options.endpoint, registration.id);
      } catch (error) {
        // The Job is gone: the registration is now an orphan, which the registration sweep removes later.
        await this.#reportForgeError(error, `delete the registration of runner ${jobName}`);
      }
    }
    const idleSeconds = Math.round((now - idleSince) / 1000);
    this.#options.log.info("Removed idle runner Job {jobName} (idle {idleSeconds} s, registered {registered})", {
      jobName,
      idleSeconds,
      registered: registration !== undefined,
      group: key,
    });
    this.#options.metrics?.idleRunnersRemoved.inc({ namespace, runnergroup: name });
    await this.#options.events.record(
      this.#options.target,
      "Normal",
      "IdleRunnerRemoved",
      `Removed runner Job ${jobName}${registration ? " and its registration" : ""}: idle for ${idleSeconds} s ` +
        "with no queued job for it (cancelled, or taken by another runner)",
    );
    return true;
  }

  /** Deletes a registration whose runner Job is gone. */
  async removeOrphanRegistration(runner: RunnerRegistration): Promise<boolean> {
    const { namespace, name } = this.context;
    try {
      await this.#options.client.deleteRunner(this.#options.endpoint, runner.id);
    } catch (error) {
      await this.#reportForgeError(error, `delete the registration of runner ${runner.name}`);
      return false;
    }
    this.#options.log.info("Removed offline registration {runner} (id {id}) whose runner Job is gone", {
      runner: runner.name,
      id: runner.id,
    });
    this.#options.metrics?.registrationsRemoved.inc({ namespace, runnergroup: name });
    await this.#options.events.record(
      this.#options.target,
      "Normal",
      "RunnerRegistrationRemoved",
      `Removed offline runner registration ${runner.name} (id ${runner.id}) from Gitea: its runner Job is gone`,
    );
    return true;
  }

  async #reportForgeError(error: unknown, what: string): Promise<void> {
    if (!(error instanceof ForgeError)) throw error;
    this.#options.log.warn("Cannot {what}: {error}", { what, error: error.message });
    await this.#options.events.record(
      this.#options.target,
      "Warning",
      "RunnerCleanupFailed",
      `Cannot ${what}: ${error.message}`,
    );
  }
}

/**
 * Deletes the group's runner registrations that are offline, ephemeral, named like the group's runners and have no
 * runner Job left, once seen so for the grace period: runners whose pod died before they got a job. Runs at most
 * once per grace period (at least 5 s, at most 5 min) per group; returns when to look again while some wait.
 */
export async function sweepOrphanRegistrations(
  cleanup: RunnerCleanup,
  state: OrphanSweep,
  allRunnerJobs: V1Job[],
  now: number,
  graceMs: number,
): Promise<number | undefined> {
  const interval = Math.min(300_000, Math.max(5_000, graceMs));
  if (now - state.sweptAt < interval) return state.firstSeen.size > 0 ? state.sweptAt + interval : undefined;
  state.sweptAt = now;
  const registrations = await cleanup.registrations();
  if (!registrations) return now + interval;
  // Runner Jobs of every namespace: a name may be claimed by two groups (see isGroupRunnerName).
  const jobNames = new Set(allRunnerJobs.map((job) => job.metadata?.name));
  const orphans = registrations.filter((runner) =>
    runner.ephemeral && !runner.online && !runner.busy && !jobNames.has(runner.name) &&
    isGroupRunnerName(cleanup.context.name, runner.name)
  );
  const seen = new Map<number, number>();
  for (const runner of orphans) {
    const since = state.firstSeen.get(runner.id) ?? now;
    if (now - since >= graceMs) {
      if (await cleanup.removeOrphanRegistration(runner)) continue;
    }
    seen.set(runner.id, since);
  }
  state.firstSeen = seen;
  return seen.size > 0 ? now + interval : undefined;
}
