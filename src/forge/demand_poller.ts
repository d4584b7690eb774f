/**
 * Demand pollers: one per forge target (Gitea instance, jobs endpoint and token), shared by every group that uses
 * that target, so a target is asked once per interval however many groups watch it. A poller tells its groups only
 * when the answer changed. A failing target is asked again on a capped backoff (see `failure_backoff.ts`), so that
 * demand is current soon after the forge recovers; the error stays in the snapshot until then.
 */
import { createHash } from "node:crypto";
import { describeError, logger } from "../log.ts";
import { connectForge } from "./connect.ts";
import { ForgeError } from "./errors.ts";
import { defaultFailureBackoff, type FailureBackoffOptions, failureDelay } from "./failure_backoff.ts";
import { type ForgeClient, ForgeDetector, type ForgeVersion, parseForgeVersion } from "./forge_client.ts";
import { type JobsEndpoint, jobsPath, type QueuedJob, type RunningJob } from "./gitea_client.ts";

export interface ForgeTarget {
  baseUrl: string;
  endpoint: JobsEndpoint;
  token: string;
  /** For user scope: the login the token must belong to. */
  expectedUser?: string;
  /**
   * The runner label names the subscribing group serves. Not part of the target's key: a poller lists the jobs of
   * the union of its groups' labels where the forge needs labels to list anything (Forgejo < 14).
   */
  labels?: readonly string[];
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
  /** The forge's kind and version, once detected. */
  forge?: ForgeVersion;
  /** Ids of the jobs being run, from the last successful answer (Forgejo does not name their runners). */
  runningJobIds?: ReadonlySet<number>;
  /** The error of the last attempt, if it failed. */
  error?: ForgeError;
}

/** Time as the pollers see it; tests pass a fake one. */
export interface PollerClock {
  now(): number;
  setTimeout(callback: () => void, delayMs: number): unknown;
  clearTimeout(id: unknown): void;
}

const realClock: PollerClock = {
  now: () => Date.now(),
  setTimeout: (callback, delayMs) => setTimeout(callback, delayMs),
  clearTimeout: (id) => clearTimeout(id as ReturnType<typeof setTimeout> | undefined),
};

export interface DemandPollersOptions {
  intervalMs: number;
  timeoutMs: number;
  /** When a failing target is asked again; defaults in `defaultFailureBackoff`. */
  failureBackoff?: Partial<FailureBackoffOptions>;
  /** Called with the keys of the groups whose demand changed. */
  onChange: (groupKeys: string[]) => void;
  /**
   * Makes the client, for tests with a fetch of their own; the forge is then the client's, its version read with
   * `version()` when the client has one (as GiteaClient). Without it the forge is detected (see ForgeDetector).
   */
  client?: (target: ForgeTarget, timeoutMs: number) => ForgeClient & { version?: () => Promise<string> };
  /** Remembers detected forge versions; shared with the reconciler so a forge is asked once. */
  detector?: ForgeDetector;
  /** Told about every forge request (see `GiteaClientOptions.observe`). */
  observe?: (endpoint: string, code: string, seconds: number) => void;
  /** For tests: the clock and the source of jitter. */
  clock?: PollerClock;
  random?: () => number;
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
  const running = [...snapshot.runningJobIds ?? []].sort((x, y) => x - y).join(",");
  return `${jobs}|${busy}|${running}|${snapshot.error?.kind ?? ""}|${snapshot.error?.message ?? ""}`;
}

class Poller {
  readonly subscribers = new Set<string>();
  /** Each subscriber's runner label names (see ForgeTarget.labels). */
  readonly labels = new Map<string, readonly string[]>();
  snapshot?: DemandSnapshot;
  #timer?: unknown;
  #failures = 0;
  #stopped = false;
  #running?: Promise<void>;
  /** A poke arrived while a poll was running: poll again right after it (many pokes, one more poll). */
  #pokedWhileRunning = false;
  #verified = false;
  /** When the next poll is due (ms since epoch). */
  #scheduledAt = Infinity;
  /** A subscriber waits for an answer fetched at or after this time (see answerAfter). */
  #wantedAt?: number;
  #client?: ForgeClient;
  readonly #clock: PollerClock;
  readonly #backoff: FailureBackoffOptions;
  readonly #log = logger("forge");

  constructor(
    readonly key: string,
    readonly target: ForgeTarget,
    readonly options: DemandPollersOptions,
    readonly detector: ForgeDetector,
  ) {
    this.#clock = options.clock ?? realClock;
    this.#backoff = { ...defaultFailureBackoff, ...options.failureBackoff };
  }

