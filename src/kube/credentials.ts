/**
 * How each request to the API server authenticates: fixed headers and client certificate, a token file re-read like
 * client-go's, or, for `exec` plugins and `auth-provider`s, `@kubernetes/client-node`'s own authenticators, loaded
 * only for such users (the full client costs about 80 MiB resident).
 */
import type { KubeConfig as FullKubeConfig } from "@kubernetes/client-node";
import { describeError, logger, registerSecret } from "../log.ts";

/** Headers (authorization, impersonation) and the client certificate (PEM) of one request. */
export interface RequestCredentials {
  headers: Record<string, string>;
  cert?: string;
  key?: string;
}

export interface CredentialSource {
  credentials(): Promise<RequestCredentials>;
  /** The API server answered 401 to a request started at `startedAt` (ms since the epoch). */
  unauthorized?(startedAt: number): void;
}

/** Credentials that never change: a token, basic auth, a client certificate, or none. */
export class StaticCredentials implements CredentialSource {
  readonly #credentials: RequestCredentials;

  constructor(credentials: RequestCredentials) {
    this.#credentials = credentials;
    const authorization = credentials.headers.authorization;
    if (authorization) registerSecret(authorization.replace(/^\w+ /, ""));
  }

  credentials(): Promise<RequestCredentials> {
    return Promise.resolve(this.#credentials);
  }
}

export interface TokenFileOptions {
  headers?: Record<string, string>;
  cert?: string;
  key?: string;
  /** The kubeconfig's `token`, used while the file cannot be read. */
  fallbackToken?: string;
  now?: () => number;
}

/**
 * A bearer token read from a file, as client-go's cached file token source does (v0.35, transport/token_source.go):
 * re-read once the token is 50 s old (a minute less a 10 s leeway), so that a projected service account token the
 * kubelet rotates is picked up; read again at once after a 401 to a request sent with an older token; a failed re-read
 * keeps the last token.
 */
export class TokenFileCredentials implements CredentialSource {
  static readonly refreshAfterMs = 50_000;
  readonly #path: string;
  readonly #options: TokenFileOptions;
  readonly #log = logger("kube");
  #token?: string;
  #readAt = 0;

  constructor(path: string, options: TokenFileOptions) {
    this.#path = path;
    this.#options = options;
  }

  /** Reads the file now; throws when it cannot be read and there is no token to fall back on. */
  readNow(): void {
    try {
      this.#accept(Deno.readTextFileSync(this.#path));
    } catch (error) {
      if (this.#options.fallbackToken === undefined) {
        throw new Error(`Cannot read the token file "${this.#path}": ${(error as Error).message}`, { cause: error });
      }
    }
  }

  async credentials(): Promise<RequestCredentials> {
    const now = this.#now();
    if (this.#token === undefined || now - this.#readAt >= TokenFileCredentials.refreshAfterMs) {
      try {
        this.#accept(await Deno.readTextFile(this.#path));
      } catch (error) {
        if (this.#token === undefined && this.#options.fallbackToken === undefined) {
          throw new Error(`Cannot read the token file "${this.#path}": ${(error as Error).message}`, { cause: error });
        }
        this.#log.warn("Cannot read the token file {path} again; keeping the last token: {error}", {
          path: this.#path,
          error: describeError(error),
        });
        // Try again on the next request after the same period, not on every request.
        this.#readAt = now;
      }
    }
    const token = this.#token ?? this.#options.fallbackToken!;
    return {
      headers: { ...this.#options.headers, authorization: `Bearer ${token}` },
      ...(this.#options.cert !== undefined ? { cert: this.#options.cert, key: this.#options.key } : {}),
    };
  }

  unauthorized(startedAt: number): void {
    if (this.#readAt < startedAt) this.#readAt = 0;
  }

  #accept(text: string): void {
    const token = text.trim();
    if (token === "") throw new Error("the file is empty");
    registerSecret(token);
    this.#token = token;
    this.#readAt = this.#now();
  }

  #now(): number {
    return this.#options.now?.() ?? Date.now();
  }
}

/**
 * A user that authenticates through an `exec` plugin or an `auth-provider`: `@kubernetes/client-node` runs it (and
 * caches what it returns) when the first request needs credentials. The document is the merged kubeconfig with
 * absolute paths.
 */
export class FullClientCredentials implements CredentialSource {
  readonly #document: Record<string, unknown>;
  #client?: Promise<FullKubeConfig>;

  /** @param what names the plugin in errors, e.g. `the exec plugin of user "eks"`. */
  constructor(document: Record<string, unknown>, readonly what: string) {
    this.#document = document;
  }

  async credentials(): Promise<RequestCredentials> {
    this.#client ??= this.#load();
    let client: FullKubeConfig;
    try {
      client = await this.#client;
    } catch (error) {
      this.#client = undefined;
      throw error;
    }
    const options: { headers?: Record<string, string>; cert?: unknown; key?: unknown; auth?: string } = {};
    try {
      await client.applyToHTTPSOptions(options as Parameters<FullKubeConfig["applyToHTTPSOptions"]>[0]);
    } catch (error) {
      throw new Error(`Cannot get credentials from ${this.what}: ${(error as Error).message}`, { cause: error });
    }
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(options.headers ?? {})) headers[name.toLowerCase()] = String(value);
    if (options.auth) headers.authorization = `Basic ${btoa(options.auth)}`;
    if (headers.authorization) registerSecret(headers.authorization.replace(/^\w+ /, ""));
    const text = (value: unknown): string | undefined =>
      value === undefined || value === null
        ? undefined
        : typeof value === "string"
        ? value
        : new TextDecoder().decode(value as Uint8Array);
    const cert = text(options.cert);
    const key = text(options.key);
    return { headers, ...(cert !== undefined && key !== undefined ? { cert, key } : {}) };
  }

  async #load(): Promise<FullKubeConfig> {
    const { KubeConfig } = await import("@kubernetes/client-node");
    const client = new KubeConfig();
    client.loadFromString(JSON.stringify(this.#document));
    return client;
  }
}
