/**
 * The RunnerGroup reconcile, level-triggered: it reads the group, its runner Jobs and the latest demand from the
 * caches and brings the cluster in line, as a straight line of stages, each in a module named for it:
 *
 *   validate (pure) → credentials (Secrets) → demand (caches) → check (check_stage.ts) → plan (plan_stage.ts)
 *   → apply (side effects) → status
 *
 * This file wires them and keeps what a group's reconciles share across runs (idle times, the orphan sweep).
 */
import type { V1Job } from "@kubernetes/client-node";
import type { DemandPollers } from "../forge/demand_poller.ts";
import { ForgeConnector } from "../forge/connect.ts";
import { ForgeError } from "../forge/errors.ts";
import { GiteaClient } from "../forge/gitea_client.ts";
import type { EventRecorder, EventTarget } from "../kube/events.ts";
import { isNamespaceTerminating, type KubeClients } from "../kube/client.ts";
import { logger } from "../log.ts";
import type { OperatorMetrics } from "../metrics.ts";
import { Limiter } from "../runtime/concurrency.ts";
import type { ReconcileResult } from "../runtime/controller.ts";
import { applyPlan, recordJobMetrics } from "./apply.ts";
import type { GroupContext } from "./cleanup.ts";
import { type CredentialsOptions, resolveCredentials, type SecretReader, secretReaderOf } from "./credentials.ts";
import { GroupChecks } from "./check_stage.ts";
import { forgeTargetOf, gatherDemand } from "./demand.ts";
import { GroupMemories, newEvictions, validateOnce } from "./group_memory.ts";
import { JobOutcomes } from "./job_outcomes.ts";
import { CoverageCache } from "./ownership.ts";
import { planGroup } from "./plan_stage.ts";
import type { RetryPolicy } from "./planner.ts";
import { apiGroup, apiVersion, isPaused, kind, type RunnerGroup } from "./schema.ts";
import { forgeObservation, type Observations, reportReconciled, type StatusCounts, writeStatus } from "./status.ts";
import { addCleanupFinalizer, hasCleanupFinalizer } from "./teardown.ts";
import { GroupDeletions } from "./deletion_stage.ts";
import { effectiveWarmPool } from "./warm_schedule.ts";

export { forgeTargetOf } from "./demand.ts";

/** Read access to the informer caches. */
export interface ClusterCache {
  group(namespace: string, name: string): RunnerGroup | undefined;
  groups(): RunnerGroup[];
  runnerJobs(): V1Job[];
  /** Shows a runner Job just created in the cache before its watch event (see informer.ts `assume`). */
  assumeRunnerJob?(job: V1Job): void;
  /** Shows a group as this process just wrote it (its status) before the watch event (informer.ts `assumeWritten`). */
  assumeGroup?(group: RunnerGroup): void;
  /** Reads a Secret from a cache; without one, Secrets are read from the API server. */
  secret?: SecretReader;
}

export interface ReconcilerOptions {
  clients: KubeClients;
  cache: ClusterCache;
  pollers: DemandPollers;
  events: EventRecorder;
  runnerImage: string;
  retry: RetryPolicy;
  resyncIntervalMs: number;
  /** Runner Job creates in flight at once, across all reconciles. Default 8. */
  createConcurrency?: number;
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
  /** How long a deleted group waits for busy runners and an unreachable forge before it is released. Default 10 min. */
  deletionTimeoutMs?: number;
  /** Told about every forge request made by the reconcile (registration tokens, runners API). */
  observeForge?: (endpoint: string, code: string, seconds: number) => void;
  now?: () => number;
}

export const groupKey = (namespace: string, name: string): string => `${namespace}/${name}`;

export class RunnerGroupReconciler {
  readonly #options: ReconcilerOptions;
  readonly #log = logger("reconcile");
  readonly #coverage = new CoverageCache(groupKey);
  /** Per group: what its reconciles share (validated spec, idle times, orphan sweep, warm pool, evictions). */
  readonly #memories = new GroupMemories();
  readonly #readSecret: SecretReader;
  /** The check stage: template dry runs and registration token checks (check_stage.ts). */
  readonly #checks: GroupChecks;
  /** Per group: what its runners ran (metrics) and how they ended (status.recentRunners). */
  readonly #jobOutcomes: JobOutcomes;
  /** Runner Job creates in flight, shared by the workers' reconciles. */
  readonly #createSlots: Limiter;
  /**
   * Clients for the groups' forges with their API tokens, counted in the forge request metrics; forges are detected
   * through the pollers' detector, so each is asked once, not per group or reconcile.
   */
  readonly #forges: ForgeConnector;
  /** Deleted groups' teardowns, and the groups released already (deletion_stage.ts). */
  readonly #deletions: GroupDeletions;
  #reconcileCount = 0;

