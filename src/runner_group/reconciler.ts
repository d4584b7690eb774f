/**
 * The RunnerGroup reconcile: level-triggered, it reads the group, its runner Jobs and the latest demand from the
 * caches, creates the runner Jobs that are missing and writes status only when it changed.
 */
import type { V1Job } from "@kubernetes/client-node";
import type { DemandPollers, DemandSnapshot, ForgeTarget } from "../forge/demand_poller.ts";
import { ForgeError } from "../forge/errors.ts";
import { GiteaClient, type JobsEndpoint } from "../forge/gitea_client.ts";
import { effectiveRunnerLabels, InvalidLabelError, type RunnerLabel } from "../forge/labels.ts";
import type { EventRecorder, EventTarget } from "../kube/events.ts";
import { apiMessage, apiStatus, decodeSecretData, type KubeClients } from "../kube/client.ts";
import { describeError, logger, registerSecret } from "../log.ts";
import type { OperatorMetrics } from "../metrics.ts";
import type { ReconcileResult } from "../runtime/controller.ts";
import { chooseOwnerGroup, forgeKey, type GroupCoverage } from "./ownership.ts";
import { type PlannedRunner, planRunnerJobs, type RetryPolicy, type RunnerJobRecord } from "./planner.ts";
import {
  buildRunnerJob,
  describeRunnerJob,
  forgeLabel,
  groupOwnerReference,
  labelKeys,
  managedBy,
  managedRegistrationSecret,
  warmRunnerJobName,
} from "./runner_job.ts";
import {
  apiGroup,
  apiVersion,
  describeSpecIssues,
  kind,
  parseRunnerGroupSpec,
  plural,
  type RunnerGroup,
  type RunnerGroupSpec,
  type RunnerGroupStatus,
  type SecretKeySelector,
} from "./schema.ts";
import { computeConditions, type Observations, statusNeedsWrite } from "./status.ts";
import { type GroupContext, type OrphanSweep, RunnerCleanup, sweepOrphanRegistrations } from "./cleanup.ts";

/** Read access to the informer caches. */
export interface ClusterCache {
  group(namespace: string, name: string): RunnerGroup | undefined;
  groups(): RunnerGroup[];
  runnerJobs(): V1Job[];
}

export interface ReconcilerOptions {
  clients: KubeClients;
  cache: ClusterCache;
  pollers: DemandPollers;
  events: EventRecorder;
  runnerImage: string;
  retry: RetryPolicy;
  resyncIntervalMs: number;
  /** Timeout of the registration-token request. */
  forgeTimeoutMs?: number;
  metrics?: OperatorMetrics;
  /** Time for the forge to show that a finished runner took its job. */
  settleMs?: number;
  /**
   * How long a runner may stay idle beyond the warm pool before it is removed, and an offline registration of a
   * gone runner Job before it is deleted. Default 2 minutes.
   */
  idleGraceMs?: number;
  /** Told about every forge request made by the reconcile (registration tokens, runners API). */
  observeForge?: (endpoint: string, code: string, seconds: number) => void;
  now?: () => number;
}

type SecretRead = { ok: true; value: string } | {
  ok: false;
  reason: "SecretNotFound" | "KeyNotFound";
  message: string;
};

export const groupKey = (namespace: string, name: string): string => `${namespace}/${name}`;

/** The jobs endpoint and expected token owner of a group. */
export function forgeTargetOf(spec: RunnerGroupSpec, token: string): ForgeTarget {
  let endpoint: JobsEndpoint;
  switch (spec.scope) {
    case "global":
      endpoint = { scope: "global" };
      break;
    case "org":
      endpoint = { scope: "org", org: spec.org! };
      break;
    case "user":
      endpoint = { scope: "user" };
      break;
    case "repo":
      endpoint = { scope: "repo", owner: (spec.org ?? spec.user)!, repo: spec.repo! };
      break;
  }
  return {
    baseUrl: spec.giteaURL,
    endpoint,
    token,
    ...(spec.scope === "user" ? { expectedUser: spec.user } : {}),
  };
}

