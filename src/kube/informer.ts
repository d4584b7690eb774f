/**
 * A supervised informer around `@kubernetes/client-node`'s ListWatch, which stops on most errors, reports no sync
 * state, has no resync and turns exceptions in handlers into unhandled rejections. This wrapper restarts it with
 * backoff and jitter, tracks whether the first list arrived, re-establishes a watch that has been idle too long,
 * and keeps handlers to "compute a key, enqueue it".
 */
import { type KubernetesListObject, type KubernetesObject, ListWatch, type ObjectCache } from "@kubernetes/client-node";
import type { KubeConfig } from "@kubernetes/client-node";
import { describeError, logger } from "../log.ts";
import { StreamingWatch } from "./watch.ts";

export interface InformerOptions<T extends KubernetesObject> {
  /** Names the informer in logs and metrics. */
  name: string;
  kubeConfig: KubeConfig;
  /** API path to watch, e.g. `/apis/batch/v1/jobs`. */
  path: string;
  list: () => Promise<KubernetesListObject<T>>;
  labelSelector?: string;
  /** A field selector, e.g. `metadata.name=x` to watch one object. */
  fieldSelector?: string;
  /** Called with each added, updated or deleted object. Must not throw; errors are logged. */
  onChange: (object: T) => void;
  /** Re-establish a watch that delivered nothing for this long (a silently dead connection). */
  idleTimeoutMs?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Called on each restart after an error or an idle watch. */
  onRestart?: () => void;
}

export class SupervisedInformer<T extends KubernetesObject> {
  readonly #options: InformerOptions<T>;
  readonly #listWatch: ListWatch<T>;
  readonly #log = logger("informer");
  #synced = false;
  #stopped = true;
  #failures = 0;
  #lastActivity = Date.now();
  #restartTimer?: ReturnType<typeof setTimeout>;
  #watchdog?: ReturnType<typeof setInterval>;
  #syncWaiters: (() => void)[] = [];
  #starting = false;
  /** How often the informer was restarted after an error. */
  restarts = 0;

  constructor(options: InformerOptions<T>) {
    this.#options = options;
    this.#listWatch = new ListWatch<T>(
      options.path,
      // ListWatch only calls watch(); StreamingWatch has the same contract.
      new StreamingWatch(options.kubeConfig) as unknown as ConstructorParameters<typeof ListWatch<T>>[1],
      options.list,
      false,
      options.labelSelector,
      options.fieldSelector,
    );
    const handle = (object: T): void => {
      this.#lastActivity = Date.now();
      try {
        options.onChange(object);
      } catch (error) {
        this.#log.error("Informer {informer} handler failed: {error}", {
          informer: options.name,
          error: describeError(error),
        });
      }
    };
    this.#listWatch.on("add", handle);
    this.#listWatch.on("update", handle);
    this.#listWatch.on("delete", handle);
    this.#listWatch.on("error", (error: unknown) => this.#onError(error));
  }

  /** Whether the first full list has been received (and the cache can be trusted). */
  hasSynced(): boolean {
    return this.#synced;
  }

  /** Resolves once the informer has synced. */
  waitForSync(): Promise<void> {
    if (this.#synced) return Promise.resolve();
    return new Promise((resolve) => this.#syncWaiters.push(resolve));
  }

  get cache(): ObjectCache<T> {
    return this.#listWatch;
  }

  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    const idle = this.#options.idleTimeoutMs ?? 10 * 60_000;
    this.#watchdog = setInterval(() => {
      if (!this.#starting && Date.now() - this.#lastActivity > idle) {
        this.#log.info("Informer {informer} was idle for {idleMs} ms; re-establishing the watch", {
          informer: this.#options.name,
          idleMs: idle,
        });
        this.#restart(0);
      }
    }, Math.min(idle, 60_000));
    void this.#run();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#restartTimer);
    clearInterval(this.#watchdog);
    await this.#listWatch.stop();
  }

  async #run(): Promise<void> {
    if (this.#stopped) return;
    this.#starting = true;
    this.#lastActivity = Date.now();
    const failuresBefore = this.#failures;
    try {
      await this.#listWatch.start();
    } catch (error) {
      this.#onError(error);
    } finally {
      this.#starting = false;
    }
    if (this.#failures !== failuresBefore || this.#stopped) return;
    this.#failures = 0;
    if (!this.#synced) {
      this.#synced = true;
      this.#log.info("Informer {informer} synced with {count} objects", {
        informer: this.#options.name,
        count: this.#listWatch.list().length,
      });
      for (const resolve of this.#syncWaiters.splice(0)) resolve();
    }
  }

  #onError(error: unknown): void {
    if (this.#stopped) return;
    this.#failures++;
    const delay = Math.min(
      this.#options.maxDelayMs ?? 30_000,
      (this.#options.baseDelayMs ?? 500) * 2 ** Math.min(this.#failures - 1, 16),
    );
    const jittered = Math.round(delay * (0.8 + Math.random() * 0.4));
    this.#log.warn("Informer {informer} stopped ({error}); restarting in {delayMs} ms", {
      informer: this.#options.name,
      error: describeError(error),
      delayMs: jittered,
    });
    this.#restart(jittered);
  }

  #restart(delayMs: number): void {
    clearTimeout(this.#restartTimer);
    this.#restartTimer = setTimeout(async () => {
      if (this.#stopped) return;
      this.restarts++;
      this.#options.onRestart?.();
      await this.#listWatch.stop();
      // ListWatch.stop() marks it stopped; start() clears that again.
      void this.#run();
    }, delayMs);
  }
}
