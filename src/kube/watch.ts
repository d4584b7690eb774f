/**
 * A Kubernetes watch for `ListWatch`, replacing `@kubernetes/client-node`'s `Watch`, whose stream under Deno never
 * reports a dropped connection or its own inactivity timeout (the informer then waits forever; seen against a real
 * kube-apiserver in tests/integration). This one uses Deno's own fetch with the kubeconfig's TLS material, so a
 * dropped connection ends the stream and reaches `done`; it asks for bookmarks and a server-side timeout so that an
 * idle watch is renewed regularly, and ends a watch that stays silent for too long.
 */
import type { KubeConfig } from "@kubernetes/client-node";

type TlsOptions = {
  ca?: Uint8Array | string;
  cert?: Uint8Array | string;
  key?: Uint8Array | string;
  headers?: Record<string, string>;
  auth?: string;
  rejectUnauthorized?: boolean;
};

const text = (value: Uint8Array | string | undefined): string | undefined =>
  value === undefined ? undefined : typeof value === "string" ? value : new TextDecoder().decode(value);

type WatchCallback = (phase: string, apiObject: unknown, watchObject?: unknown) => void;
type DoneCallback = (error: unknown) => void;

export interface StreamingWatchOptions {
  /** End a watch that delivered no data for this long; `done` gets a TimeoutError and the informer re-watches. */
  idleTimeoutMs?: number;
  /** The server ends each watch after about this long (jittered). */
  serverTimeoutSeconds?: number;
}

export class StreamingWatch {
  readonly #idleTimeoutMs: number;
  readonly #serverTimeoutSeconds: number;

  constructor(readonly kubeConfig: KubeConfig, options: StreamingWatchOptions = {}) {
    this.#idleTimeoutMs = options.idleTimeoutMs ?? 60_000;
    this.#serverTimeoutSeconds = options.serverTimeoutSeconds ?? 300;
  }

  /** Same contract as client-node's `Watch.watch`: the returned controller aborts the watch without calling done. */
  async watch(
    path: string,
    queryParams: Record<string, unknown>,
    callback: WatchCallback,
    done: DoneCallback,
  ): Promise<AbortController> {
    const cluster = this.kubeConfig.getCurrentCluster();
    if (!cluster) throw new Error("No current cluster in the kubeconfig");
    const url = new URL(cluster.server + path);
    url.searchParams.set("watch", "true");
    url.searchParams.set("allowWatchBookmarks", "true");
    const jitter = 1 + Math.random();
    url.searchParams.set("timeoutSeconds", String(Math.round(this.#serverTimeoutSeconds * jitter)));
    for (const [key, value] of Object.entries(queryParams)) {
      if (value !== undefined && value !== "") url.searchParams.set(key, String(value));
    }
    const tls: TlsOptions = {};
    await this.kubeConfig.applyToHTTPSOptions(tls as Parameters<KubeConfig["applyToHTTPSOptions"]>[0]);
    const headers: Record<string, string> = { accept: "application/json", ...tls.headers };
    if (tls.auth) headers.authorization = `Basic ${btoa(tls.auth)}`;
    const cert = text(tls.cert);
    const key = text(tls.key);
    const ca = text(tls.ca);
    const client = Deno.createHttpClient({
      ...(ca ? { caCerts: [ca] } : {}),
      ...(cert && key ? { cert, key } : {}),
      http2: false,
    });

    const controller = new AbortController();
    const internal = new AbortController();
    let finished = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const finish = (error: unknown): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      internal.abort();
      client.close();
      // Aborted by the owner (ListWatch stopping or restarting): it expects no callback.
      if (!controller.signal.aborted) done(error);
    };
    const resetTimer = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        finish(new DOMException(`No data on the watch for ${this.#idleTimeoutMs} ms`, "TimeoutError"));
      }, this.#idleTimeoutMs);
    };
    controller.signal.addEventListener("abort", () => finish(controller.signal.reason));

    void (async () => {
      try {
        resetTimer();
        const response = await fetch(url, { headers, client, signal: internal.signal });
        if (response.status !== 200) {
          const error = new Error(`Watch of ${path} failed with status ${response.status}`) as Error & {
            statusCode?: number;
          };
          error.statusCode = response.status;
          await response.body?.cancel();
          throw error;
        }
        const decoder = new TextDecoder();
        let buffer = "";
        for await (const chunk of response.body!) {
          resetTimer();
          buffer += decoder.decode(chunk as Uint8Array, { stream: true });
          let newline: number;
          while ((newline = buffer.indexOf("\n")) >= 0) {
            const line = buffer.slice(0, newline).trim();
            buffer = buffer.slice(newline + 1);
            if (line === "") continue;
            let event: { type: string; object: unknown };
            try {
              event = JSON.parse(line);
            } catch {
              continue;
            }
            callback(event.type, event.object, event);
          }
        }
        finish(null);
      } catch (error) {
        finish(error);
      }
    })();
    return controller;
  }
}
