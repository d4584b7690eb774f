/**
 * The Forgejo runner in a runner pod: pure builders for its container (command, environment, the token file) and for
 * the Secret that holds a runner's own credentials on Forgejo >= 15.
 *
 * Two ways to connect, as Forgejo's documentation and its runner setup page describe them:
 * - Shared registration token (Forgejo 11 to 14): `forgejo-runner register --no-interactive --instance URL --token T
 *   --name N --labels L` writes the runner file, then `forgejo-runner one-job --wait` takes one job and exits. Before
 *   v15 Forgejo has no ephemeral runners: the registration stays behind (see the README).
 * - A runner of its own (Forgejo >= 15): the operator registers an ephemeral runner over the API
 *   (`POST .../actions/runners`) and keeps its uuid and token in a Secret; the pod runs
 *   `forgejo-runner one-job --url URL --uuid UUID --token-url file:PATH --handle H --label L --wait` (Forgejo v15.0.0
 *   templates/shared/actions/runner_setup.tmpl shows `--url`, `--uuid`, `--token-url` and `--label`; `one-job`,
 *   `--handle` and `--wait` need Forgejo Runner >= 12.8). The token is a file from the Secret, never an argument or a
 *   literal; the handle binds the runner to exactly its job. Forgejo deletes the ephemeral runner once its job is done.
 */
import type { V1EnvVar, V1OwnerReference, V1Secret, V1Volume, V1VolumeMount } from "@kubernetes/client-node";
import type { RunnerCredentials } from "../forge/forge_client.ts";
import { formatRunnerLabel, type RunnerLabel } from "../forge/labels.ts";

/** Forgejo Runner 12.12.0, the newest release when this was written; plain runner, no Docker daemon inside. */
export const defaultForgejoRunnerImage = "code.forgejo.org/forgejo/runner:12.12.0";
/** Where a runner of its own finds its token (a Secret volume). */
export const forgejoTokenDirectory = "/var/run/forgejo-runner";
const tokenVolume = "forgejo-runner-token";

/** The keys of a runner credentials Secret. */
export const runnerCredentialKeys = { uuid: "uuid", token: "token" } as const;

/** How the runner connects: with the scope's shared registration token, or with credentials of its own. */
export type ForgejoRegistration =
  | { sharedToken: { name: string; key: string } }
  | { credentialsSecret: string; handle?: string };

/** What the runner container needs beyond the image: its command, environment and volumes. */
export interface RunnerContainerSetup {
  command?: string[];
  args?: string[];
  env: V1EnvVar[];
  volumeMounts: V1VolumeMount[];
  volumes: V1Volume[];
}

/** The Forgejo runner's container for one runner pod. */
export function forgejoRunnerContainer(input: {
  instanceUrl: string;
  name: string;
  labels: readonly RunnerLabel[];
  registration: ForgejoRegistration;
}): RunnerContainerSetup {
  const labels = input.labels.map(formatRunnerLabel);
  const env: V1EnvVar[] = [
    { name: "FORGEJO_INSTANCE_URL", value: input.instanceUrl },
    { name: "FORGEJO_RUNNER_NAME", value: input.name },
    { name: "FORGEJO_RUNNER_LABELS", value: labels.join(",") },
  ];
  const registration = input.registration;
  if ("sharedToken" in registration) {
    env.push({
      name: "FORGEJO_RUNNER_REGISTRATION_TOKEN",
      valueFrom: { secretKeyRef: { name: registration.sharedToken.name, key: registration.sharedToken.key } },
    });
    // The shell expands the variables; the token never appears in the pod spec.
    const script = 'forgejo-runner register --no-interactive --instance "$FORGEJO_INSTANCE_URL" ' +
      '--token "$FORGEJO_RUNNER_REGISTRATION_TOKEN" --name "$FORGEJO_RUNNER_NAME" --labels "$FORGEJO_RUNNER_LABELS" ' +
      "&& exec forgejo-runner one-job --wait";
    return { command: ["/bin/sh", "-c", script], env, volumeMounts: [], volumes: [] };
  }
  env.push({
    name: "FORGEJO_RUNNER_UUID",
    valueFrom: { secretKeyRef: { name: registration.credentialsSecret, key: runnerCredentialKeys.uuid } },
  });
  if (registration.handle) env.push({ name: "FORGEJO_RUNNER_HANDLE", value: registration.handle });
  // Kubernetes expands $(VAR) in args from the container's environment, so no shell is needed.
  const args = [
    "one-job",
    "--url",
    "$(FORGEJO_INSTANCE_URL)",
    "--uuid",
    "$(FORGEJO_RUNNER_UUID)",
    "--token-url",
    `file:${forgejoTokenDirectory}/${runnerCredentialKeys.token}`,
    ...(registration.handle ? ["--handle", "$(FORGEJO_RUNNER_HANDLE)"] : []),
    ...labels.flatMap((label) => ["--label", label]),
    "--wait",
  ];
  return {
    command: ["forgejo-runner"],
    args,
    env,
    volumeMounts: [{ name: tokenVolume, mountPath: forgejoTokenDirectory, readOnly: true }],
    volumes: [{
      name: tokenVolume,
      secret: {
        secretName: registration.credentialsSecret,
        items: [{ key: runnerCredentialKeys.token, path: runnerCredentialKeys.token }],
      },
    }],
  };
}

/** The Secret holding one runner's own credentials: named after its runner Job. */
export function runnerCredentialsSecretName(jobName: string): string {
  return `${jobName}-runner`;
}

/**
 * The credentials Secret of one runner. It is created before its runner Job (so the pod never waits for it) owned by
 * the group, then handed to the Job (see {@linkcode jobOwnerReference}), so that it goes when the Job goes.
 */
export function buildRunnerCredentialsSecret(input: {
  namespace: string;
  jobName: string;
  labels: Record<string, string>;
  owner: V1OwnerReference;
  credentials: RunnerCredentials;
}): V1Secret {
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: {
      name: runnerCredentialsSecretName(input.jobName),
      namespace: input.namespace,
      labels: input.labels,
      annotations: { "gitea.bpg.pw/runner-id": String(input.credentials.id) },
      ownerReferences: [input.owner],
    },
    type: "Opaque",
    stringData: {
      [runnerCredentialKeys.uuid]: input.credentials.uuid,
      [runnerCredentialKeys.token]: input.credentials.token,
    },
  };
}

/** Makes a runner Job the owner of what exists for it alone (its credentials Secret). */
export function jobOwnerReference(job: { name: string; uid: string }): V1OwnerReference {
  return { apiVersion: "batch/v1", kind: "Job", name: job.name, uid: job.uid, blockOwnerDeletion: false };
}
