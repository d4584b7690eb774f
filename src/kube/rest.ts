/**
 * Requests to the Kubernetes API server over Deno's fetch: JSON in and out, the kubeconfig's CA, client certificate
 * and headers, HTTP/1.1 with keep-alive and one connection pool per TLS setup, and errors that carry the HTTP status
 * and the API server's `Status`.
 *
 * HTTP/1.1 only: under Deno, an HTTP/2 connection that the API server closes (on a restart or upgrade) crashed the
 * whole process inside the HTTP/2 layer (seen in tests/integration against a real kube-apiserver, with
 * client-node's undici dispatcher); HTTP/1.1 fails as an ordinary request error that the informers and work queue
 * retry. It was also the faster in the one run measured: with this client over HTTP/2 (Deno 2.9.6's fetch,
 * kube-apiserver 1.35.4 serving it), both the operator and a plain create loop made about 40 % fewer creates per second
 * than over HTTP/1.1 in five of the benchmark's backlog rounds ("A backlog's first 100 ms" in tests/bench/NOTES.md).
 */
import type { KubeConfig, RequestCredentials } from "./kubeconfig.ts";

/** An answer other than 2xx from the API server. `code` and `body` are named as in client-node's `ApiException`. */
export class KubernetesApiError extends Error {
  override readonly name = "KubernetesApiError";

  constructor(
    /** The HTTP status. */
    readonly code: number,
    /** The API server's `Status` object, or the text it sent when that was not JSON. */
    readonly body: unknown,
    method: string,
    path: string,
  ) {
    const reason = typeof (body as { message?: unknown })?.message === "string"
      ? (body as { message: string }).message
      : typeof body === "string"
      ? body.slice(0, 200)
      : "";
    super(`The API server answered ${code} to ${method} ${path}${reason ? `: ${reason}` : ""}`);
  }
}

export type QueryValue = string | number | boolean | undefined;

export interface RequestOptions {
  query?: Record<string, QueryValue>;
  body?: unknown;
  /** Default `application/json`; merge patches send `application/merge-patch+json`. */
  contentType?: string;
}

export interface RestClientOptions {
  /** Timeout of one request (not of watches). Default 60 s. */
  timeoutMs?: number;
}

/** The options of a Deno HTTP client for a kubeconfig and a request's credentials. */
export function httpClientOptions(
  kubeConfig: KubeConfig,
  credentials: RequestCredentials,
): Deno.CreateHttpClientOptions & { cert?: string; key?: string } {
  return {
    http1: true,
    http2: false,
    ...(kubeConfig.caCerts.length > 0 ? { caCerts: [...kubeConfig.caCerts] } : {}),
    ...(kubeConfig.proxyUrl ? { proxy: { url: kubeConfig.proxyUrl } } : {}),
    ...(credentials.cert !== undefined && credentials.key !== undefined
      ? { cert: credentials.cert, key: credentials.key }
      : {}),
  };
}

/** The headers of every request to the API server: JSON, the operator's user agent, the credentials' headers. */
export function requestHeaders(credentials: RequestCredentials): Record<string, string> {
  return { accept: "application/json", "user-agent": "gitea-runner-operator", ...credentials.headers };
}

/** Builds `server + path + ?query`, leaving out undefined and empty values. */
export function apiUrl(kubeConfig: KubeConfig, path: string, query: Record<string, QueryValue> = {}): URL {
  const url = new URL(kubeConfig.server + path);
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== "") url.searchParams.set(key, String(value));
  }
  return url;
}

export class RestClient {
  readonly #timeoutMs: number;
  /** One pool per client certificate; exec plugins may hand out new certificates, so keep the last few. */
  readonly #pools = new Map<string, Deno.HttpClient>();

  constructor(readonly kubeConfig: KubeConfig, options: RestClientOptions = {}) {
    this.#timeoutMs = options.timeoutMs ?? 60_000;
  }

  /** Sends one request and returns the parsed JSON answer; throws {@linkcode KubernetesApiError} on a non-2xx. */
  async request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const credentials = await this.kubeConfig.credentials();
    const startedAt = Date.now();
    const headers = requestHeaders(credentials);
    if (options.body !== undefined) headers["content-type"] = options.contentType ?? "application/json";
    let response: Response;
    let text: string;
    try {
      response = await fetch(apiUrl(this.kubeConfig, path, options.query), {
        method,
        headers,
        body: options.body === undefined ? undefined : JSON.stringify(options.body),
        client: this.#pool(credentials),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
      text = await response.text();
    } catch (error) {
      if (error instanceof DOMException && error.name === "TimeoutError") {
        throw new Error(`${method} ${path} got no answer from the API server in ${this.#timeoutMs} ms`, {
          cause: error,
        });
      }
      throw new Error(`Cannot reach the API server for ${method} ${path}: ${(error as Error).message}`, {
        cause: error,
      });
    }
    if (response.status === 401) this.kubeConfig.unauthorized(startedAt);
    let body: unknown = text;
    if (text !== "") {
      try {
        body = JSON.parse(text);
      } catch {
        if (response.ok) throw new Error(`The API server answered ${method} ${path} with something other than JSON`);
      }
    }
    if (!response.ok) throw new KubernetesApiError(response.status, body, method, path);
    return body as T;
  }

  /** Closes every pooled connection. */
  close(): void {
    for (const pool of this.#pools.values()) pool.close();
    this.#pools.clear();
  }

  #pool(credentials: RequestCredentials): Deno.HttpClient {
    const key = `${credentials.cert ?? ""}\n${credentials.key ?? ""}`;
    let pool = this.#pools.get(key);
    if (!pool) {
      pool = Deno.createHttpClient(httpClientOptions(this.kubeConfig, credentials));
      this.#pools.set(key, pool);
      // Old certificates' pools are dropped (not closed: a request may still be running on one).
      if (this.#pools.size > 4) this.#pools.delete(this.#pools.keys().next().value!);
    }
    return pool;
  }
}
