/**
 * Demand pollers: one per forge target (Gitea instance, jobs endpoint and token), shared by every group that uses
 * that target, so a target is asked once per interval however many groups watch it. A poller tells its groups only
 * when the answer changed; transient errors back off (honouring `Retry-After`), other errors wait longer.
 */
import { createHash } from "node:crypto";
import { describeError, logger } from "../log.ts";
import { ForgeError } from "./errors.ts";
import { GiteaClient, type JobsEndpoint, jobsPath, type QueuedJob, type RunningJob } from "./gitea_client.ts";

export interface ForgeTarget {
  baseUrl: string;
  endpoint: JobsEndpoint;
  token: string;
  /** For user scope: the login the token must belong to. */
  expectedUser?: string;
}

export interface DemandSnapshot {
  /** The queued jobs of the last successful answer. */
  jobs: readonly QueuedJob[];
  /** Names of the runners running a job, from the last successful answer. */
  busyRunners: ReadonlySet<string>;
  /** The jobs in progress of the last successful answer, with their runners and start times. */
  running: readonly RunningJob[];
  /** When the last successful answer arrived (ms since epoch); 0 before the first. */
  fetchedAt: number;
  /** When the forge was last asked, successfully or not. */
  checkedAt: number;
  version?: string;
  /** The error of the last attempt, if it failed. */
  error?: ForgeError;
}

export interface DemandPollersOptions {
  intervalMs: number;
  timeoutMs: number;
  maxBackoffMs?: number;
  /** Called with the keys of the groups whose demand changed. */
  onChange: (groupKeys: string[]) => void;
  /** Makes the client; tests pass a fetch of their own. */
  client?: (target: ForgeTarget, timeoutMs: number) => GiteaClient;
  /** Told about every forge request (see `GiteaClientOptions.observe`). */
  observe?: (endpoint: string, code: string, seconds: number) => void;
}

/** The key of a target. The token takes part only as a hash, so keys are safe to log. */
export function targetKey(target: ForgeTarget): string {
  const token = createHash("sha256").update(target.token).digest("hex").slice(0, 12);
  return `${target.baseUrl.replace(/\/+$/, "")}${jobsPath(target.endpoint)}#${token}`;
}

/** Whether a target's jobs endpoint lists the jobs of a repository (for webhooks). Names ignore case, as in Gitea. */
export function targetCovers(target: ForgeTarget, owner: string, repo: string): boolean {
  const same = (a: string | undefined, b: string): boolean => a !== undefined && a.toLowerCase() === b.toLowerCase();
  const endpoint = target.endpoint;
  switch (endpoint.scope) {
    case "global":
      return true;
    case "org":
      return same(endpoint.org, owner);
    case "user":
      return same(target.expectedUser, owner);
    case "repo":
      return same(endpoint.owner, owner) && same(endpoint.repo, repo);
  }
}

function fingerprint(snapshot: DemandSnapshot): string {
  const jobs = snapshot.jobs.map((job) => `${job.id}:${job.runsOn.join(",")}`).join(";");
  const busy = [...snapshot.busyRunners].sort().join(",");
  return `${jobs}|${busy}|${snapshot.error?.kind ?? ""}|${snapshot.error?.message ?? ""}`;
}

class Poller {
  readonly subscribers = new Set<string>();
  snapshot?: DemandSnapshot;
  #timer?: ReturnType<typeof setTimeout>;
  #failures = 0;
  #stopped = false;
  #running?: Promise<void>;
  #verified = false;
  /** When the next poll is due (ms since epoch). */
  #scheduledAt = Infinity;
  /** A subscriber waits for an answer fetched at or after this time (see answerAfter). */
  #wantedAt?: number;
  readonly #client: GiteaClient;
  readonly #log = logger("forge");

  constructor(readonly key: string, readonly target: ForgeTarget, readonly options: DemandPollersOptions) {
    this.#client = options.client?.(target, options.timeoutMs) ??
      new GiteaClient({
        baseUrl: target.baseUrl,
        token: target.token,
        timeoutMs: options.timeoutMs,
        observe: options.observe,
      });
  }

  start(): void {
    this.#schedule(0);
  }

