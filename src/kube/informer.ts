/**
 * A supervised informer: lists the objects once, then watches from the list's resourceVersion, and keeps them in a
 * cache. It restarts with backoff and jitter after errors, lists again when the watch's resourceVersion expired (410),
 * tracks whether the first list arrived, re-establishes a watch that has been idle too long, and keeps handlers to
 * "compute a key, enqueue it". Objects are stored without `metadata.managedFields` and through the informer's
 * `transform`, so the cache holds only what the operator reads.
 *
 * Written here rather than wrapping client-node's `ListWatch`, which imports its serializer and with it the whole
 * generated API (about 80 MiB resident), and which stops on most errors and reports no sync state anyway.
 */
import { isDeepStrictEqual } from "node:util";
import type { KubernetesListObject, KubernetesObject } from "@kubernetes/client-node";
import { describeError, logger } from "../log.ts";
import type { KubeConfig } from "./kubeconfig.ts";
import { StreamingWatch, type StreamingWatchOptions } from "./watch.ts";

/** Read access to an informer's objects. */
export interface ObjectCache<T> {
  get(name: string, namespace?: string): T | undefined;
  list(namespace?: string): T[];
}

/** The watch an informer uses; {@linkcode StreamingWatch} unless a test gives another. */
export type WatchLike = Pick<StreamingWatch, "watch">;

export interface InformerOptions<T extends KubernetesObject> {
  /** Names the informer in logs and metrics. */
  name: string;
  kubeConfig: KubeConfig;
  /** API path to watch, e.g. `/apis/batch/v1/jobs`. */
  path: string;
  list: () => Promise<KubernetesListObject<T>>;
  labelSelector?: string;
  fieldSelector?: string;
  /**
   * Shapes each object before it is cached (after `metadata.managedFields` is dropped): keep only what the readers of
   * the cache read. Handlers get the transformed object, and only when it changed: a watch update that changes nothing
   * the transform keeps (a runner Job's pod counts, say) updates the cache without calling `onChange`. A relist, which
   * follows a gap in the watch, still reports every object whose resourceVersion changed.
   */
  transform?: (object: T) => T;
  /** Called with each added, updated or deleted object. Must not throw; errors are logged. */
  onChange: (object: T) => void;
  /** Re-establish a watch that delivered nothing for this long (a silently dead connection). */
  idleTimeoutMs?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Called on each restart after an error or an idle watch. */
  onRestart?: () => void;
  /** Watches in protobuf, decoded by this (see {@linkcode StreamingWatchOptions.decodeProtobuf}); lists stay JSON. */
  decodeProtobuf?: StreamingWatchOptions["decodeProtobuf"];
  watch?: WatchLike;
}

/** Drops `metadata.managedFields` (server-side apply bookkeeping, often the largest part of an object). */
export function dropManagedFields<T extends KubernetesObject>(object: T): T {
  if (object.metadata?.managedFields === undefined) return object;
  // A new metadata object rather than `delete`, which would leave V8 a slower, larger dictionary-mode object.
  const { managedFields: _dropped, ...metadata } = object.metadata;
  object.metadata = metadata;
  return object;
}

/** The watch's resourceVersion expired: list again. */
class ResourceVersionExpired extends Error {}
/** The watch went idle for longer than the informer allows. */
class IdleWatch extends Error {}

const keyOf = (namespace: string | undefined, name: string | undefined): string => `${namespace ?? ""}/${name ?? ""}`;

export class SupervisedInformer<T extends KubernetesObject> implements ObjectCache<T> {
  readonly #options: InformerOptions<T>;
  readonly #watch: WatchLike;
  readonly #log = logger("informer");
  #objects = new Map<string, T>();
  #resourceVersion = "";
  #synced = false;
  #stopped = true;
  #failures = 0;
  #lastActivity = Date.now();
  #listing = false;
  #watchdog?: ReturnType<typeof setInterval>;
  #syncWaiters: (() => void)[] = [];
  #loop?: Promise<void>;
  /** Ends the running watch (or the backoff wait) with the given reason. */
  #interrupt?: (reason?: Error) => void;
  /** How often the informer was restarted after an error or an idle watch. */
  restarts = 0;

  constructor(options: InformerOptions<T>) {
    this.#options = options;
    this.#watch = options.watch ??
      new StreamingWatch(options.kubeConfig, options.decodeProtobuf ? { decodeProtobuf: options.decodeProtobuf } : {});
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
    return this;
  }

