/**
 * Forgejo >= 15: a runner of its own for each runner Job, so that no shared registration token reaches a pod. Part of
 * the apply stage. In order, so that the pod never starts before its credentials exist:
 *
 *   1. register an ephemeral runner named after the Job (`POST .../actions/runners`) -> `{id, uuid, token}`;
 *   2. store uuid and token in the Secret `<job>-runner`, owned by the group for now;
 *   3. create the runner Job, which reads them from that Secret;
 *   4. hand the Secret to the Job (its only owner), so the garbage collector removes it with the Job.
 *
 * Forgejo deletes an ephemeral runner once its task is final (routers/api/actions/runner/runner.go UpdateTask,
 * v15.0.0). A registration whose runner never ran a task (its job was cancelled, its pod failed) is offline and named
 * like the group's runners: the orphan sweep (cleanup.ts) deletes it once its runner Job is gone. A create that fails
 * midway removes what it made. One that meets an existing runner Job of the group (a repeated create) leaves its
 * registration to that sweep, as the pod may already use either, and hands the Secret (which step 2 rewrote and gave
 * back to the group) to that Job, so that it still goes with the Job; a Job of that name that is not the group's is
 * not touched, and the registration and Secret are removed.
 */
import type { V1Job, V1Secret } from "@kubernetes/client-node";
import type { BatchV1Api, CoreV1Api } from "../kube/api.ts";
import type { ForgeClient, JobsEndpoint } from "../forge/forge_client.ts";
import { apiMessage, apiStatus } from "../kube/client.ts";
import { describeError, type logger, registerSecret } from "../log.ts";
import { buildRunnerCredentialsSecret, jobOwnerReference } from "./forgejo_runner.ts";
import { groupOwnerReference, labelKeys, managedBy } from "./runner_job.ts";

export interface RegisteredRunnerInput {
  batch: BatchV1Api;
  core: CoreV1Api;
  client: ForgeClient;
  endpoint: JobsEndpoint;
  group: { name: string; uid: string };
  /** The runner Job, built to read its credentials from `runnerCredentialsSecretName(job name)`. */
  job: V1Job;
  /** Said in the registration's description, e.g. "job 42 of acme/app". */
  purpose: string;
  log: ReturnType<typeof logger>;
}

/**
 * Registers the runner, stores its credentials and creates its Job; resolves with the created Job, or undefined when
 * the Job existed already.
 */
export async function createRegisteredRunnerJob(input: RegisteredRunnerInput): Promise<V1Job | undefined> {
  const { core, batch, client, endpoint, job, log } = input;
  const namespace = job.metadata!.namespace!;
  const jobName = job.metadata!.name!;
  const credentials = await client.registerRunner(endpoint, {
    name: jobName,
    description: `Ephemeral runner for ${input.purpose}, started by gitea-runner-operator`,
  });
  registerSecret(credentials.token);
  const secret = buildRunnerCredentialsSecret({
    namespace,
    jobName,
    labels: {
      [labelKeys.managedBy]: managedBy,
      [labelKeys.component]: "runner-credentials",
      [labelKeys.groupUid]: input.group.uid,
    },
    owner: groupOwnerReference(input.group),
    credentials,
  });
  const secretName = secret.metadata!.name!;
  const forget = async (): Promise<void> => {
    await client.deleteRunner(endpoint, credentials.id).catch((error) =>
      log.warn("Cannot delete runner registration {id}: {error}", { id: credentials.id, error: describeError(error) })
    );
    await core.deleteNamespacedSecret({ namespace, name: secretName }).catch(() => {});
  };

  try {
    await writeSecret(core, secret);
  } catch (error) {
    await forget();
    throw error;
  }
  let created: V1Job | undefined;
  try {
    created = await createJobOnce(batch, job, log);
  } catch (error) {
    await forget();
    throw error;
  }
  const handSecretTo = async (owner: V1Job): Promise<void> => {
    try {
      const owned: V1Secret = {
        ...secret,
        metadata: {
          ...secret.metadata,
          ownerReferences: [jobOwnerReference({ name: jobName, uid: owner.metadata!.uid! })],
        },
      };
      await core.replaceNamespacedSecret({ namespace, name: secretName, body: owned });
    } catch (error) {
      // The Job runs either way; the Secret then stays until the group goes.
      log.warn("Cannot hand Secret {secret} to runner Job {jobName}: {error}", {
        secret: secretName,
        jobName,
        error: apiMessage(error),
      });
    }
  };
  if (created) {
    await handSecretTo(created);
    return created;
  }
  const existing = await batch.readNamespacedJob({ namespace, name: jobName }).catch((error) => {
    log.warn("Cannot read runner Job {jobName}, which exists already: {error}", { jobName, error: apiMessage(error) });
    return undefined;
  });
  if (existing?.metadata?.labels?.[labelKeys.groupUid] === input.group.uid) await handSecretTo(existing);
  else if (existing) await forget();
  return undefined;
}

/**
 * Creates a runner Job (both apply paths, with or without a registration of its own); undefined when a Job of its name
 * exists already, created by an earlier attempt.
 */
export async function createJobOnce(
  batch: BatchV1Api,
  job: V1Job,
  log: ReturnType<typeof logger>,
): Promise<V1Job | undefined> {
  const { namespace, name } = job.metadata as { namespace: string; name: string };
  try {
    return await batch.createNamespacedJob({ namespace, body: job });
  } catch (error) {
    if (apiStatus(error) === 409) {
      log.debug("Runner Job {jobName} exists already", { jobName: name });
      return undefined;
    }
    throw new Error(`Cannot create runner Job ${namespace}/${name}: ${apiMessage(error)}`, { cause: error });
  }
}

/** Creates the credentials Secret, or replaces one left by an interrupted earlier attempt (its Job does not exist). */
async function writeSecret(core: CoreV1Api, secret: V1Secret): Promise<void> {
  const { namespace, name } = secret.metadata as { namespace: string; name: string };
  try {
    await core.createNamespacedSecret({ namespace, body: secret });
  } catch (error) {
    if (apiStatus(error) !== 409) {
      throw new Error(`Cannot create Secret ${namespace}/${name}: ${apiMessage(error)}`, { cause: error });
    }
    try {
      await core.replaceNamespacedSecret({ namespace, name, body: secret });
    } catch (replaceError) {
      throw new Error(`Cannot replace Secret ${namespace}/${name}: ${apiMessage(replaceError)}`, {
        cause: replaceError,
      });
    }
  }
}
