/**
 * Stage 2 of the reconcile: the group's tokens. The API token and the runner registration token come from Secrets
 * the group names; without `spec.registrationToken` the operator keeps the registration token in a Secret of its own,
 * created with a token from the forge's registration-token endpoint of the group's scope.
 */
import type { CoreV1Api, V1Secret } from "@kubernetes/client-node";
import type { GiteaClient } from "../forge/gitea_client.ts";
import type { EventRecorder, EventTarget } from "../kube/events.ts";
import { apiMessage, apiStatus, decodeSecretData } from "../kube/client.ts";
import { registerSecret } from "../log.ts";
import { forgeTargetOf } from "./demand.ts";
import { groupOwnerReference, labelKeys, managedBy, managedRegistrationSecret } from "./runner_job.ts";
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
    registrationToken: string;
    /** Where runner pods read the registration token from. */
    registrationSecret: { name: string; key: string };
  }
  | { ok: false; reason: "SecretNotFound" | "KeyNotFound"; message: string };

export interface CredentialsOptions {
  core: CoreV1Api;
  readSecret: SecretReader;
  events: EventRecorder;
  /** A forge client for an API token. */
  forgeClient: (spec: RunnerGroupSpec, token: string) => GiteaClient;
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
  const registrationSecret = spec.registrationToken ?? managedRegistrationSecret(group.metadata.name);
  const registration = spec.registrationToken
    ? await readSecretKey(options.readSecret, namespace, spec.registrationToken, "registrationToken")
    : await ensureRegistrationSecret(options, group, spec, auth.value, registrationSecret, target);
  if (!registration.ok) return registration;
  registerSecret(auth.value);
  registerSecret(registration.value);
  return { ok: true, apiToken: auth.value, registrationToken: registration.value, registrationSecret };
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
  const client = options.forgeClient(spec, apiToken);
  const token = await client.createRegistrationToken(forgeTargetOf(spec, apiToken).endpoint);
  registerSecret(token);
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
    if (existing.reason === "SecretNotFound") {
      await options.core.createNamespacedSecret({ namespace, body });
    } else {
      await options.core.replaceNamespacedSecret({ namespace, name: selector.name, body });
    }
  } catch (error) {
    if (apiStatus(error) !== 409) {
      throw new Error(`Cannot write Secret ${namespace}/${selector.name}: ${apiMessage(error)}`, { cause: error });
    }
  }
  await options.events.record(
    target,
    "Normal",
    "RegistrationTokenStored",
    `Stored a runner registration token from Gitea in Secret ${namespace}/${selector.name}`,
  );
  return { ok: true, value: token };
}

/** The Secrets a group reads: its API token's, and its registration token's (named, or the one the operator keeps). */
export function secretsOf(group: RunnerGroup): { namespace: string; name: string }[] {
  const spec = group.spec as Partial<RunnerGroupSpec> | undefined;
  const namespace = group.metadata.namespace;
  const names = new Set<string>();
  if (typeof spec?.authToken?.name === "string" && spec.authToken.name !== "") names.add(spec.authToken.name);
  const registration = spec?.registrationToken?.name;
  names.add(
    typeof registration === "string" && registration !== ""
      ? registration
      : managedRegistrationSecret(group.metadata.name).name,
  );
  return [...names].map((name) => ({ namespace, name }));
}
