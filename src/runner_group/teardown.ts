/**
 * What happens when a RunnerGroup is deleted. The operator keeps a finalizer on every group it reconciles, so a
 * deleted group stays until its runners are gone from the cluster *and* from the forge: the garbage collector alone
 * would remove the runner Jobs and leave their registrations in Gitea, which nothing removes once the group is gone.
 *
 * On deletion: no runner is started any more (the group leaves its poller); each registration of the group that is
 * not running a job is disabled and deleted with its runner Job; runner Jobs that never registered are deleted; busy
 * runners finish their job (Gitea deletes an ephemeral runner's registration when its task ends: models/actions/task.go
 * in Gitea 1.26) until the deletion timeout, after which they are removed too. Then the finalizer goes and the garbage
 * collector takes the rest (finished Jobs, the managed registration-token Secret). A group whose API token is unknown
 * is released at once, and one whose forge does not answer after a minute (or the timeout, if shorter), each with a Warning event
 * saying what may be left in the forge.
 */
import type { V1Job } from "@kubernetes/client-node";
import type { BatchV1Api, CustomObjectsApi } from "../kube/api.ts";
import { ForgeError } from "../forge/errors.ts";
import { describeForge, type ForgeClient, type JobsEndpoint, type RunnerRegistration } from "../forge/forge_client.ts";
import type { EventRecorder, EventTarget } from "../kube/events.ts";
import { apiMessage, apiStatus } from "../kube/client.ts";
import type { logger } from "../log.ts";
import type { OperatorMetrics } from "../metrics.ts";
import { describeRunnerJob, isGroupRunnerName, labelKeys } from "./runner_job.ts";
import { readSecretKey, type SecretReader } from "./credentials.ts";
import { forgeTargetOf } from "./demand.ts";
import { apiGroup, apiVersion, plural, type RunnerGroup, type RunnerGroupSpec } from "./schema.ts";
import { validateGroup } from "./validate.ts";

/** The operator's finalizer on RunnerGroups. */
export const cleanupFinalizer = "gitea.bpg.pw/runner-cleanup";

/** How often a deleted group that waits for busy runners or its forge is looked at again. */
export const teardownRequeueMs = 3000;
/**
 * How long a deleted group waits for a forge that does not answer (at most the deletion timeout): long enough for a
 * restart of the forge, short enough that deleting a group (or its namespace) whose forge is gone does not hang.
 */
export const unreachableForgeWaitMs = 60_000;

export function hasCleanupFinalizer(group: RunnerGroup): boolean {
  return (group.metadata.finalizers ?? []).includes(cleanupFinalizer);
}

/**
 * Sets the group's finalizers to `finalizers` with a merge patch that carries the resourceVersion the list was read
 * at, so a concurrent change by someone else fails with a conflict (and the work queue retries) instead of being
 * overwritten. A group already gone is not an error.
 */
async function patchFinalizers(
  custom: CustomObjectsApi,
  group: RunnerGroup,
  finalizers: string[],
  onConflict: "throw" | "ignore",
): Promise<void> {
  try {
    await custom.patchNamespacedCustomObject(
      {
        group: apiGroup,
        version: apiVersion,
        namespace: group.metadata.namespace,
        plural,
        name: group.metadata.name,
        body: { metadata: { finalizers, resourceVersion: group.metadata.resourceVersion } },
      },
    );
  } catch (error) {
    if (apiStatus(error) === 404 || (apiStatus(error) === 409 && onConflict === "ignore")) return;
    throw new Error(
      `Cannot update the finalizers of ${group.metadata.namespace}/${group.metadata.name}: ${apiMessage(error)}`,
      { cause: error },
    );
  }
}

/**
 * Adds the cleanup finalizer to a live group that lacks it. A conflict (the cached group is behind) is left to the
 * next reconcile, which the newer version's update event brings.
 */
export async function addCleanupFinalizer(custom: CustomObjectsApi, group: RunnerGroup): Promise<void> {
  if (hasCleanupFinalizer(group) || group.metadata.deletionTimestamp) return;
  await patchFinalizers(custom, group, [...(group.metadata.finalizers ?? []), cleanupFinalizer], "ignore");
}

/** Removes the cleanup finalizer: the group may go. */
export async function removeCleanupFinalizer(custom: CustomObjectsApi, group: RunnerGroup): Promise<void> {
  if (!hasCleanupFinalizer(group)) return;
  await patchFinalizers(
    custom,
    group,
    (group.metadata.finalizers ?? []).filter((f) => f !== cleanupFinalizer),
    "throw",
  );
}

