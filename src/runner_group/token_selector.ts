/**
 * What `optional` on a RunnerGroup's token selectors means. The selectors are core/v1 SecretKeySelectors, as in the Go
 * operator's CRD, where `optional: true` says the Secret or its key may be missing; what the operator then does
 * differs per token:
 *
 * - `registrationToken`: a missing Secret or key of an optional selector is treated as no selector at all: the
 *   operator obtains the scope's token with `authToken` and keeps it in the Secret it owns
 *   (`managedRegistrationSecret`). It never writes to the Secret the selector names; once that Secret and key exist,
 *   runner pods use them again.
 * - `authToken`: accepted, and it changes nothing. Without an API token the operator cannot see a single job, so there
 *   is nothing useful to do instead: a missing Secret or key is reported in status and no runner starts, as without
 *   `optional`.
 */
import { managedRegistrationSecret } from "./runner_job.ts";
import type { SecretKeySelector } from "./schema.ts";

/** The result of reading a selector's Secret key: found, or missing (the Secret, or the key in it). */
export interface SecretKeyLookup {
  ok: boolean;
}

/** Where runner pods read the registration token, and whether the operator keeps that Secret itself. */
export interface RegistrationTokenSource {
  secret: { name: string; key: string };
  /** The operator obtains the token from the forge and keeps it in `secret`. */
  managed: boolean;
}

/**
 * The registration token's source for a group, given its selector and, when it has one, the lookup of the key it
 * names: the operator-kept Secret without a selector, or when an optional selector's Secret or key is missing; the
 * named key otherwise (a missing required key is then reported by the caller).
 */
export function registrationTokenSource(
  groupName: string,
  selector: SecretKeySelector | undefined,
  lookup: SecretKeyLookup | undefined,
): RegistrationTokenSource {
  if (selector === undefined || (selector.optional === true && lookup?.ok === false)) {
    return { secret: managedRegistrationSecret(groupName), managed: true };
  }
  return { secret: { name: selector.name, key: selector.key }, managed: false };
}