  get(name: string, namespace?: string): T | undefined {
    return this.#objects.get(keyOf(namespace, name));
  }

  /**
   * Puts an object this process just created into the cache before its watch event arrives, so that the next read
   * sees it (like client-go's mutation cache): a reconcile that runs before the event then neither counts the object
   * as missing nor creates it again. The watch event of the same resourceVersion then changes nothing and calls no
   * handler; a newer one replaces it. Nothing happens when the cache already holds the object, or when the watch has
   * passed the object's resourceVersion already (it was seen, and may be gone since). A relist replaces it with the
   * API server's answer.
   */
  assume(object: T): void {
    const key = keyOf(object.metadata?.namespace, object.metadata?.name);
    if (this.#objects.has(key) || !this.#synced) return;
    if (versionReached(this.#resourceVersion, object.metadata?.resourceVersion)) return;
    this.#objects.set(key, this.#prepare(object));
  }

  /**
   * Puts the API server's answer to a write of this process (an update or patch of a cached object: the object at
   * its new resourceVersion) into the cache before the watch event of that write arrives, so that the next read sees
   * what was written. A reconcile that runs before the event then does not write again from what it read before the
   * write (for a status, a condition's transition time moved anew). The event of that resourceVersion then changes
   * nothing and calls no handler, as for {@linkcode assume}: a process does not need telling what it wrote. Nothing
   * happens when the object is not cached (deleted meanwhile), or when the watch or the cached object is at that
   * resourceVersion or past it already.
   */
  assumeWritten(object: T): void {
    const key = keyOf(object.metadata?.namespace, object.metadata?.name);
    const cached = this.#objects.get(key);
    const version = object.metadata?.resourceVersion;
    if (!cached || versionReached(this.#resourceVersion, version)) return;
    if (versionReached(cached.metadata?.resourceVersion ?? "", version)) return;
    this.#objects.set(key, this.#prepare(object));
  }

  list(namespace?: string): T[] {
    const all = [...this.#objects.values()];
    return namespace === undefined ? all : all.filter((object) => object.metadata?.namespace === namespace);
  }

  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    const idle = this.#options.idleTimeoutMs ?? 10 * 60_000;
    this.#watchdog = setInterval(() => {
      if (!this.#listing && Date.now() - this.#lastActivity > idle) {
        this.#log.info("Informer {informer} was idle for {idleMs} ms; re-establishing the watch", {
          informer: this.#options.name,
          idleMs: idle,
        });
        this.#lastActivity = Date.now();
        this.#interrupt?.(new IdleWatch(`no event for ${idle} ms`));
      }
    }, Math.min(idle, 60_000));
    this.#loop = this.#run();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#watchdog);
    this.#interrupt?.();
    await this.#loop;
  }

  async #run(): Promise<void> {
    while (!this.#stopped) {
      try {
        if (this.#resourceVersion === "") await this.#relist();
        await this.#watchOnce();
      } catch (error) {
        if (this.#stopped) return;
        if (error instanceof ResourceVersionExpired) {
          this.#log.info("Informer {informer}: {error}; listing again", {
            informer: this.#options.name,
            error: error.message,
          });
          this.#resourceVersion = "";
          continue;
        }
        this.restarts++;
        this.#options.onRestart?.();
        if (error instanceof IdleWatch) continue;
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
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, jittered);
          this.#interrupt = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
    }
  }