/** Access to the group's forge, when the teardown has it. */
export interface TeardownForge {
  /** Detects the forge and makes its client (a failure is handled like any forge error of the teardown). */
  client: () => Promise<ForgeClient>;
  endpoint: JobsEndpoint;
  /** The group's runner label names (a Forgejo < 14 lists no job without them). */
  labels: readonly string[];
}

/**
 * The forge of a deleted group, with the API token its last reconcile read (`knownApiToken`), or else the one its
 * Secret holds now; the reason there is none when the spec is invalid or the token cannot be read.
 */
export async function teardownForgeOf(group: RunnerGroup, input: {
  knownApiToken?: string;
  readSecret: SecretReader;
  connect: (spec: RunnerGroupSpec, apiToken: string) => Promise<ForgeClient>;
}): Promise<TeardownForge | { unavailable: string }> {
  const valid = validateGroup(group);
  if (!valid.ok) return { unavailable: `the spec is invalid: ${valid.message}` };
  let token = input.knownApiToken;
  if (token === undefined) {
    const read = await readSecretKey(input.readSecret, group.metadata.namespace, valid.spec.authToken, "authToken");
    if (!read.ok) return { unavailable: `no API token: ${read.message}` };
    token = read.value;
  }
  const apiToken = token;
  return {
    client: () => input.connect(valid.spec, apiToken),
    endpoint: forgeTargetOf(valid.spec, apiToken).endpoint,
    labels: valid.labels.map((label) => label.name),
  };
}

export interface TeardownInput {
  group: RunnerGroup;
  /** The forge with the group's API token; a reason instead when there is none (token unknown, spec invalid). */
  forge: TeardownForge | { unavailable: string };
  /** Every runner Job in the cache (a registration named like another group's Job is not this group's). */
  runnerJobs: readonly V1Job[];
  batch: BatchV1Api;
  custom: CustomObjectsApi;
  events: EventRecorder;
  metrics?: OperatorMetrics;
  target: EventTarget;
  log: ReturnType<typeof logger>;
  now: number;
  /** How long after the deletion busy runners may finish and an unreachable forge is waited for. */
  timeoutMs: number;
}

/** Released: the finalizer is gone. Otherwise look again after `requeueAfterMs`. */
export type TeardownResult = { released: true } | { released: false; requeueAfterMs: number };

