/**
 * The HTTP layer every forge client shares: `{baseUrl}/api/...` requests with the API token, a timeout, a metric per
 * request, the response validated with zod, and every failure turned into a {@linkcode ForgeError} of one kind.
 */
import type { z } from "zod";
import { classifyHttpError, ForgeError, quote } from "./errors.ts";

export type Method = "GET" | "POST" | "PATCH" | "DELETE";

export interface ForgeHttpOptions {
  baseUrl: string;
  token: string;
  timeoutMs?: number;
  fetch?: typeof fetch;
  /** Told about every request: the endpoint template, the status class (2xx, 4xx, 5xx, error) and seconds taken. */
  observe?: (endpoint: string, code: string, seconds: number) => void;
}

/** One request: where, what for (the start of every error message), and how the answer must look. */
export interface ForgeRequest<T> {
  /** Path below the base URL, with the query: `/api/v1/version`. */
  path: string;
  /** The path with names replaced by placeholders, for metrics with bounded labels. */
  template: string;
  /** What the request is for, in sentence case: "Get the Gitea version". */
  what: string;
  schema: z.ZodType<T>;
  method?: Method;
  body?: unknown;
}

export class ForgeHttp {
  readonly baseUrl: string;
  readonly #token: string;
  readonly #timeoutMs: number;
  readonly #fetch: typeof fetch;
  readonly #observe?: ForgeHttpOptions["observe"];

  constructor(options: ForgeHttpOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.#token = options.token;
    this.#timeoutMs = options.timeoutMs ?? 10_000;
    this.#fetch = options.fetch ?? fetch;
    this.#observe = options.observe;
  }

  /** Sends a request; resolves the validated answer and the response headers. */
  async call<T>(request: ForgeRequest<T>): Promise<{ value: T; headers: Headers }> {
    const started = performance.now();
    let code = "error";
    try {
      return await this.#request(request, (status) => (code = `${Math.floor(status / 100)}xx`));
    } finally {
      this.#observe?.(request.template, code, (performance.now() - started) / 1000);
    }
  }

  async #request<T>(
    { path, what, schema, method = "GET", body }: ForgeRequest<T>,
    onStatus: (status: number) => void,
  ): Promise<{ value: T; headers: Headers }> {
    const url = `${this.baseUrl}${path}`;
    let response: Response;
    try {
      response = await this.#fetch(url, {
        method,
        headers: {
          authorization: `token ${this.#token}`,
          accept: "application/json",
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (error) {
      const reason = error instanceof DOMException && error.name === "TimeoutError"
        ? `no answer within ${this.#timeoutMs} ms`
        : error instanceof Error
        ? error.message
        : String(error);
      throw new ForgeError("Unreachable", `${what}: cannot reach ${this.baseUrl}: ${reason}`, { cause: error });
    }
    onStatus(response.status);
    let text: string;
    try {
      text = await response.text();
    } catch (error) {
      throw new ForgeError("Unreachable", `${what}: the connection broke while reading the answer`, { cause: error });
    }
    if (!response.ok) throw classifyHttpError(response.status, what, response.headers.get("retry-after"), text);
    const headers = response.headers;
    if (response.status === 204 || (method === "DELETE" && text.trim() === "")) {
      return { value: schema.parse(null), headers };
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (error) {
      throw new ForgeError("InvalidResponse", `${what}: the answer is not JSON${quote(text)}`, { cause: error });
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new ForgeError(
        "InvalidResponse",
        `${what}: unexpected answer (${issue.path.join(".") || "body"}: ${issue.message})${quote(text)}`,
      );
    }
    return { value: parsed.data, headers };
  }
}