  /** Detects the forge (once per forge, see ForgeDetector) and makes the client for its kind and version. */
  async #connect(): Promise<{ client: ForgeClient; forge: ForgeVersion }> {
    const { target, options } = this;
    const given = options.client?.(target, options.timeoutMs);
    if (given) {
      const version = await given.version?.();
      return { client: given, forge: version ? parseForgeVersion(given.forge.kind, version) : given.forge };
    }
    const client = await connectForge(
      { baseUrl: target.baseUrl, token: target.token, timeoutMs: options.timeoutMs, observe: options.observe },
      this.detector,
    );
    return { client, forge: client.forge };
  }

  start(): void {
    this.#schedule(0);
  }

  /**
   * Polls now. During a poll, the answer being fetched may predate what the poke announces (a webhook for a job
   * queued after the request left), so one more poll follows right after it. While the target fails, its next attempt
   * (at most the backoff cap away) stands: a burst of webhooks must not turn into a burst of requests to a failing
   * endpoint.
   */
  poke(): void {
    if (this.#running) this.#pokedWhileRunning = true;
    else if (!this.snapshot?.error) this.#schedule(0);
  }

  /**
   * Asks for an answer fetched at or after `at` (ms since epoch): polls then, unless a poll comes sooner, and tells
   * the subscribers about that answer even when it did not change.
   */
  answerAfter(at: number): void {
    if (this.snapshot && this.snapshot.fetchedAt >= at) return;
    this.#wantedAt = Math.max(this.#wantedAt ?? at, at);
    // While the target fails, the backoff decides (as for pokes); the first answer after it serves the request.
    if (!this.#running && !this.snapshot?.error && this.#scheduledAt > at) {
      this.#schedule(Math.max(0, at - this.#clock.now()));
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#clock.clearTimeout(this.#timer);
    await this.#running;
  }

  #schedule(delayMs: number): void {
    this.#clock.clearTimeout(this.#timer);
    if (this.#stopped) return;
    this.#scheduledAt = this.#clock.now() + delayMs;
    this.#timer = this.#clock.setTimeout(() => this.#run(), delayMs);
  }

  #run(): void {
    this.#pokedWhileRunning = false;
    this.#running = (async () => {
      let delay = this.options.intervalMs;
      try {
        delay = await this.#poll();
      } catch (error) {
        this.#log.error("Polling {target} failed unexpectedly: {error}", {
          target: this.key,
          error: describeError(error),
        });
      } finally {
        this.#running = undefined;
      }
      // A failed poll keeps its backoff: the poke's poll comes with the next attempt, at most the backoff cap later.
      if (this.#pokedWhileRunning && !this.snapshot?.error) delay = 0;
      this.#pokedWhileRunning = false;
      this.#schedule(delay);
    })();
  }

  /** Asks the forge once, tells the subscribers when the answer changed, and returns the delay until the next poll. */
  async #poll(): Promise<number> {
    const before = this.snapshot;
    const now = this.#clock.now();
    let next: DemandSnapshot;
    try {
      let version = before?.version;
      let forge = before?.forge;
      if (!this.#verified || !this.#client) {
        ({ client: this.#client, forge } = await this.#connect());
        version = forge.version;
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
      const labels = [...new Set([...this.labels.values()].flat())];
      const open = await this.#client.listOpenJobs(this.target.endpoint, { labels });
      const busyRunners = new Set(open.running.map((job) => job.runnerName).filter(Boolean));
      const runningJobIds = new Set(open.running.map((job) => job.id));
      next = {
        jobs: open.queued,
        busyRunners,
        runningJobIds,
        running: open.running,
        fetchedAt: this.#clock.now(),
        checkedAt: now,
        version,
        forge,
      };
      if (before?.error) this.#log.info("Forge {target} is reachable again", { target: this.key });
      this.#failures = 0;
    } catch (error) {
      const forgeError = error instanceof ForgeError
        ? error
        : new ForgeError("InvalidResponse", describeError(error), { cause: error });
      // A server error or a timeout says nothing about the version or the token's user; anything else (a 401, a
      // login page in place of JSON) may mean another server or token, so those are checked (and the forge
      // detected) again first.
      if (!forgeError.transient) {
        this.#verified = false;
        this.detector.forget(this.target.baseUrl);
      }
      this.#failures++;
      next = {
        jobs: before?.jobs ?? [],
        busyRunners: before?.busyRunners ?? new Set(),
        running: before?.running ?? [],
        fetchedAt: before?.fetchedAt ?? 0,
        checkedAt: now,
        version: before?.version,
        ...(before?.forge ? { forge: before.forge } : {}),
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
    if (next.error) {
      return failureDelay(this.#failures, next.error.retryAfterMs, this.#backoff, this.options.random);
    }
    const interval = this.options.intervalMs;
    return this.#wantedAt === undefined
      ? interval
      : Math.min(interval, Math.max(0, this.#wantedAt - this.#clock.now()));
  }
}

export class DemandPollers {
  readonly #pollers = new Map<string, Poller>();
  readonly #groupTarget = new Map<string, string>();
  readonly detector: ForgeDetector;

  constructor(readonly options: DemandPollersOptions) {
    this.detector = options.detector ?? new ForgeDetector();
  }

  /** Makes a group use a target, starting its poller if it is new; returns the target's key. */
  subscribe(groupKey: string, target: ForgeTarget): string {
    const key = targetKey(target);
    const previous = this.#groupTarget.get(groupKey);
    if (previous !== undefined && previous !== key) this.unsubscribe(groupKey);
    let poller = this.#pollers.get(key);
    if (!poller) {
      poller = new Poller(key, target, this.options, this.detector);
      this.#pollers.set(key, poller);
      poller.start();
    }
    poller.subscribers.add(groupKey);
    poller.labels.set(groupKey, target.labels ?? []);
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
    poller.labels.delete(groupKey);
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