  /** Polls now, unless a poll is running. */
  poke(): void {
    if (!this.#running) this.#schedule(0);
  }

  /**
   * Asks for an answer fetched at or after `at` (ms since epoch): polls then, unless a poll comes sooner, and tells
   * the subscribers about that answer even when it did not change.
   */
  answerAfter(at: number): void {
    if (this.snapshot && this.snapshot.fetchedAt >= at) return;
    this.#wantedAt = Math.max(this.#wantedAt ?? at, at);
    if (!this.#running && this.#scheduledAt > at) this.#schedule(Math.max(0, at - Date.now()));
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#running;
  }

  #schedule(delayMs: number): void {
    clearTimeout(this.#timer);
    if (this.#stopped) return;
    this.#scheduledAt = Date.now() + delayMs;
    this.#timer = setTimeout(() => {
      this.#running = this.#poll().finally(() => (this.#running = undefined));
    }, delayMs);
  }

  async #poll(): Promise<void> {
    const before = this.snapshot;
    const now = Date.now();
    let next: DemandSnapshot;
    try {
      let version = before?.version;
      if (!this.#verified) {
        version = await this.#client.version();
        if (this.target.expectedUser !== undefined) {
          const user = await this.#client.currentUser();
          if (user.login.toLowerCase() !== this.target.expectedUser.toLowerCase()) {
            throw new ForgeError(
              "Forbidden",
              `The API token belongs to "${user.login}", not to user "${this.target.expectedUser}" of the group`,
            );
          }
        }
        this.#verified = true;
      }
      const open = await this.#client.listOpenJobs(this.target.endpoint);
      const busyRunners = new Set(open.running.map((job) => job.runnerName).filter(Boolean));
      next = { jobs: open.queued, busyRunners, running: open.running, fetchedAt: Date.now(), checkedAt: now, version };
      if (before?.error) this.#log.info("Forge {target} is reachable again", { target: this.key });
      this.#failures = 0;
    } catch (error) {
      const forgeError = error instanceof ForgeError
        ? error
        : new ForgeError("InvalidResponse", describeError(error), { cause: error });
      this.#verified = false;
      this.#failures++;
      next = {
        jobs: before?.jobs ?? [],
        busyRunners: before?.busyRunners ?? new Set(),
        running: before?.running ?? [],
        fetchedAt: before?.fetchedAt ?? 0,
        checkedAt: now,
        error: forgeError,
      };
      if (before?.error?.message !== forgeError.message) {
        this.#log.warn("Forge {target} failed: {error}", { target: this.key, error: forgeError.message });
      }
    }
    this.snapshot = next;
    const wanted = this.#wantedAt !== undefined && !next.error && next.fetchedAt >= this.#wantedAt;
    if (wanted) this.#wantedAt = undefined;
    if (before === undefined || wanted || fingerprint(before) !== fingerprint(next)) {
      this.options.onChange([...this.subscribers]);
    }
    let delay = this.#nextDelay(next.error);
    if (this.#wantedAt !== undefined && !next.error) delay = Math.min(delay, Math.max(0, this.#wantedAt - Date.now()));
    this.#schedule(delay);
  }

  #nextDelay(error: ForgeError | undefined): number {
    const interval = this.options.intervalMs;
    if (!error) return interval;
    const max = this.options.maxBackoffMs ?? 60_000;
    const backoff = error.transient
      ? Math.min(max, interval * 2 ** Math.min(this.#failures - 1, 10))
      : Math.min(max, Math.max(interval * 6, 60_000));
    const delay = Math.max(backoff, Math.min(max, error.retryAfterMs ?? 0));
    return Math.round(delay * (0.9 + Math.random() * 0.2));
  }
}

export class DemandPollers {
  readonly #pollers = new Map<string, Poller>();
  readonly #groupTarget = new Map<string, string>();

  constructor(readonly options: DemandPollersOptions) {}

  /** Makes a group use a target, starting its poller if it is new; returns the target's key. */
  subscribe(groupKey: string, target: ForgeTarget): string {
    const key = targetKey(target);
    const previous = this.#groupTarget.get(groupKey);
    if (previous !== undefined && previous !== key) this.unsubscribe(groupKey);
    let poller = this.#pollers.get(key);
    if (!poller) {
      poller = new Poller(key, target, this.options);
      this.#pollers.set(key, poller);
      poller.start();
    }
    poller.subscribers.add(groupKey);
    this.#groupTarget.set(groupKey, key);
    return key;
  }

  /** Removes a group; a poller without groups stops. */
  unsubscribe(groupKey: string): void {
    const key = this.#groupTarget.get(groupKey);
    this.#groupTarget.delete(groupKey);
    if (key === undefined) return;
    const poller = this.#pollers.get(key);
    if (!poller) return;
    poller.subscribers.delete(groupKey);
    if (poller.subscribers.size === 0) {
      this.#pollers.delete(key);
      void poller.stop();
    }
  }

  snapshot(targetKey: string): DemandSnapshot | undefined {
    return this.#pollers.get(targetKey)?.snapshot;
  }

  /** Asks the target's poller for an answer fetched at or after `at`; its subscribers hear of it (see Poller). */
  answerAfter(targetKey: string, at: number): void {
    this.#pollers.get(targetKey)?.answerAfter(at);
  }

  /** Polls the targets matching `predicate` now (used by webhooks). */
  poke(predicate: (target: ForgeTarget) => boolean = () => true): void {
    for (const poller of this.#pollers.values()) if (predicate(poller.target)) poller.poke();
  }

  get size(): number {
    return this.#pollers.size;
  }

  async stop(): Promise<void> {
    await Promise.all([...this.#pollers.values()].map((poller) => poller.stop()));
    this.#pollers.clear();
    this.#groupTarget.clear();
  }
}
