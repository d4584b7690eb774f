/**
 * Wires the operator together: informer caches over RunnerGroups and runner Jobs, the shared demand pollers, the
 * RunnerGroup controller with its worker pool, the periodic resync and the HTTP server. `main.ts` builds one and
 * stops it on SIGTERM.
 */
import { createHash } from "node:crypto";
import type { KubernetesListObject, V1Job } from "@kubernetes/client-node";
import type { Config } from "./config.ts";
import { DemandPollers, targetCovers } from "./forge/demand_poller.ts";
import { createApp } from "./http/app.ts";
import { WebhookSecret } from "./http/webhook_secret.ts";
import type { KubeClients } from "./kube/client.ts";
import { EventRecorder } from "./kube/events.ts";
import { decodeJobWatchEvent } from "./kube/job_protobuf.ts";
import { LeaderElector } from "./kube/leader_election.ts";
import { SupervisedInformer } from "./kube/informer.ts";
import { SecretCache, secretKeys } from "./kube/secret_cache.ts";
import { logger } from "./log.ts";
import { OperatorMetrics } from "./metrics.ts";
import { Controller } from "./runtime/controller.ts";
import { secretsOf } from "./runner_group/credentials.ts";
import { groupKey, RunnerGroupReconciler } from "./runner_group/reconciler.ts";
import { labelKeys, pruneRunnerJob, runnerJobEviction, runnerJobSelector } from "./runner_group/runner_job.ts";
import { apiGroup, apiVersion, plural, type RunnerGroup } from "./runner_group/schema.ts";

export const operatorName = "gitea-runner-operator";

/** The namespace of the Lease when none is configured: the pod's own namespace in a cluster, else "default". */
function defaultLeaseNamespace(): string {
  try {
    return Deno.readTextFileSync("/var/run/secrets/kubernetes.io/serviceaccount/namespace").trim() || "default";
  } catch {
    return "default";
  }
}

/**
 * The Lease's name: `--leader-election-id` when given; else the operator's name, suffixed with a hash of the shard
 * (watched namespaces and group selector) when the installation is split, so each shard elects its own leader.
 */
export function leaseName(config: Pick<Config, "leaderElectionId" | "namespaces" | "groupSelector">): string {
  if (config.leaderElectionId) return config.leaderElectionId;
  if (config.namespaces.length === 0 && config.groupSelector === "") return operatorName;
  const shard = `${[...config.namespaces].sort().join(",")}|${config.groupSelector}`;
  return `${operatorName}-${createHash("sha256").update(shard).digest("hex").slice(0, 10)}`;
}

/**
 * Records the spec generation of a group that changed in `informers`' caches; true when its spec changed, or it
 * appeared or went away (status updates keep the generation).
 */
function trackGeneration(
  group: RunnerGroup,
  informers: readonly SupervisedInformer<RunnerGroup>[],
  generations: Map<string, number | undefined>,
): boolean {
  const { namespace, name, generation } = group.metadata;
  const key = groupKey(namespace, name);
  const present = informers.some((informer) => informer.cache.get(name, namespace) !== undefined);
  const specChanged = !present || generations.get(key) !== generation;
  if (present) generations.set(key, generation);
  else generations.delete(key);
  return specChanged;
}

export class Manager {
  readonly #log = logger("manager");
  readonly groupInformers: SupervisedInformer<RunnerGroup>[] = [];
  /**
   * With --group-selector: every RunnerGroup of the watched namespaces, selected or not, for the one-owner rule only,
   * so that a shard never runs a job that a group of another shard owns.
   */
  readonly coverageInformers: SupervisedInformer<RunnerGroup>[] = [];
  readonly jobInformers: SupervisedInformer<V1Job>[] = [];
  readonly pollers: DemandPollers;
  /** The token Secrets that selected groups reference, each watched by name. */
  readonly secrets: SecretCache;
  readonly events: EventRecorder;
  readonly controller: Controller;
  readonly metrics: OperatorMetrics;
  /** Uids of failed runner Jobs already counted. */
  readonly #countedFailures = new Set<string>();
  #resyncTimer?: ReturnType<typeof setInterval>;
  readonly #webhookSecret: WebhookSecret;
  #server?: Deno.HttpServer;
  #started = false;
  #synced = false;
  #stoppingNow = false;
  #elector?: LeaderElector;
  readonly #stopping = Promise.withResolvers<void>();
  /** The last seen spec generation of each group, to tell spec changes from status updates. */
  readonly #generations = new Map<string, number | undefined>();
  /** The same for groups outside the selector (see coverageInformers). */
  readonly #coverageGenerations = new Map<string, number | undefined>();

