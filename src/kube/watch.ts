/**
 * A Kubernetes watch over Deno's own fetch, with the kubeconfig's TLS material and headers, so that a dropped
 * connection ends the stream and reaches `done` (client-node's `Watch`, under Deno, never reported a dropped connection
 * or its own inactivity timeout; seen against a real kube-apiserver in tests/integration). It asks for bookmarks and a
 * server-side timeout so that an idle watch is renewed regularly, and ends a watch that stays silent for too long.
 * Each watch has its own HTTP/1.1 connection, closed when the watch ends.
 */
import type { KubeConfig } from "./kubeconfig.ts";
import { apiUrl, httpClientOptions, type QueryValue, requestHeaders } from "./rest.ts";

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
    const jitter = 1 + Math.random();
    const url = apiUrl(this.kubeConfig, path, {
      watch: "true",
      allowWatchBookmarks: "true",
      timeoutSeconds: Math.round(this.#serverTimeoutSeconds * jitter),
      ...(queryParams as Record<string, QueryValue>),
    });
    const credentials = await this.kubeConfig.credentials();
    const startedAt = Date.now();
    const headers = requestHeaders(credentials);
    const client = Deno.createHttpClient(httpClientOptions(this.kubeConfig, credentials));

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
      // Aborted by the owner (the informer stopping or restarting): it expects no callback.
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
          if (response.status === 401) this.kubeConfig.unauthorized(startedAt);
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