export class RunnerGroupReconciler {
  readonly #options: ReconcilerOptions;
  readonly #log = logger("reconcile");
  readonly #coverage = new Map<string, { resourceVersion?: string; coverage?: GroupCoverage }>();
  /** Per group: when each idle runner Job was first seen idle. */
  readonly #idleSince = new Map<string, Map<string, number>>();
  /** Per group: when each offline registration without a runner Job was first seen, and when the last sweep ran. */
  readonly #orphans = new Map<string, OrphanSweep>();
  #reconcileCount = 0;

  constructor(options: ReconcilerOptions) {
    this.#options = options;
  }

  readonly reconcile = async (key: string): Promise<ReconcileResult> => {
    const [namespace, name] = key.split("/");
    const group = this.#options.cache.group(namespace, name);
    if (!group || group.metadata.deletionTimestamp) {
      // Runner Jobs are owned by the group; the garbage collector removes them.
      this.#options.pollers.unsubscribe(key);
      this.#coverage.delete(key);
      this.#idleSince.delete(key);
      this.#orphans.delete(key);
      this.#options.metrics?.forgetGroup(namespace, name);
      return {};
    }
    const reconcileId = ++this.#reconcileCount;
    const log = this.#log.with({ group: key, reconcileId });
    const now = this.#options.now?.() ?? Date.now();
    const target: EventTarget = {
      apiVersion: `${apiGroup}/${apiVersion}`,
      kind,
      name,
      namespace,
      uid: group.metadata.uid,
    };

    const parsed = parseRunnerGroupSpec(group.spec);
    if (!parsed.success) {
      this.#options.pollers.unsubscribe(key);
      const message = describeSpecIssues(parsed.error);
      await this.#options.events.record(target, "Warning", "InvalidSpec", message);
      await this.#writeStatus(group, { spec: { ok: false, reason: "InvalidSpec", message } }, {}, now);
      return {};
    }
    const spec = parsed.data;
    let labels: RunnerLabel[];
    try {
      labels = effectiveRunnerLabels(spec.labels ?? [], spec.defaultLabels ?? true);
    } catch (error) {
      if (!(error instanceof InvalidLabelError)) throw error;
      this.#options.pollers.unsubscribe(key);
      await this.#options.events.record(target, "Warning", "InvalidLabels", error.message);
      await this.#writeStatus(group, { spec: { ok: false, reason: "InvalidLabels", message: error.message } }, {}, now);
      return {};
    }

    const auth = await this.#readSecretKey(namespace, spec.authToken, "authToken");
    const registrationToken = spec.registrationToken ?? managedRegistrationSecret(name);
    let registration: SecretRead = auth;
    if (auth.ok) {
      if (spec.registrationToken) {
        registration = await this.#readSecretKey(namespace, spec.registrationToken, "registrationToken");
      } else {
        try {
          registration = await this.#ensureRegistrationSecret(group, spec, auth.value, registrationToken, target);
        } catch (error) {
          if (!(error instanceof ForgeError)) throw error;
          // The forge refused or is down: the same condition and backoff as a failed poll.
          await this.#options.events.record(target, "Warning", `Forge${error.kind}`, error.message);
          await this.#writeStatus(
            group,
            {
              spec: { ok: true },
              credentials: { ok: true },
              forge: { ok: false, reason: error.kind, message: error.message },
            },
            {},
            now,
          );
          throw new Error(`Cannot obtain a runner registration token: ${error.message}`, { cause: error });
        }
      }
    }
    const missing = [auth, registration].find((read) => !read.ok);
    if (missing && !missing.ok) {
      this.#options.pollers.unsubscribe(key);
      await this.#options.events.record(target, "Warning", missing.reason, missing.message);
      await this.#writeStatus(
        group,
        { spec: { ok: true }, credentials: { ok: false, reason: missing.reason, message: missing.message } },
        {},
        now,
      );
      // Secrets are not watched: look again after the resync interval.
      return { requeueAfterMs: this.#options.resyncIntervalMs };
    }
    const token = (auth as { value: string }).value;
    registerSecret(token);
    registerSecret((registration as { value: string }).value);