  constructor(readonly config: Config, readonly clients: KubeClients) {
    this.metrics = new OperatorMetrics({ jobWorkflowLabel: config.jobMetricsWorkflowLabel });
    this.#webhookSecret = new WebhookSecret(config.webhookSecret, clients.core);
    const namespaces = config.namespaces.length > 0 ? config.namespaces : [undefined];
    const observeForge = (endpoint: string, code: string, seconds: number): void => {
      this.metrics.forgeRequests.inc({ endpoint, code });
      this.metrics.forgeRequestDuration.observe({ endpoint }, seconds);
    };
    this.pollers = new DemandPollers({
      intervalMs: config.pollInterval,
      timeoutMs: config.forgeTimeout,
      onChange: (keys) => keys.forEach((key) => this.controller.queue.add(key)),
      observe: observeForge,
    });
    this.secrets = new SecretCache({
      clients,
      onChange: (namespace, name) => this.#onSecretChange(namespace, name),
      onRestart: () => this.metrics.informerRestarts.inc({ informer: "secrets" }),
    });
    for (const namespace of namespaces) {
      const where = namespace === undefined ? "" : `/namespaces/${namespace}`;
      this.groupInformers.push(
        new SupervisedInformer<RunnerGroup>({
          name: `runnergroups${namespace ? `/${namespace}` : ""}`,
          kubeConfig: clients.kubeConfig,
          path: `/apis/${apiGroup}/${apiVersion}${where}/${plural}`,
          ...(config.groupSelector ? { labelSelector: config.groupSelector } : {}),
          list: () => this.#listGroups(namespace, config.groupSelector),
          onChange: (group) => this.#onGroupChange(group),
          onRestart: () => this.metrics.informerRestarts.inc({ informer: "runnergroups" }),
        }),
      );
      if (config.groupSelector) {
        this.coverageInformers.push(
          new SupervisedInformer<RunnerGroup>({
            name: `runnergroups-all${namespace ? `/${namespace}` : ""}`,
            kubeConfig: clients.kubeConfig,
            path: `/apis/${apiGroup}/${apiVersion}${where}/${plural}`,
            list: () => this.#listGroups(namespace, ""),
            onChange: (group) => this.#onCoverageChange(group),
            onRestart: () => this.metrics.informerRestarts.inc({ informer: "runnergroups" }),
          }),
        );
      }
      this.jobInformers.push(
        new SupervisedInformer<V1Job>({
          name: `jobs${namespace ? `/${namespace}` : ""}`,
          kubeConfig: clients.kubeConfig,
          path: `/apis/batch/v1${where}/jobs`,
          labelSelector: runnerJobSelector,
          transform: pruneRunnerJob,
          // Job events in protobuf: the API server shares that encoding with kube-controller-manager's watches.
          decodeProtobuf: decodeJobWatchEvent,
          list: () =>
            namespace === undefined
              ? clients.batch.listJobForAllNamespaces({ labelSelector: runnerJobSelector })
              : clients.batch.listNamespacedJob({ namespace, labelSelector: runnerJobSelector }),
          onChange: (job) => this.#onJobChange(job),
          onRestart: () => this.metrics.informerRestarts.inc({ informer: "jobs" }),
        }),
      );
    }
    this.events = new EventRecorder(clients.core, operatorName, Deno.hostname(), {
      onDropped: (reason, occurrences) => this.metrics.eventsDropped.inc({ reason }, occurrences),
    });
    const reconciler = new RunnerGroupReconciler({
      clients,
      cache: {
        group: (namespace, name) => {
          for (const informer of this.groupInformers) {
            const group = informer.cache.get(name, namespace);
            if (group) return group;
          }
          return undefined;
        },
        groups: () =>
          (this.coverageInformers.length > 0 ? this.coverageInformers : this.groupInformers).flatMap((informer) =>
            informer.cache.list()
          ),
        runnerJobs: () => this.jobInformers.flatMap((informer) => informer.cache.list()),
        // One Job informer per watched namespace (in config order), or one for all of them.
        assumeRunnerJob: (job) => {
          const index = config.namespaces.length > 0 ? config.namespaces.indexOf(job.metadata?.namespace ?? "") : 0;
          this.jobInformers[index]?.assume(job);
        },
        // Only the informer that caches the group takes it.
        assumeGroup: (group) => this.groupInformers.forEach((informer) => informer.assumeWritten(group)),
        secret: this.secrets.read,
      },
      pollers: this.pollers,
      events: this.events,
      runnerImage: config.runnerImage,
      retry: { limit: config.runnerRetryLimit, baseDelayMs: 10_000, maxDelayMs: 5 * 60_000 },
      resyncIntervalMs: config.resyncInterval,
      createConcurrency: config.createConcurrency,
      forgeTimeoutMs: config.forgeTimeout,
      metrics: this.metrics,
      idleGraceMs: config.idleRunnerGrace,
      deletionTimeoutMs: config.deletionTimeout,
      observeForge: observeForge,
    });
    this.controller = new Controller("runnergroup", async (key) => {
      const end = this.metrics.reconcileDuration.startTimer();
      try {
        return await reconciler.reconcile(key);
      } catch (error) {
        this.metrics.reconcileErrors.inc();
        throw error;
      } finally {
        end();
      }
    });
  }

