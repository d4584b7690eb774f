/** Forge errors, classified once where the response is read, so callers branch on `kind` and never on text. */

/** Why a forge request failed; the names are also the `ForgeReachable` condition reasons. */
export type ForgeErrorKind =
  | "Unauthorized"
  | "Forbidden"
  | "NotFound"
  | "Unreachable"
  | "RateLimited"
  | "ServerError"
  | "UnsupportedVersion"
  | "InvalidResponse";

/** A failed forge request. `transient` errors are retried with backoff; the others wait for a change or resync. */
export class ForgeError extends Error {
  constructor(
    readonly kind: ForgeErrorKind,
    message: string,
    readonly options: { status?: number; retryAfterMs?: number; cause?: unknown } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = "ForgeError";
  }

  /** Network errors, timeouts, 429 and 5xx: the same request may succeed later. */
  get transient(): boolean {
    return this.kind === "Unreachable" || this.kind === "RateLimited" || this.kind === "ServerError";
  }

  /** The delay the server asked for with `Retry-After`, if any. */
  get retryAfterMs(): number | undefined {
    return this.options.retryAfterMs;
  }
}

/** Parses `Retry-After` (seconds or an HTTP date) into milliseconds from `now`. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (value === null || value.trim() === "") return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const date = Date.parse(value);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}

/** Classifies a non-2xx HTTP response. */
export function classifyHttpError(status: number, what: string, retryAfter: string | null, body: string): ForgeError {
  const detail = quote(body);
  if (status === 401) {
    return new ForgeError("Unauthorized", `${what}: the API token was rejected (401)${detail}`, { status });
  }
  if (status === 403) {
    return new ForgeError("Forbidden", `${what}: the API token lacks permission (403)${detail}`, { status });
  }
  if (status === 404) return new ForgeError("NotFound", `${what}: not found (404)${detail}`, { status });
  const retryAfterMs = parseRetryAfter(retryAfter);
  if (status === 429) {
    return new ForgeError("RateLimited", `${what}: rate limited (429)${detail}`, { status, retryAfterMs });
  }
  if (status >= 500) {
    return new ForgeError("ServerError", `${what}: server error (${status})${detail}`, { status, retryAfterMs });
  }
  return new ForgeError("InvalidResponse", `${what}: unexpected status ${status}${detail}`, { status });
}

/** The first bytes of a body, quoted for an error message. */
export function quote(body: string, limit = 120): string {
  const trimmed = body.trim();
  if (trimmed === "") return "";
  const head = trimmed.length > limit ? `${trimmed.slice(0, limit)}...` : trimmed;
  return `: ${JSON.stringify(head)}`;
}