    const forgeTarget = forgeTargetOf(spec, token);
    const targetKey = this.#options.pollers.subscribe(key, forgeTarget);
    const snapshot = this.#options.pollers.snapshot(targetKey);
    const forge = forgeKey(spec.giteaURL);

    const allRunnerJobs = this.#options.cache.runnerJobs();
    const records: RunnerJobRecord[] = [];
    const activeElsewhere = new Set<number>();
    for (const job of allRunnerJobs) {
      const record = describeRunnerJob(job, now);
      if (!record) continue;
      const labelsOfJob = job.metadata?.labels ?? {};
      if (labelsOfJob[labelKeys.groupUid] === group.metadata.uid) records.push(record);
      else if (
        labelsOfJob[labelKeys.forge] === forgeLabel(forge) && record.state === "active" &&
        record.forgeJobId !== undefined
      ) {
        activeElsewhere.add(record.forgeJobId);
      }
    }

    const coverages = this.#coverages();
    const usable = snapshot && !snapshot.error && snapshot.fetchedAt > 0;
    const idleGraceMs = this.#options.idleGraceMs ?? 120_000;
    const idleSince = this.#idleSince.get(key) ?? new Map<string, number>();
    this.#idleSince.set(key, idleSince);
    const plan = planRunnerJobs({
      groupKey: key,
      maxActiveRunners: spec.maxActiveRunners,
      minIdleRunners: spec.minIdleRunners ?? 0,
      idleSince: (runner) => idleSince.get(runner),
      idleGraceMs,
      labels,
      demand: usable
        ? { jobs: snapshot.jobs, busyRunners: snapshot.busyRunners, fetchedAt: snapshot.fetchedAt }
        : undefined,
      ownerOf: (job) => chooseOwnerGroup(forge, job, coverages),
      runnerJobs: records,
      activeElsewhere,
      now,
      retry: this.#options.retry,
      settleMs: this.#options.settleMs ?? 3000,
    });

    if (plan.answerAfter !== undefined) this.#options.pollers.answerAfter(targetKey, plan.answerAfter);
    // Idle times are kept only for runners idle now: one that took a job and went idle again starts over.
    const idleNames = new Set(plan.idle);
    for (const runner of [...idleSince.keys()]) if (!idleNames.has(runner)) idleSince.delete(runner);
    for (const runner of plan.idle) if (!idleSince.has(runner)) idleSince.set(runner, now);