/** One pass of a deleted group's teardown (see the module comment). */
export async function tearDownGroup(input: TeardownInput): Promise<TeardownResult> {
  const { group, target, log, now } = input;
  const { namespace, name } = group.metadata;
  const deletedAt = new Date(group.metadata.deletionTimestamp ?? now).getTime() || now;
  const overdue = now - deletedAt >= input.timeoutMs;
  const forgeGivenUp = now - deletedAt >= Math.min(input.timeoutMs, unreachableForgeWaitMs);
  const ownJobs = input.runnerJobs.filter((job) => job.metadata?.labels?.[labelKeys.groupUid] === group.metadata.uid);
  const activeJobs = ownJobs.filter((job) => describeRunnerJob(job, now)?.state === "active");

  const release = async (warning?: string): Promise<TeardownResult> => {
    if (warning) {
      log.warn("Releasing deleted group {group}: {warning}", { group: `${namespace}/${name}`, warning });
      void input.events.record(target, "Warning", "CleanupIncomplete", warning);
    } else {
      log.info("Released deleted group {group}: no runner left in the cluster or the forge", {
        group: `${namespace}/${name}`,
      });
    }
    await removeCleanupFinalizer(input.custom, group);
    return { released: true };
  };

  if ("unavailable" in input.forge) {
    return await release(
      `Cannot remove the group's runner registrations from the forge (${input.forge.unavailable}); ` +
        `registrations named after the group's runner Jobs (${name}-…) may be left there`,
    );
  }
  const { endpoint } = input.forge;
  let client: ForgeClient;
  let registrations: RunnerRegistration[] = [];
  /** Without a runners API (Forgejo < 15): the forge jobs being run, whose own runner Jobs are taken as busy. */
  let runningJobIds = new Set<number>();
  try {
    client = await input.forge.client();
    const otherJobNames = new Set(
      input.runnerJobs.filter((job) => !ownJobs.includes(job)).map((job) => job.metadata?.name),
    );
    const ownJobNames = new Set(ownJobs.map((job) => job.metadata?.name));
    if (client.features.runnersApi) {
      registrations = (await client.listRunners(endpoint)).filter((runner) =>
        ownJobNames.has(runner.name) || (isGroupRunnerName(name, runner.name) && !otherJobNames.has(runner.name))
      );
    } else if (!overdue) {
      const open = await client.listOpenJobs(endpoint, { labels: input.forge.labels });
      runningJobIds = new Set(open.running.map((job) => job.id));
    }
  } catch (error) {
    if (!(error instanceof ForgeError)) throw error;
    if (forgeGivenUp) {
      return await release(
        `The forge did not answer for ${
          Math.round((now - deletedAt) / 1000)
        } s after the deletion (${error.message}); ` +
          `runner registrations of the group (${name}-…) may be left there`,
      );
    }
    void input.events.record(
      target,
      "Warning",
      "CleanupWaiting",
      `Cannot list the runner registrations: ${error.message}`,
    );
    return { released: false, requeueAfterMs: teardownRequeueMs };
  }

  let waiting = 0;
  const failures: string[] = [];
  const removable: RunnerRegistration[] = [];
  try {
    for (const runner of registrations) {
      if (runner.busy && !overdue) {
        waiting++;
        continue;
      }
      // Disabled first, so Gitea hands it no task; one that took a task just before is seen in the jobs list below.
      // (Forgejo cannot disable; its runners of their own are bound to their job, and an idle one runs none.)
      if (!runner.disabled && client.features.disableRunners) await client.setRunnerDisabled(endpoint, runner.id, true);
      removable.push(runner);
    }
    const running = overdue || removable.length === 0
      ? new Set<string>()
      : new Set((await client.listOpenJobs(endpoint)).running.map((job) => job.runnerName));
    for (const runner of removable) {
      if (running.has(runner.name)) {
        waiting++;
        continue;
      }
      await deleteJob(input.batch, namespace, runner.name, ownJobs);
      await client.deleteRunner(endpoint, runner.id);
      input.metrics?.registrationsRemoved.inc({ namespace, runnergroup: name });
      log.info("Removed runner {runner} of the deleted group", { runner: runner.name, busy: runner.busy });
    }
  } catch (error) {
    if (!(error instanceof ForgeError)) throw error;
    failures.push(error.message);
  }
  // Runner Jobs without a registration have not registered yet (or their runner is gone): they run no job.
  const registered = new Set(registrations.map((runner) => runner.name));
  for (const job of activeJobs) {
    if (registered.has(job.metadata!.name!)) continue;
    const forgeJobId = describeRunnerJob(job, now)?.forgeJobId;
    if (forgeJobId !== undefined && runningJobIds.has(forgeJobId)) {
      waiting++;
      continue;
    }
    await deleteJob(input.batch, namespace, job.metadata!.name!, ownJobs);
  }
  if (!client.features.runnersApi && waiting === 0) {
    // Before v15 Forgejo neither lists nor deletes runners, and keeps every registration (none is ephemeral).
    return await release(
      `${describeForge(client.forge)} has no runners API: the registrations of the group's runners (${name}-…) ` +
        "stay in Forgejo; remove them in its runner settings",
    );
  }
  if (waiting === 0 && failures.length === 0) return await release();
  if (overdue && failures.length > 0) {
    return await release(`Cannot remove the group's runner registrations: ${failures.join("; ")}`);
  }
  if (failures.length > 0) {
    void input.events.record(
      target,
      "Warning",
      "CleanupWaiting",
      `Cannot remove the group's runners yet: ${failures.join("; ")}`,
    );
  } else {
    void input.events.record(
      target,
      "Normal",
      "WaitingForRunners",
      `Deleted; waiting for ${waiting} busy runner(s) to finish their job (at most until ` +
        `${new Date(deletedAt + input.timeoutMs).toISOString()})`,
    );
  }
  return { released: false, requeueAfterMs: teardownRequeueMs };
}

/** Deletes a runner Job of the group by name, if it has one of that name; a Job already gone is fine. */
async function deleteJob(batch: BatchV1Api, namespace: string, name: string, ownJobs: readonly V1Job[]): Promise<void> {
  const job = ownJobs.find((candidate) => candidate.metadata?.name === name);
  if (!job || job.metadata?.deletionTimestamp) return;
  try {
    await batch.deleteNamespacedJob({ name, namespace, propagationPolicy: "Background" });
  } catch (error) {
    if (apiStatus(error) !== 404) {
      throw new Error(`Cannot delete runner Job ${namespace}/${name}: ${apiMessage(error)}`, { cause: error });
    }
  }
}
