/**
 * Stage 2 of the reconcile: the group's tokens. The API token and the runner registration token come from Secrets
 * the group names; without `spec.registrationToken` the operator keeps the registration token in a Secret of its own,
 * created with a token from the forge's registration-token endpoint of the group's scope.
 */
import type { V1Secret } from "@kubernetes/client-node";
import type { CoreV1Api } from "../kube/api.ts";
import { ForgeError } from "../forge/errors.ts";
import { type ForgeClient, forgeNames } from "../forge/forge_client.ts";
import type { EventRecorder, EventTarget } from "../kube/events.ts";
import { apiMessage, apiStatus, decodeSecretData } from "../kube/client.ts";
import { registerSecret } from "../log.ts";
import { forgeTargetOf } from "./demand.ts";
import { groupOwnerReference, labelKeys, managedBy, managedRegistrationSecret } from "./runner_job.ts";
import { registrationTokenSource } from "./token_selector.ts";
import type { RunnerGroup, RunnerGroupSpec, SecretKeySelector } from "./schema.ts";

/** Reads a Secret; undefined when it does not exist. */
export type SecretReader = (namespace: string, name: string) => Promise<V1Secret | undefined>;

/** A SecretReader that asks the API server each time (used where no Secret cache runs, e.g. `check`). */
export function secretReaderOf(core: CoreV1Api): SecretReader {
  return async (namespace, name) => {
    try {
      return await core.readNamespacedSecret({ namespace, name });
    } catch (error) {
      if (apiStatus(error) === 404) return undefined;
      throw new Error(`Cannot read Secret ${namespace}/${name}: ${apiMessage(error)}`, { cause: error });
    }
  };
}

export type SecretRead = { ok: true; value: string } | {
  ok: false;
  reason: "SecretNotFound" | "KeyNotFound";
  message: string;
};

/** Reads one key of a Secret, trimmed; a missing Secret, key or an empty value is a reason, not an exception. */
export async function readSecretKey(
  read: SecretReader,
  namespace: string,
  selector: SecretKeySelector,
  field: string,
): Promise<SecretRead> {
  const secret = await read(namespace, selector.name);
  if (!secret) {
    return {
      ok: false,
      reason: "SecretNotFound",
      message: `Secret ${namespace}/${selector.name} does not exist (spec.${field})`,
    };
  }
  const encoded = secret.data?.[selector.key];
  if (encoded === undefined) {
    return {
      ok: false,
      reason: "KeyNotFound",
      message: `Secret ${namespace}/${selector.name} has no key "${selector.key}" (spec.${field})`,
    };
  }
  const value = decodeSecretData(encoded).trim();
  if (value === "") {
    return {
      ok: false,
      reason: "KeyNotFound",
      message: `Key "${selector.key}" of Secret ${namespace}/${selector.name} is empty (spec.${field})`,
    };
  }
  return { ok: true, value };
}

/** The group's tokens, or why they cannot be had. */
export type Credentials =
  | {
    ok: true;
    apiToken: string;
    /** Empty when the group's runners register one by one (Forgejo >= 15) and no shared token is kept. */
    registrationToken: string;
    /** Where runner pods read the registration token from. */
    registrationSecret: { name: string; key: string };
    /** Whether the operator keeps that Secret (and may renew the token in it). */
    managed: boolean;
  }
  | { ok: false; reason: "SecretNotFound" | "KeyNotFound"; message: string };

export interface CredentialsOptions {
  core: CoreV1Api;
  readSecret: SecretReader;
  events: EventRecorder;
  /** A client for the group's forge with an API token (detecting the forge once, see ForgeDetector). */
  forgeClient: (spec: RunnerGroupSpec, token: string) => Promise<ForgeClient>;
}

/**
 * Resolves the group's tokens. Throws a ForgeError when the forge refuses or fails to hand out a registration token
 * for the managed Secret (the caller reports it like a failed poll).
 */