  /** Whether every informer has synced. */
  synced(): boolean {
    return this.#informers().every((informer) => informer.hasSynced());
  }

  /** Starts serving health, the informers, and once they synced, the workers and the resync timer. */
  async start(): Promise<void> {
    this.#server = Deno.serve(
      { port: this.config.healthPort, hostname: "0.0.0.0", onListen: () => {} },
      createApp({
        ready: () =>
          this.#synced && this.synced()
            ? { ready: true, reason: this.#started ? "ok" : "ok (standby)" }
            : { ready: false, reason: "informers not synced" },
      }, {
        metrics: async () => {
          this.metrics.workQueueDepth.set(this.controller.queue.length);
          return { text: await this.metrics.render(), contentType: this.metrics.contentType };
        },
      }, {
        secret: () => this.#webhookSecret.value,
        onJobEvent: ({ owner, repo }) => this.pollers.poke((target) => targetCovers(target, owner, repo)),
      }).fetch,
    );
    this.#log.info("Serving health on port {port}", { port: this.healthPort });
    for (const informer of this.#informers()) informer.start();
    const synced = Promise.all(this.#informers().map((informer) => informer.waitForSync()));
    // A stop before the caches synced ends the wait; reconciling must never start from a partial cache.
    if (await Promise.race([synced.then(() => true), this.#stopping.promise.then(() => false)]) === false) return;
    this.#synced = true;
    this.metrics.leader.set(0);
    if (!this.config.leaderElect) return await this.#startWorking();
    this.#elector = new LeaderElector({
      custom: this.clients.custom,
      namespace: this.config.leaderElectionNamespace || defaultLeaseNamespace(),
      name: leaseName(this.config),
      identity: `${Deno.hostname()}-${crypto.randomUUID().slice(0, 8)}`,
      leaseDurationMs: this.config.leaseDuration,
      onStartedLeading: () => void this.#startWorking(),
      onStoppedLeading: () => this.onFatal(new Error("Lost the leader Lease; stopping so that only the leader acts")),
    });
    this.#log.info("Waiting to become the leader");
    this.#elector.start();
  }

  /** Called when the process must stop (leadership lost); main.ts stops the manager and exits non-zero. */
  onFatal: (error: Error) => void = () => {};

  /** Workers, resync and webhooks: what only the leader (or the only instance) does. */
  async #startWorking(): Promise<void> {
    if (this.#started || this.#stoppingNow) return;
    this.controller.start(this.config.workers);
    this.metrics.leader.set(1);
    this.#started = true;
    this.#enqueueAll();
    await this.#webhookSecret.load();
    this.#resyncTimer = setInterval(() => {
      this.#enqueueAll();
      void this.#retainSecrets();
      void this.#webhookSecret.load();
    }, this.config.resyncInterval);
    this.#log.info("Started {workers} workers", { workers: this.config.workers });
  }

  /** The port the health server listens on (useful with port 0). */
  get healthPort(): number | undefined {
    const addr = this.#server?.addr;
    return addr && "port" in addr ? addr.port : undefined;
  }

  /** Stops polling, drains the workers, stops the informers and the server. */
  async stop(): Promise<void> {
    this.#stoppingNow = true;
    this.#stopping.resolve();
    clearInterval(this.#resyncTimer);
    await this.pollers.stop();
    await this.controller.stop();
    // Released after the workers drained, so that the next leader starts from a quiet cluster. The workers' last
    // events are written meanwhile (for 2 s at most).
    await Promise.all([this.events.stop(), this.#elector?.stop()]);
    await Promise.all(this.#informers().map((informer) => informer.stop()));
    await this.secrets.stop();
    await this.#server?.shutdown();
    this.#log.info("Stopped");
  }

  #informers(): SupervisedInformer<RunnerGroup | V1Job>[] {
    return [...this.groupInformers, ...this.coverageInformers, ...this.jobInformers] as SupervisedInformer<
      RunnerGroup | V1Job
    >[];
  }

  /** A group outside the selector that appears, changes its spec or goes away can change who owns a job. */
  #onCoverageChange(group: RunnerGroup): void {
    const specChanged = trackGeneration(group, this.coverageInformers, this.#coverageGenerations);
    if (this.#started && specChanged) this.#enqueueAll();
  }

  /** A watched Secret changed: the selected groups that read it are reconciled. */
  #onSecretChange(namespace: string, name: string): void {
    if (!this.#started) return;
    for (const informer of this.groupInformers) {
      for (const group of informer.cache.list()) {
        if (group.metadata.namespace !== namespace) continue;
        if (secretsOf(group).some((secret) => secret.name === name)) {
          this.controller.queue.add(groupKey(namespace, group.metadata.name));
        }
      }
    }
  }

  /** Stops watching Secrets that no selected group references any more. */
  async #retainSecrets(): Promise<void> {
    const groups = this.groupInformers.flatMap((informer) => informer.cache.list());
    await this.secrets.retain(secretKeys(groups.flatMap(secretsOf)));
  }

  #enqueueAll(): void {
    for (const informer of this.groupInformers) {
      for (const group of informer.cache.list()) {
        this.controller.queue.add(groupKey(group.metadata.namespace, group.metadata.name));
      }
    }
  }

  #onGroupChange(group: RunnerGroup): void {
    const key = groupKey(group.metadata.namespace, group.metadata.name);
    const specChanged = trackGeneration(group, this.groupInformers, this.#generations);
    if (!this.#started) return;
    // A group that appears, changes its spec or goes away can change which group runs a shared job; a status
    // update (our own writes come back as events) concerns only its group.
    if (specChanged) this.#enqueueAll();
    else this.controller.queue.add(key);
  }

  #onJobChange(job: V1Job): void {
    this.#countFailure(job);
    if (!this.#started) return;
    const namespace = job.metadata?.namespace;
    const owner = job.metadata?.ownerReferences?.find((reference) => reference.controller);
    if (namespace && owner) this.controller.queue.add(groupKey(namespace, owner.name));
    else if (namespace && job.metadata?.labels?.[labelKeys.groupName]) {
      this.controller.queue.add(groupKey(namespace, job.metadata.labels[labelKeys.groupName]));
    }
  }

  /** Counts each failed runner Job once; forgets it when it is deleted. */
  #countFailure(job: V1Job): void {
    const uid = job.metadata?.uid;
    const namespace = job.metadata?.namespace;
    if (!uid || !namespace) return;
    const inCache = this.jobInformers.some((informer) =>
      informer.cache.get(job.metadata!.name!, namespace)?.metadata?.uid === uid
    );
    if (!inCache) {
      this.#countedFailures.delete(uid);
      return;
    }
    const failed = (job.status?.conditions ?? []).some((c) => c.type === "Failed" && c.status === "True");
    // Evictions are counted apart (runner_evictions_total, by the reconcile's apply stage).
    if (!failed || runnerJobEviction(job) || this.#countedFailures.has(uid)) return;
    this.#countedFailures.add(uid);
    const group = job.metadata?.labels?.[labelKeys.groupName] ?? "";
    this.metrics.runnerJobsFailed.inc({ namespace, runnergroup: group });
  }

  async #listGroups(namespace: string | undefined, selector: string): Promise<KubernetesListObject<RunnerGroup>> {
    const labelSelector = selector || undefined;
    const list = namespace === undefined
      ? await this.clients.custom.listClusterCustomObject({
        group: apiGroup,
        version: apiVersion,
        plural,
        labelSelector,
      })
      : await this.clients.custom.listNamespacedCustomObject({
        group: apiGroup,
        version: apiVersion,
        namespace,
        plural,
        labelSelector,
      });
    return list as KubernetesListObject<RunnerGroup>;
  }
}
