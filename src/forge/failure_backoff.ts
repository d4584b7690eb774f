/**
 * When a demand poller asks a failing forge target again.
 *
 * Two goals pull against each other: once the forge answers again, demand must be current within seconds (a job
 * queued during an outage waits for the first successful poll), and a struggling forge must not be hammered. The rule:
 *
 * - Every failure counts, whatever its kind. A 5xx, a timeout, a 401 or an HTML login page in place of JSON all mean
 *   "no demand known"; when the cause goes away (Gitea restarted, the token fixed, the SSO proxy reconfigured), the
 *   next attempt must come soon, so non-transient answers follow the same schedule as transient ones.
 * - The delay doubles from `initialMs` (a single failed request during a restart is retried quickly) and is capped at
 *   `maxMs`: recovery is noticed at most `maxMs` after the forge answers again, plus one request.
 * - Jitter spreads the pollers of a forge that failed together, within the upper half of the current ceiling. "Full"
 *   jitter (anywhere from 0) would allow attempts back to back; half of the ceiling as the floor keeps the rate of a
 *   failing target at most two attempts per `maxMs` (12 a minute with the defaults), whatever the dice say.
 * - A `Retry-After` of the forge is honoured, up to `maxRetryAfterMs`, so a misconfigured header cannot silence a
 *   target for hours.
 * - Webhook pokes and settle checks do not bring the next attempt of a failing target forward: a burst of deliveries
 *   would otherwise become a burst of requests to the failing endpoint. The wait is at most `maxMs` anyway.
 *
 * An attempt is one request in the common cases: the poller asks the first page of the jobs list, or, after a
 * non-transient error, the version first and the jobs only once the version answered. A separate cheap probe (such as
 * `GET /api/v1/version` alone) would not lower that: when only the jobs endpoint fails the probe succeeds, and an
 * attempt would cost two requests.
 */

export interface FailureBackoffOptions {
  /** The delay ceiling after the first failure; it doubles with each failure in a row. */
  initialMs: number;
  /** The largest delay ceiling: a recovered forge is noticed within this long. */
  maxMs: number;
  /** The longest `Retry-After` that is honoured. */
  maxRetryAfterMs: number;
}

export const defaultFailureBackoff: Readonly<FailureBackoffOptions> = {
  initialMs: 1_000,
  maxMs: 10_000,
  maxRetryAfterMs: 60_000,
};

/** The jitter-free ceiling of the delay after `failures` failures in a row (1 for the first). */
export function failureCeiling(failures: number, options: FailureBackoffOptions = defaultFailureBackoff): number {
  return Math.min(options.maxMs, options.initialMs * 2 ** Math.min(Math.max(failures, 1) - 1, 30));
}

/**
 * The delay before the next attempt after `failures` failures in a row: between half the ceiling and the ceiling
 * (`random` picks where, from [0, 1)), or the forge's `Retry-After` up to its bound when that is longer.
 */
export function failureDelay(
  failures: number,
  retryAfterMs: number | undefined,
  options: FailureBackoffOptions = defaultFailureBackoff,
  random: () => number = Math.random,
): number {
  const ceiling = failureCeiling(failures, options);
  const jittered = ceiling / 2 + random() * (ceiling / 2);
  const asked = Math.min(Math.max(retryAfterMs ?? 0, 0), options.maxRetryAfterMs);
  return Math.round(Math.max(jittered, asked));
}

/**
 * The most attempts a target makes while failing for `durationMs`, counting the first failed one: every delay at its
 * shortest. With the defaults: 15 in one minute, 63 in five.
 */
export function maxAttemptsDuring(durationMs: number, options: FailureBackoffOptions = defaultFailureBackoff): number {
  let attempts = 1;
  for (let at = failureDelay(1, undefined, options, () => 0); at <= durationMs; attempts++) {
    const delay = failureDelay(attempts + 1, undefined, options, () => 0);
    if (delay <= 0) return Infinity;
    at += delay;
  }
  return attempts;
}