export async function resolveCredentials(
  options: CredentialsOptions,
  group: RunnerGroup,
  spec: RunnerGroupSpec,
  target: EventTarget,
): Promise<Credentials> {
  const namespace = group.metadata.namespace;
  const auth = await readSecretKey(options.readSecret, namespace, spec.authToken, "authToken");
  if (!auth.ok) return auth;
  const named = spec.registrationToken
    ? await readSecretKey(options.readSecret, namespace, spec.registrationToken, "registrationToken")
    : undefined;
  // Without a selector, or an optional one whose Secret or key is missing, the operator keeps the token itself.
  const source = registrationTokenSource(group.metadata.name, spec.registrationToken, named);
  const registration = source.managed
    ? await ensureRegistrationSecret(options, group, spec, auth.value, source.secret, target)
    : named!;
  if (!registration.ok) return registration;
  registerSecret(auth.value);
  registerSecret(registration.value);
  return {
    ok: true,
    apiToken: auth.value,
    registrationToken: registration.value,
    registrationSecret: source.secret,
    managed: source.managed,
  };
}

/**
 * For a group without spec.registrationToken: the Secret the operator keeps, owned by the group, created with a
 * token from the forge's registration-token endpoint of the group's scope (asked only when the Secret is missing).
 */
async function ensureRegistrationSecret(
  options: CredentialsOptions,
  group: RunnerGroup,
  spec: RunnerGroupSpec,
  apiToken: string,
  selector: { name: string; key: string },
  target: EventTarget,
): Promise<SecretRead> {
  const namespace = group.metadata.namespace;
  const existing = await readSecretKey(
    options.readSecret,
    namespace,
    selector,
    "registrationToken (kept by the operator)",
  );
  if (existing.ok) return existing;
  const client = await options.forgeClient(spec, apiToken);
  // Forgejo 15 registers each runner on its own (see runner_registration.ts): no shared token is kept.
  if (client.features.runnerRegistration) return { ok: true, value: "" };
  const token = await client.createRegistrationToken(forgeTargetOf(spec, apiToken).endpoint);
  registerSecret(token);
  await writeManagedSecret(
    options,
    group,
    selector,
    token,
    existing.reason === "SecretNotFound" ? "create" : "replace",
  );
  void options.events.record(
    target,
    "Normal",
    "RegistrationTokenStored",
    `Stored a runner registration token from ${forgeNames[client.forge.kind]} in Secret ${namespace}/${selector.name}`,
  );
  return { ok: true, value: token };
}

/** The Secrets a group reads: its API token's, and its registration token's (named, or the one the operator keeps). */
export function secretsOf(group: RunnerGroup): { namespace: string; name: string }[] {
  const spec = group.spec as Partial<RunnerGroupSpec> | undefined;
  const namespace = group.metadata.namespace;
  const names = new Set<string>();
  if (typeof spec?.authToken?.name === "string" && spec.authToken.name !== "") names.add(spec.authToken.name);
  const registration = spec?.registrationToken;
  if (typeof registration?.name === "string" && registration.name !== "") names.add(registration.name);
  // The Secret the operator keeps: without a selector, or with an optional one whose Secret or key may be missing.
  if (!registration?.name || registration.optional === true) {
    names.add(managedRegistrationSecret(group.metadata.name).name);
  }
  return [...names].map((name) => ({ namespace, name }));
}

/** Creates or replaces the Secret the operator keeps for a group's registration token (owned by the group). */
async function writeManagedSecret(
  options: Pick<CredentialsOptions, "core">,
  group: RunnerGroup,
  selector: { name: string; key: string },
  token: string,
  mode: "create" | "replace",
): Promise<void> {
  const namespace = group.metadata.namespace;
  const body = {
    metadata: {
      name: selector.name,
      namespace,
      labels: { [labelKeys.managedBy]: managedBy, [labelKeys.groupUid]: group.metadata.uid },
      ownerReferences: [groupOwnerReference({ name: group.metadata.name, uid: group.metadata.uid })],
    },
    type: "Opaque",
    stringData: { [selector.key]: token },
  };
  try {
    if (mode === "create") await options.core.createNamespacedSecret({ namespace, body });
    else await options.core.replaceNamespacedSecret({ namespace, name: selector.name, body });
  } catch (error) {
    if (apiStatus(error) !== 409) {
      throw new Error(`Cannot write Secret ${namespace}/${selector.name}: ${apiMessage(error)}`, { cause: error });
    }
  }
}

/** How often the forge's current registration token of a target is compared with the groups' Secrets. */
export const tokenCheckIntervalMs = 5 * 60_000;
/** A runner failure asks for a check sooner, but not more often than this per target. */
export const tokenRecheckAfterFailureMs = 10_000;