    const context: GroupContext = { key, namespace, name, uid: group.metadata.uid, spec, labels, registrationToken };
    let created = 0;
    for (const planned of plan.create) {
      if (await this.#createRunnerJob(context, forge, planned, target)) created++;
    }
    // Warm-pool runners take the lowest free slots; a slot's name held by any Job (finished ones too) is not free.
    const namesInUse = new Set(
      allRunnerJobs.filter((job) => job.metadata?.namespace === namespace).map((job) => job.metadata?.name),
    );
    for (let slot = 0, made = 0; made < plan.createWarm && slot <= namesInUse.size + plan.createWarm; slot++) {
      if (namesInUse.has(warmRunnerJobName(name, slot))) continue;
      made++;
      if (await this.#createRunnerJob(context, forge, { warmSlot: slot }, target)) created++;
    }

    const cleanup = new RunnerCleanup({
      context,
      client: this.#forgeClient(spec, token),
      endpoint: forgeTarget.endpoint,
      batch: this.#options.clients.batch,
      events: this.#options.events,
      metrics: this.#options.metrics,
      target,
      log,
    });
    let removed = 0;
    for (const runner of plan.remove) {
      if (await cleanup.removeIdleRunner(runner, idleSince.get(runner) ?? now, now)) {
        removed++;
        idleSince.delete(runner);
      }
    }
    const orphans = this.#orphans.get(key) ?? { sweptAt: 0, firstSeen: new Map<number, number>() };
    this.#orphans.set(key, orphans);
    const sweepWake = await sweepOrphanRegistrations(cleanup, orphans, allRunnerJobs, now, idleGraceMs);

    for (const { job, failures } of plan.gaveUp) {
      await this.#options.events.record(
        target,
        "Warning",
        "RunnerJobFailed",
        `Job ${job.id} (${job.name}) of ${job.owner}/${job.repo} is still queued after ${failures} failed runner Jobs; ` +
          "no further runner is started for it",
      );
    }

    const observations: Observations = {
      spec: { ok: true },
      credentials: { ok: true },
      forge: forgeObservation(snapshot),
    };
    if (snapshot?.error) {
      await this.#options.events.record(target, "Warning", `Forge${snapshot.error.kind}`, snapshot.error.message);
    }
    const idleNow = Math.max(0, plan.idle.length - removed + plan.createWarm);
    // Without a usable answer from the forge, the last known queued and idle counts stay (in status and metrics).
    await this.#writeStatus(group, observations, {
      activeRunners: plan.active + created - removed,
      ...(usable ? { queuedJobs: plan.queued, idleRunners: idleNow } : {}),
      ...(snapshot && snapshot.checkedAt > 0 ? { lastCheckTime: new Date(snapshot.checkedAt).toISOString() } : {}),
    }, now);

    this.#options.metrics?.activeRunners.set({ namespace, runnergroup: name }, plan.active + created - removed);
    if (usable) {
      this.#options.metrics?.queuedJobs.set({ namespace, runnergroup: name }, plan.queued);
      this.#options.metrics?.idleRunners.set({ namespace, runnergroup: name }, idleNow);
    }
    log.debug(
      "Reconciled: {active} active, {queued} queued, {idle} idle, {created} created, {removed} removed, " +
        "{waiting} waiting for capacity",
      {
        active: plan.active + created - removed,
        queued: plan.queued,
        idle: idleNow,
        created,
        removed,
        waiting: plan.waitingForCapacity,
        runnerJobs: records.length,
      },
    );
    const wakeAt = [plan.wakeAt, sweepWake].filter((at): at is number => at !== undefined);
    // At least half a second: a wake time that is already past must not spin the worker.
    return wakeAt.length > 0 ? { requeueAfterMs: Math.max(500, Math.min(...wakeAt) - now) } : {};
  };

  /** Creates one runner Job, for a planned job or a warm-pool slot; false when it exists already. */
  async #createRunnerJob(
    context: GroupContext,
    forge: string,
    runFor: PlannedRunner | { warmSlot: number },
    target: EventTarget,
  ): Promise<boolean> {
    const { namespace, name } = context;
    const job = buildRunnerJob({
      group: { name, namespace, uid: context.uid, spec: context.spec },
      forge,
      labels: context.labels,
      for: runFor,
      defaultImage: this.#options.runnerImage,
      registrationToken: context.registrationToken,
    });
    const jobName = job.metadata!.name!;
    const log = this.#log.with({ group: context.key });
    try {
      await this.#options.clients.batch.createNamespacedJob({ namespace, body: job });
    } catch (error) {
      if (apiStatus(error) === 409) {
        log.debug("Runner Job {jobName} exists already", { jobName });
        return false;
      }
      throw new Error(`Cannot create runner Job ${namespace}/${jobName}: ${apiMessage(error)}`, { cause: error });
    }
    const metrics = this.#options.metrics;
    metrics?.runnerJobsCreated.inc({ namespace, runnergroup: name });
    if ("warmSlot" in runFor) {
      log.info("Created warm-pool runner Job {jobName}", { jobName });
      await this.#options.events.record(
        target,
        "Normal",
        "WarmRunnerCreated",
        `Created runner Job ${jobName} for the warm pool (minIdleRunners ${context.spec.minIdleRunners})`,
      );
      return true;
    }
    if (runFor.replaces) metrics?.runnerJobsReplaced.inc({ namespace, runnergroup: name });
    const queuedAt = Date.parse(runFor.job.createdAt);
    if (metrics && !runFor.replaces && !Number.isNaN(queuedAt)) {
      metrics.spawnLatency.observe(Math.max(0, Date.now() - queuedAt) / 1000);
    }
    log.info("Created runner Job {jobName} for forge job {forgeJobId} ({repository}, runs-on {runsOn})", {
      jobName,
      forgeJobId: runFor.job.id,
      repository: `${runFor.job.owner}/${runFor.job.repo}`,
      runsOn: runFor.job.runsOn.join(","),
      attempt: runFor.attempt,
    });
    const [reason, message] = runFor.replaces
      ? [
        "RunnerJobReplaced",
        `Created runner Job ${jobName} for job ${runFor.job.id} (${runFor.job.name}), replacing failed ${runFor.replaces}`,
      ]
      : [
        "RunnerJobCreated",
        `Created runner Job ${jobName} for job ${runFor.job.id} (${runFor.job.name}) of ${runFor.job.owner}/${runFor.job.repo}`,
      ];
    await this.#options.events.record(target, "Normal", reason, message);
    return true;
  }

  /** A forge client for the group's API token, counted in the forge request metrics. */
  #forgeClient(spec: RunnerGroupSpec, token: string): GiteaClient {
    return new GiteaClient({
      baseUrl: spec.giteaURL,
      token,
      timeoutMs: this.#options.forgeTimeoutMs,
      observe: this.#options.observeForge,
    });
  }

  /** What the ownership rule needs of every group, re-parsed only when a group changes. */
  #coverages(): GroupCoverage[] {
    const result: GroupCoverage[] = [];
    for (const group of this.#options.cache.groups()) {
      const key = groupKey(group.metadata.namespace, group.metadata.name);
      let entry = this.#coverage.get(key);
      if (!entry || entry.resourceVersion !== group.metadata.resourceVersion) {
        entry = { resourceVersion: group.metadata.resourceVersion, coverage: coverageOf(key, group) };
        this.#coverage.set(key, entry);
      }
      if (entry.coverage && !group.metadata.deletionTimestamp) result.push(entry.coverage);
    }
    return result;
  }

  /**
   * For a group without spec.registrationToken: the Secret the operator keeps, owned by the group, created with a
   * token from Gitea's registration-token endpoint of the group's scope (asked only when the Secret is missing).
   */
  async #ensureRegistrationSecret(
    group: RunnerGroup,
    spec: RunnerGroupSpec,
    apiToken: string,
    selector: { name: string; key: string },
    target: EventTarget,
  ): Promise<SecretRead> {
    const namespace = group.metadata.namespace;
    const existing = await this.#readSecretKey(namespace, selector, "registrationToken (kept by the operator)");
    if (existing.ok) return existing;
    const client = this.#forgeClient(spec, apiToken);
    const token = await client.createRegistrationToken(forgeTargetOf(spec, apiToken).endpoint);
    registerSecret(token);
    const body = {
      metadata: {
        name: selector.name,
        namespace,
        labels: { [labelKeys.managedBy]: managedBy, [labelKeys.groupUid]: group.metadata.uid },
        ownerReferences: [groupOwnerReference({ name: group.metadata.name, uid: group.metadata.uid })],
      },
      type: "Opaque",
      stringData: { [selector.key]: token },
    };
    try {
      if (existing.reason === "SecretNotFound") {
        await this.#options.clients.core.createNamespacedSecret({ namespace, body });
      } else {
        await this.#options.clients.core.replaceNamespacedSecret({ namespace, name: selector.name, body });
      }
    } catch (error) {
      if (apiStatus(error) !== 409) {
        throw new Error(`Cannot write Secret ${namespace}/${selector.name}: ${apiMessage(error)}`, { cause: error });
      }
    }
    await this.#options.events.record(
      target,
      "Normal",
      "RegistrationTokenStored",
      `Stored a runner registration token from Gitea in Secret ${namespace}/${selector.name}`,
    );
    return { ok: true, value: token };
  }

  async #readSecretKey(namespace: string, selector: SecretKeySelector, field: string): Promise<SecretRead> {
    try {
      const secret = await this.#options.clients.core.readNamespacedSecret({ namespace, name: selector.name });
      const encoded = secret.data?.[selector.key];
      if (encoded === undefined) {
        return {
          ok: false,
          reason: "KeyNotFound",
          message: `Secret ${namespace}/${selector.name} has no key "${selector.key}" (spec.${field})`,
        };
      }
      const value = decodeSecretData(encoded).trim();
      if (value === "") {
        return {
          ok: false,
          reason: "KeyNotFound",
          message: `Key "${selector.key}" of Secret ${namespace}/${selector.name} is empty (spec.${field})`,
        };
      }
      return { ok: true, value };
    } catch (error) {
      if (apiStatus(error) === 404) {
        return {
          ok: false,
          reason: "SecretNotFound",
          message: `Secret ${namespace}/${selector.name} does not exist (spec.${field})`,
        };
      }
      throw new Error(`Cannot read Secret ${namespace}/${selector.name}: ${apiMessage(error)}`, { cause: error });
    }
  }

  async #writeStatus(
    group: RunnerGroup,
    observations: Observations,
    counts: Pick<RunnerGroupStatus, "activeRunners" | "queuedJobs" | "idleRunners" | "lastCheckTime">,
    now: number,
  ): Promise<void> {
    const current = group.status;
    const next: RunnerGroupStatus = {
      activeRunners: counts.activeRunners ?? current?.activeRunners ?? 0,
      queuedJobs: counts.queuedJobs ?? current?.queuedJobs ?? 0,
      idleRunners: counts.idleRunners ?? current?.idleRunners ?? 0,
      ...(counts.lastCheckTime ?? current?.lastCheckTime
        ? { lastCheckTime: counts.lastCheckTime ?? current?.lastCheckTime }
        : {}),
      ...(group.metadata.generation !== undefined ? { observedGeneration: group.metadata.generation } : {}),
      conditions: computeConditions(observations, current?.conditions, group.metadata.generation, new Date(now)),
    };
    if (!statusNeedsWrite(current, next, this.#options.resyncIntervalMs)) return;
    try {
      // A JSON merge patch (the only patch the light client sends).
      await this.#options.clients.custom.patchNamespacedCustomObjectStatus({
        group: apiGroup,
        version: apiVersion,
        namespace: group.metadata.namespace,
        plural,
        name: group.metadata.name,
        body: { status: next },
      });
    } catch (error) {
      if (apiStatus(error) === 404) return; // deleted meanwhile
      throw new Error(
        `Cannot write the status of ${group.metadata.namespace}/${group.metadata.name}: ${apiMessage(error)}`,
        {
          cause: error,
        },
      );
    }
  }

  /** For logs on shutdown and tests. */
  describe(): string {
    return `${this.#reconcileCount} reconciles`;
  }
}

function forgeObservation(snapshot: DemandSnapshot | undefined): Observations["forge"] {
  if (!snapshot) return { ok: false, reason: "Pending", message: "Waiting for the first answer from the forge" };
  if (snapshot.error) return { ok: false, reason: snapshot.error.kind, message: snapshot.error.message };
  return { ok: true, message: `Gitea ${snapshot.version ?? "(unknown version)"} answered` };
}

function coverageOf(key: string, group: RunnerGroup): GroupCoverage | undefined {
  const parsed = parseRunnerGroupSpec(group.spec);
  if (!parsed.success) return undefined;
  const spec = parsed.data;
  try {
    return {
      key,
      forge: forgeKey(spec.giteaURL),
      scope: spec.scope,
      owner: spec.scope === "org" ? spec.org : spec.scope === "user" ? spec.user : spec.org ?? spec.user,
      repo: spec.repo,
      labels: effectiveRunnerLabels(spec.labels ?? [], spec.defaultLabels ?? true),
      paused: spec.maxActiveRunners === 0,
    };
  } catch (error) {
    logger("reconcile").debug("Group {group} takes no jobs: {error}", { group: key, error: describeError(error) });
    return undefined;
  }
}