  constructor(options: ReconcilerOptions) {
    this.#options = options;
    this.#createSlots = new Limiter(options.createConcurrency ?? 8);
    this.#forges = new ForgeConnector(
      { timeoutMs: options.forgeTimeoutMs, observe: options.observeForge },
      options.pollers.detector,
    );
    this.#readSecret = options.cache.secret ?? secretReaderOf(options.clients.core);
    this.#deletions = new GroupDeletions({
      clients: options.clients,
      cache: options.cache,
      events: options.events,
      metrics: options.metrics,
      readSecret: this.#readSecret,
      connect: (spec, token) => this.#forges.connect(spec.giteaURL, token),
      timeoutMs: options.deletionTimeoutMs ?? 10 * 60_000,
    });
    this.#checks = new GroupChecks(options.clients.batch, this.#credentialsOptions(), options.events);
    this.#jobOutcomes = new JobOutcomes({
      workflowLabel: options.metrics?.jobWorkflowLabel ?? false,
      settleMs: options.settleMs ?? 3000,
    });
  }

  readonly reconcile = async (key: string): Promise<ReconcileResult> => {
    try {
      return await this.#reconcileGroup(key);
    } catch (error) {
      if (!isNamespaceTerminating(error)) throw error;
      // Nothing can be created in the namespace any more, and its deletion reaches the group (deletionTimestamp),
      // which wakes it for its teardown: no retry, as Kubernetes' own controllers do. Each runner Job the deletion
      // removes wakes the group meanwhile, so this is a debug line, not one per Job at info.
      this.#log.debug("Namespace of {group} is being deleted: no runner Job is created there; its teardown follows", {
        group: key,
      });
      return {};
    }
  };

  readonly #reconcileGroup = async (key: string): Promise<ReconcileResult> => {
    const [namespace, name] = key.split("/");
    const group = this.#options.cache.group(namespace, name);
    if (!group || (group.metadata.deletionTimestamp && !hasCleanupFinalizer(group))) {
      // Gone, or deleted with nothing left for this operator to do: the garbage collector removes the rest.
      this.#forget(key, namespace, name);
      this.#deletions.forget(key);
      return {};
    }
    // Released already; the cache still shows the finalizer until the release's watch event arrives.
    if (this.#deletions.wasReleased(key, group)) return {};
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
    if (group.metadata.deletionTimestamp) return await this.#tearDown(key, group, target, log, now);
    const memory = this.#memories.of(key);
    await addCleanupFinalizer(this.#options.clients.custom, group);
    const status = async (observations: Observations, counts: StatusCounts = {}): Promise<void> => {
      const written = await writeStatus(
        this.#options.clients.custom,
        group,
        observations,
        counts,
        now,
        this.#options.resyncIntervalMs,
      );
      if (written) this.#options.cache.assumeGroup?.(written);
    };

    // 1. validate
    const valid = validateOnce(memory, group);
    if (!valid.ok) {
      this.#options.pollers.unsubscribe(key);
      void this.#options.events.record(target, "Warning", valid.reason, valid.message);
      await status({ spec: valid });
      return {};
    }
    const { spec, labels } = valid;

    // 2. credentials
    let credentials;
    try {
      credentials = await resolveCredentials(
        this.#credentialsOptions(),
        group,
        spec,
        target,
      );
    } catch (error) {
      if (!(error instanceof ForgeError)) throw error;
      // The forge refused or is down: the same condition and backoff as a failed poll.
      void this.#options.events.record(target, "Warning", `Forge${error.kind}`, error.message);
      await status({
        spec: { ok: true },
        credentials: { ok: true },
        forge: { ok: false, reason: error.kind, message: error.message },
      });
      throw new Error(`Cannot obtain a runner registration token: ${error.message}`, { cause: error });
    }
    if (!credentials.ok) {
      this.#options.pollers.unsubscribe(key);
      void this.#options.events.record(target, "Warning", credentials.reason, credentials.message);
      await status({ spec: { ok: true }, credentials });
      // Without a Secret cache, look again after the resync interval; with one, its change wakes the group.
      return this.#options.cache.secret ? {} : { requeueAfterMs: this.#options.resyncIntervalMs };
    }

    memory.apiToken = credentials.apiToken;

    // 3. demand
    const allRunnerJobs = this.#options.cache.runnerJobs();
    const demand = gatherDemand({
      groupKey: key,
      namespace,
      uid: group.metadata.uid,
      spec,
      labels,
      apiToken: credentials.apiToken,
      pollers: this.#options.pollers,
      runnerJobs: allRunnerJobs,
      now,
    });

    const { snapshot, usable } = demand;
    // The forge's kind and version come with the poller's answers (detected once per forge).
    const forgeClient = snapshot?.forge
      ? this.#forges.clientFor(snapshot.forge, spec.giteaURL, credentials.apiToken)
      : undefined;
    const forgejo = snapshot?.forge?.kind === "forgejo";

    // 4. check: the API server's verdict on the runner Jobs this spec builds, the registration token
    const checked = await this.#checks.check({
      key,
      group,
      spec,
      labels,
      credentials,
      demand,
      runnerKind: snapshot?.forge?.kind,
      ownRegistration: forgeClient?.features.runnerRegistration === true,
      runnerImage: this.#options.runnerImage,
      target,
      now,
    });
    if (!checked.ok) {
      await status({ spec: checked, credentials: { ok: true }, forge: forgeObservation(snapshot) });
      // A spec change (a new generation) wakes the group; nothing else can make the template valid.
      return {};
    }

    // 5. plan
    const warmPool = effectiveWarmPool(spec, now);
    const idleGraceMs = this.#options.idleGraceMs ?? 120_000;
    const plan = planGroup({
      groupKey: key,
      spec,
      labels,
      memory,
      demand,
      warmPool,
      coverages: this.#coverage.of(this.#options.cache.groups()),
      forgejo,
      jobHandles: forgeClient?.features.jobHandles === true,
      idleGraceMs,
      retry: this.#options.retry,
      settleMs: this.#options.settleMs ?? 3000,
      now,
    });
    if (plan.answerAfter !== undefined) this.#options.pollers.answerAfter(demand.targetKey, plan.answerAfter);

    // 6. apply
    const context: GroupContext = {
      key,
      namespace,
      name,
      uid: group.metadata.uid,
      spec,
      labels,
      registrationToken: credentials.registrationSecret,
    };
    const { created, removed, removedNames, sweepWake } = await applyPlan({
      options: {
        batch: this.#options.clients.batch,
        core: this.#options.clients.core,
        events: this.#options.events,
        metrics: this.#options.metrics,
        runnerImage: this.#options.runnerImage,
        createSlots: this.#createSlots,
        idleGraceMs,
        assume: (job) => this.#options.cache.assumeRunnerJob?.(job),
      },
      plan,
      context,
      warmPoolSize: warmPool.size,
      forge: demand.forge,
      ...(forgeClient ? { forgeClient } : {}),
      endpoint: forgeTargetOf(spec, credentials.apiToken).endpoint,
      namesInUse: demand.namesInUse,
      allRunnerJobs,
      idleSince: memory.idleSince,
      orphans: memory.orphans,
      // Each eviction is reported once per process.
      evictions: newEvictions(memory, demand.evictions),
      target,
      log,
      now,
    });

    // What the group's runners ran and how they ended: metrics now, history in status.
    const outcomes = await this.#jobOutcomes.observe({
      key,
      group,
      spec,
      demand,
      owned: plan.owned,
      runnerJobs: allRunnerJobs,
      removed: removedNames,
      ...(forgeClient instanceof GiteaClient ? { client: forgeClient } : {}),
      log,
      now,
    });
    recordJobMetrics(this.#options.metrics, { namespace, name }, outcomes.events, outcomes.workflowOf);

    // 7. status
    await reportReconciled({
      write: status,
      events: this.#options.events,
      metrics: this.#options.metrics,
      target,
      log,
      group: { namespace, name },
      snapshot,
      usable,
      paused: isPaused(spec),
      plan,
      applied: { created, removed },
      ...(checked.tokenCheck.state === "refused" ? { tokenRefused: checked.tokenCheck.message } : {}),
      recentRunners: outcomes.recentRunners,
      warmPool,
      runnerJobs: demand.records.length,
    });
    // A warm pool window that opens or closes is a change no informer or poll reports: wake for it.
    const wakeAt = [plan.wakeAt, sweepWake, warmPool.nextChangeAt].filter((at): at is number => at !== undefined);
    // At least half a second: a wake time that is already past must not spin the worker.
    return wakeAt.length > 0 ? { requeueAfterMs: Math.max(500, Math.min(...wakeAt) - now) } : {};
  };

  #credentialsOptions(): CredentialsOptions {
    return {
      core: this.#options.clients.core,
      readSecret: this.#readSecret,
      events: this.#options.events,
      forgeClient: (spec, token) => this.#forges.connect(spec.giteaURL, token),
    };
  }

  /** A deleted group: no new runners; its runners and registrations are removed before it is released. */
  async #tearDown(
    key: string,
    group: RunnerGroup,
    target: EventTarget,
    log: ReturnType<typeof logger>,
    now: number,
  ): Promise<ReconcileResult> {
    this.#options.pollers.unsubscribe(key);
    const knownApiToken = this.#memories.peek(key)?.apiToken;
    const result = await this.#deletions.tearDown({ key, group, knownApiToken, target, log, now });
    if (!result.released) return { requeueAfterMs: result.requeueAfterMs };
    this.#forget(key, group.metadata.namespace, group.metadata.name);
    return {};
  }

  /** Drops what the reconciler keeps of a group that is gone. */
  #forget(key: string, namespace: string, name: string): void {
    this.#memories.forget(key);
    this.#checks.forget(key);
    this.#options.pollers.unsubscribe(key);
    this.#coverage.forget(key);
    this.#jobOutcomes.forget(key);
    this.#options.metrics?.forgetGroup(namespace, name);
  }

  /** For logs on shutdown and tests. */
  describe(): string {
    return `${this.#reconcileCount} reconciles`;
  }
}
