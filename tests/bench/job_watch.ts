/**
 * Observes when Jobs appear, through a Kubernetes watch (not a list poll, which would add up to its period of
 * observation delay to every figure). Written apart from the operator's own watch so that the observer shares no code
 * with what it measures.
 */
import type { KubeConfig } from "@kubernetes/client-node";

export interface ObservedJob {
  name: string;
  labels: Record<string, string>;
  /** When the watch delivered the Job's ADDED event (ms since epoch); for Jobs that existed at start, the list time. */
  at: number;
  /** True for Jobs that existed before the watch started. */
  existing: boolean;
}

type TlsOptions = { ca?: Uint8Array | string; cert?: Uint8Array | string; key?: Uint8Array | string };
const text = (value: Uint8Array | string | undefined): string | undefined =>
  value === undefined ? undefined : typeof value === "string" ? value : new TextDecoder().decode(value);

export class JobWatch {
  readonly jobs = new Map<string, ObservedJob>();
  readonly #waiters = new Set<() => void>();
  readonly #abort = new AbortController();
  #failure?: Error;
  #loop?: Promise<void>;

  private constructor(
    readonly server: string,
    readonly client: Deno.HttpClient,
    readonly namespace: string,
    readonly labelSelector: string,
  ) {}

  /** Lists the namespace's Jobs matching `labelSelector`, then watches from there. */
  static async start(kubeConfig: KubeConfig, namespace: string, labelSelector: string): Promise<JobWatch> {
    const server = kubeConfig.getCurrentCluster()?.server;
    if (!server) throw new Error("Cannot watch Jobs: the kubeconfig has no current cluster");
    const tls: TlsOptions = {};
    await kubeConfig.applyToHTTPSOptions(tls as Parameters<KubeConfig["applyToHTTPSOptions"]>[0]);
    const ca = text(tls.ca);
    const cert = text(tls.cert);
    const key = text(tls.key);
    const client = Deno.createHttpClient({ ...(ca ? { caCerts: [ca] } : {}), ...(cert && key ? { cert, key } : {}) });
    const watch = new JobWatch(server, client, namespace, labelSelector);
    const resourceVersion = await watch.#list();
    watch.#loop = watch.#watchFrom(resourceVersion);
    return watch;
  }

  /** Jobs added since the watch started. */
  added(): ObservedJob[] {
    return [...this.jobs.values()].filter((job) => !job.existing);
  }

  /** Resolves once `count` Jobs were added since the start; throws after `timeoutMs` or when the watch failed. */
  async waitForAdded(count: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.added().length < count) {
      if (this.#failure) throw this.#failure;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `Only ${this.added().length} of ${count} Jobs appeared in ${this.namespace} in ${timeoutMs} ms`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, Math.min(left, 1_000));
        function done(): void {
          clearTimeout(timer);
          resolve();
        }
        this.#waiters.add(done);
      });
    }
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    await this.#loop?.catch(() => {});
    this.client.close();
  }

  #path(): string {
    const query = new URLSearchParams({ labelSelector: this.labelSelector });
    return `${this.server}/apis/batch/v1/namespaces/${this.namespace}/jobs?${query}`;
  }

  async #list(): Promise<string> {
    const response = await fetch(this.#path(), { client: this.client, signal: this.#abort.signal });
    if (!response.ok) throw new Error(`Cannot list Jobs in ${this.namespace}: HTTP ${response.status}`);
    const list = await response.json() as { metadata: { resourceVersion: string }; items: JobObject[] };
    const at = Date.now();
    for (const job of list.items) this.#record(job, at, true);
    return list.metadata.resourceVersion;
  }

  #record(job: JobObject, at: number, existing: boolean): void {
    const name = job.metadata?.name;
    if (!name || this.jobs.has(name)) return;
    this.jobs.set(name, { name, labels: job.metadata?.labels ?? {}, at, existing });
    for (const wake of this.#waiters) wake();
    this.#waiters.clear();
  }

  async #watchFrom(start: string): Promise<void> {
    let resourceVersion = start;
    while (!this.#abort.signal.aborted) {
      try {
        const url = `${this.#path()}&watch=true&allowWatchBookmarks=true&timeoutSeconds=300&resourceVersion=${
          encodeURIComponent(resourceVersion)
        }`;
        const response = await fetch(url, { client: this.client, signal: this.#abort.signal });
        if (response.status === 410) {
          resourceVersion = await this.#list();
          continue;
        }
        if (!response.ok || !response.body) throw new Error(`Cannot watch Jobs: HTTP ${response.status}`);
        const decoder = new TextDecoder();
        let buffer = "";
        for await (const chunk of response.body) {
          // The moment of arrival, before parsing: what is measured is when the API server told us.
          const at = Date.now();
          buffer += decoder.decode(chunk, { stream: true });
          let newline: number;
          while ((newline = buffer.indexOf("\n")) >= 0) {
            const line = buffer.slice(0, newline).trim();
            buffer = buffer.slice(newline + 1);
            if (line === "") continue;
            const event = JSON.parse(line) as { type: string; object: JobObject & { code?: number } };
            if (event.type === "ERROR") {
              if (event.object.code === 410) resourceVersion = await this.#list();
              continue;
            }
            resourceVersion = event.object.metadata?.resourceVersion ?? resourceVersion;
            if (event.type === "ADDED") this.#record(event.object, at, false);
          }
        }
      } catch (error) {
        if (this.#abort.signal.aborted) return;
        this.#failure = error instanceof Error ? error : new Error(String(error));
        for (const wake of this.#waiters) wake();
        return;
      }
    }
  }
}

interface JobObject {
  metadata?: { name?: string; labels?: Record<string, string>; resourceVersion?: string };
}