  /** Replaces the cache with a fresh list; tells the handler about what was added, changed or deleted. */
  async #relist(): Promise<void> {
    this.#listing = true;
    let list: KubernetesListObject<T>;
    try {
      list = await this.#options.list();
    } finally {
      this.#listing = false;
      this.#lastActivity = Date.now();
    }
    if (this.#stopped) return;
    const previous = this.#objects;
    const fresh = new Map<string, T>();
    for (const item of list.items ?? []) {
      const object = this.#prepare(item);
      fresh.set(keyOf(object.metadata?.namespace, object.metadata?.name), object);
    }
    this.#objects = fresh;
    this.#resourceVersion = list.metadata?.resourceVersion ?? "";
    this.#failures = 0;
    for (const [key, old] of previous) if (!fresh.has(key)) this.#notify(old);
    for (const [key, object] of fresh) {
      const old = previous.get(key);
      if (!old || !sameVersion(old, object)) this.#notify(object);
    }
    if (!this.#synced) {
      this.#synced = true;
      this.#log.info("Informer {informer} synced with {count} objects", {
        informer: this.#options.name,
        count: fresh.size,
      });
      for (const resolve of this.#syncWaiters.splice(0)) resolve();
    }
  }

  /**
   * Watches from the last resourceVersion until the watch ends: resolves when the server ended it (its timeout) or it
   * delivered nothing for a while, rejects on errors.
   */
  #watchOnce(): Promise<void> {
    const startedAt = Date.now();
    let events = 0;
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      let controller: AbortController | undefined;
      const end = (error?: Error): void => {
        if (settled) return;
        settled = true;
        controller?.abort();
        if (error) reject(error);
        else resolve();
      };
      this.#interrupt = end;
      if (this.#stopped) return end();
      const query: Record<string, unknown> = {
        resourceVersion: this.#resourceVersion,
        labelSelector: this.#options.labelSelector,
        fieldSelector: this.#options.fieldSelector,
      };
      this.#watch.watch(this.#options.path, query, (type, object) => {
        if (settled) return;
        events++;
        this.#lastActivity = Date.now();
        this.#failures = 0;
        try {
          this.#apply(type, object as T);
        } catch (error) {
          end(error as Error);
        }
      }, (error) => {
        if (error === null || error === undefined || (error as Error).name === "TimeoutError") {
          // A watch the server ends at once, again and again, must not spin.
          if (events === 0 && Date.now() - startedAt < 1000) {
            return end(new Error(`The watch of ${this.#options.path} ended at once`));
          }
          return end();
        }
        // A watch request answered 410: the resourceVersion is too old to watch from; list again (as client-node's
        // ListWatch does) instead of retrying it.
        if ((error as { statusCode?: number }).statusCode === 410) {
          return end(new ResourceVersionExpired((error as Error).message ?? "resourceVersion expired"));
        }
        end(error instanceof Error ? error : new Error(String(error)));
      }).then((started) => {
        controller = started;
        if (settled) started.abort();
      }, (error) => end(error));
    });
  }

  #apply(type: string, object: T): void {
    switch (type) {
      case "ADDED":
      case "MODIFIED": {
        const prepared = this.#prepare(object);
        const key = keyOf(prepared.metadata?.namespace, prepared.metadata?.name);
        const old = this.#objects.get(key);
        if (old && sameVersion(old, prepared)) break;
        this.#objects.set(key, prepared);
        if (old && this.#options.transform && sameContent(old, prepared)) break;
        this.#notify(prepared);
        break;
      }
      case "DELETED": {
        const prepared = this.#prepare(object);
        this.#objects.delete(keyOf(prepared.metadata?.namespace, prepared.metadata?.name));
        this.#notify(prepared);
        break;
      }
      case "BOOKMARK":
        break;
      case "ERROR": {
        const status = object as { code?: number; message?: string };
        if (status.code === 410) throw new ResourceVersionExpired(status.message ?? "resourceVersion expired");
        throw new Error(
          `The watch of ${this.#options.path} reported an error: ${status.message ?? JSON.stringify(status)}`,
        );
      }
      default:
        throw new Error(`The watch of ${this.#options.path} sent an unknown event type "${type}"`);
    }
    const version = object.metadata?.resourceVersion;
    if (version) this.#resourceVersion = version;
  }

  #prepare(object: T): T {
    const stripped = dropManagedFields(object);
    return this.#options.transform ? this.#options.transform(stripped) : stripped;
  }

  #notify(object: T): void {
    try {
      this.#options.onChange(object);
    } catch (error) {
      this.#log.error("Informer {informer} handler failed: {error}", {
        informer: this.#options.name,
        error: describeError(error),
      });
    }
  }
}

/**
 * Whether the watch at `current` has passed `version` already. Kubernetes calls resourceVersions opaque; the API
 * server's are etcd revisions (decimal integers that grow with every write), and anything else counts as not reached.
 */
function versionReached(current: string, version: string | undefined): boolean {
  if (!/^\d+$/.test(current) || version === undefined || !/^\d+$/.test(version)) return false;
  return BigInt(current) >= BigInt(version);
}

/** Whether two objects are the same apart from their resourceVersion. */
function sameContent(a: KubernetesObject, b: KubernetesObject): boolean {
  const withoutVersion = (object: KubernetesObject): KubernetesObject => ({
    ...object,
    metadata: { ...object.metadata, resourceVersion: undefined },
  });
  return isDeepStrictEqual(withoutVersion(a), withoutVersion(b));
}

function sameVersion(a: KubernetesObject, b: KubernetesObject): boolean {
  const version = a.metadata?.resourceVersion;
  return version !== undefined && version === b.metadata?.resourceVersion;
}
