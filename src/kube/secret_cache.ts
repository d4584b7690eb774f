/**
 * The Secrets that RunnerGroups reference, each watched on its own (a name-scoped informer: `metadata.name=<name>` in
 * its namespace), so the operator caches only those Secrets, never every Secret of the cluster, reads them without an
 * API request per reconcile, and hears at once when one is created, rotated or deleted.
 */
import type { KubernetesListObject, V1Secret } from "@kubernetes/client-node";
import type { KubeClients } from "./client.ts";
import { SupervisedInformer } from "./informer.ts";

export interface SecretCacheOptions {
  clients: KubeClients;
  /** Told when a watched Secret appears, changes or goes away. */
  onChange: (namespace: string, name: string) => void;
  /** Called on each informer restart, for metrics. */
  onRestart?: () => void;
  /** How long a read waits for a new informer's first list before failing. Default 30 s. */
  syncTimeoutMs?: number;
}

const keyOf = (namespace: string, name: string): string => `${namespace}/${name}`;

export class SecretCache {
  readonly #options: SecretCacheOptions;
  readonly #informers = new Map<string, SupervisedInformer<V1Secret>>();
  #stopped = false;

  constructor(options: SecretCacheOptions) {
    this.#options = options;
  }

  /**
   * Reads a Secret from the cache, starting its informer on first use and waiting for its first list; undefined when
   * the Secret does not exist.
   */
  readonly read = async (namespace: string, name: string): Promise<V1Secret | undefined> => {
    if (this.#stopped) throw new Error(`Cannot read Secret ${namespace}/${name}: the Secret cache is stopped`);
    const informer = this.#informer(namespace, name);
    if (!informer.hasSynced()) {
      const timeoutMs = this.#options.syncTimeoutMs ?? 30_000;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(new Error(`Cannot read Secret ${namespace}/${name}: no answer to its list within ${timeoutMs} ms`)),
          timeoutMs,
        );
      });
      try {
        await Promise.race([informer.waitForSync(), timeout]);
      } finally {
        clearTimeout(timer);
      }
    }
    return informer.cache.get(name, namespace);
  };

  /** Stops the informers of Secrets outside `referenced` (`namespace/name` keys), e.g. of deleted groups. */
  async retain(referenced: ReadonlySet<string>): Promise<void> {
    const unused = [...this.#informers].filter(([key]) => !referenced.has(key));
    for (const [key] of unused) this.#informers.delete(key);
    await Promise.all(unused.map(([, informer]) => informer.stop()));
  }

  /** The number of Secrets watched. */
  get size(): number {
    return this.#informers.size;
  }

  /** Whether every started informer has synced (for readiness). */
  synced(): boolean {
    return [...this.#informers.values()].every((informer) => informer.hasSynced());
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    const informers = [...this.#informers.values()];
    this.#informers.clear();
    await Promise.all(informers.map((informer) => informer.stop()));
  }

  #informer(namespace: string, name: string): SupervisedInformer<V1Secret> {
    const key = keyOf(namespace, name);
    let informer = this.#informers.get(key);
    if (informer) return informer;
    const fieldSelector = `metadata.name=${name}`;
    const core = this.#options.clients.core;
    informer = new SupervisedInformer<V1Secret>({
      name: `secret/${key}`,
      kubeConfig: this.#options.clients.kubeConfig,
      path: `/api/v1/namespaces/${namespace}/secrets`,
      fieldSelector,
      list: async () => await core.listNamespacedSecret({ namespace, fieldSelector }) as KubernetesListObject<V1Secret>,
      onChange: () => this.#options.onChange(namespace, name),
      onRestart: this.#options.onRestart,
    });
    this.#informers.set(key, informer);
    informer.start();
    return informer;
  }
}

/** The `namespace/name` keys of a list of Secret references. */
export function secretKeys(references: Iterable<{ namespace: string; name: string }>): Set<string> {
  return new Set([...references].map((reference) => keyOf(reference.namespace, reference.name)));
}