/** The outcome of a registration-token check, for the group's status. */
export type TokenCheck =
  | { state: "current" | "unchecked" | "renewed" }
  | { state: "refused"; message: string };

/**
 * Notices a registration token reset in the forge (an administrator's "reset registration token" makes Gitea refuse
 * the old one: `NewRunnerToken` deactivates the scope's other tokens, models/actions/runner_token.go in Gitea 1.26).
 * Gitea's registration-token endpoint hands out the scope's current token without changing it (`GetRegistrationToken`,
 * routers/api/v1/shared/runners.go), so asking is safe. The answer is kept per forge target, so groups that share a
 * scope and API token share one request per check interval; a runner Job of the group that failed after the last
 * check asks for a check sooner (runners fail when the forge refuses their token).
 *
 * A managed Secret with a token other than the current one is updated, with an event; a group's own
 * `registrationToken` is never written by the operator: the group's status says the token was refused.
 */
export class RegistrationTokenCheck {
  readonly #current = new Map<string, { checkedAt: number; token: string }>();
  readonly #refused = new Map<string, string>();

  constructor(readonly options: CredentialsOptions) {}

  async check(input: {
    groupKey: string;
    group: RunnerGroup;
    spec: RunnerGroupSpec;
    credentials: Extract<Credentials, { ok: true }>;
    /** The poller's key of the group's target: the scope and API token. */
    targetKey: string;
    /** When the group's latest runner Job failure happened (ms since epoch), or -Infinity. */
    lastFailureAt: number;
    target: EventTarget;
    now: number;
  }): Promise<TokenCheck> {
    const { groupKey, group, spec, credentials, now } = input;
    const managed = credentials.managed;
    // No shared token to check where runners register one by one (Forgejo 15: the endpoint is deprecated there).
    if (credentials.registrationToken === "") return { state: "unchecked" };
    let known = this.#current.get(input.targetKey);
    const due = known === undefined ? managed || input.lastFailureAt > -Infinity : now - known.checkedAt >=
        tokenCheckIntervalMs ||
      (input.lastFailureAt > known.checkedAt && now - known.checkedAt >= tokenRecheckAfterFailureMs);
    if (due) {
      try {
        const client = await this.options.forgeClient(spec, credentials.apiToken);
        const token = await client.createRegistrationToken(forgeTargetOf(spec, credentials.apiToken).endpoint);
        registerSecret(token);
        known = { checkedAt: now, token };
        this.#current.set(input.targetKey, known);
      } catch (error) {
        // A token without the right to ask (403), or a forge that does not answer: the next check tries again.
        if (!(error instanceof ForgeError)) throw error;
        this.#current.set(input.targetKey, { checkedAt: now, token: known?.token ?? credentials.registrationToken });
        return { state: "unchecked" };
      }
    }
    if (!known || known.token === credentials.registrationToken) {
      this.#refused.delete(groupKey);
      return { state: known ? "current" : "unchecked" };
    }
    const namespace = group.metadata.namespace;
    const secret = credentials.registrationSecret;
    if (managed) {
      await writeManagedSecret(this.options, group, secret, known.token, "replace");
      void this.options.events.record(
        input.target,
        "Normal",
        "RegistrationTokenRenewed",
        `The forge no longer accepts the registration token in Secret ${namespace}/${secret.name} (it was reset): ` +
          "stored the current one; new runners use it",
      );
      return { state: "renewed" };
    }
    // Only a runner failure makes an own token suspect: it may be another scope's (an org token for a repo group).
    if (input.lastFailureAt === -Infinity && !this.#refused.has(groupKey)) return { state: "current" };
    const message = `The registration token in Secret ${namespace}/${secret.name} (key "${secret.key}") is not the ` +
      "current token of the group's scope in the forge, and a runner failed: it was reset, or belongs to another " +
      "scope; put the current token in the Secret";
    if (this.#refused.get(groupKey) !== credentials.registrationToken) {
      void this.options.events.record(input.target, "Warning", "RegistrationTokenRefused", message);
    }
    this.#refused.set(groupKey, credentials.registrationToken);
    return { state: "refused", message };
  }

  /** Forgets a group (deleted). */
  forget(groupKey: string): void {
    this.#refused.delete(groupKey);
  }
}
