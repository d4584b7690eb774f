/**
 * The whole test world on one machine: a real control plane, the stand-in kubelet for runner pods, a real Gitea,
 * and the RunnerGroup CRD installed from `crds/`. Used by the end-to-end tests and the sandbox.
 */
import {
  ApiextensionsV1Api,
  BatchV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubernetesObjectApi,
  loadYaml,
  type V1CustomResourceDefinition,
  type V1Job,
} from "@kubernetes/client-node";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { type ClusterHarness, type ClusterOptions, startCluster } from "./cluster.ts";
import { type GiteaHarness, startGitea } from "./gitea.ts";
import { type RunnerKubelet, startRunnerKubelet } from "./kubelet.ts";
import { ensureTools, type ToolPaths } from "./tools.ts";
import { eventually } from "./wait.ts";

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const crdPath = join(repoRoot, "crds", "runnergroups.gitea.bpg.pw.yaml");

export interface Environment {
  tools: ToolPaths;
  cluster: ClusterHarness;
  kubelet: RunnerKubelet;
  gitea: GiteaHarness;
  core: CoreV1Api;
  batch: BatchV1Api;
  custom: CustomObjectsApi;
  objects: KubernetesObjectApi;
  /** A temporary folder for logs of this environment. */
  dir: string;
  dispose(): Promise<void>;
}

/** Installs the committed CRD and waits until it is established. */
export async function installCrd(cluster: ClusterHarness): Promise<void> {
  // loadYaml maps the file's field names (x-kubernetes-validations, ...) to the client's model; a plain YAML parse
  // would have the client's serializer silently drop them.
  const crd = loadYaml<V1CustomResourceDefinition>(await Deno.readTextFile(crdPath));
  const api = cluster.kubeConfig.makeApiClient(ApiextensionsV1Api);
  await api.createCustomResourceDefinition({ body: crd });
  await eventually("the RunnerGroup CRD to be established", async () => {
    const current = await api.readCustomResourceDefinition({ name: crd.metadata!.name! });
    return current.status?.conditions?.some((c) => c.type === "Established" && c.status === "True") ?? false;
  }, { timeoutMs: 30_000 });
}

export interface EnvironmentOptions {
  echo?: boolean;
  /** Which built Gitea to start ("1.26.0"). Default: `GRO_GITEA_VERSION`, else the newest. */
  giteaVersion?: string;
  /** Extra app.ini settings for Gitea, e.g. `{ webhook: { ALLOWED_HOST_LIST: "loopback" } }`. */
  giteaSettings?: Record<string, Record<string, string>>;
  /** More kube-apiserver flags (see {@linkcode ClusterOptions.apiServerArgs}). */
  apiServerArgs?: ClusterOptions["apiServerArgs"];
}

export async function startEnvironment(options: EnvironmentOptions = {}): Promise<Environment> {
  const tools = await ensureTools();
  const dir = await Deno.makeTempDir({ prefix: "gro-env-" });
  const cleanups: (() => Promise<void>)[] = [];
  const dispose = async (): Promise<void> => {
    for (const cleanup of cleanups.splice(0).reverse()) {
      await cleanup().catch(() => {});
    }
    // GRO_TEST_KEEP=1 keeps the logs (operator, runners) for a look after a failure.
    if (Deno.env.get("GRO_TEST_KEEP") !== "1") await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    const [cluster, gitea] = await Promise.all([
      startCluster({ echoOutput: options.echo, apiServerArgs: options.apiServerArgs }),
      startGitea({ version: options.giteaVersion, settings: options.giteaSettings }),
    ]);
    cleanups.push(() => cluster.dispose(), () => gitea.dispose());
    const kubelet = await startRunnerKubelet({
      kubeConfig: cluster.kubeConfig,
      runnerBinary: tools.testRunner,
      nodeName: cluster.nodeName,
      echoOutput: options.echo,
      dir: join(dir, "runners"),
    });
    cleanups.push(() => kubelet.stop());
    await installCrd(cluster);
    const kubeConfig = cluster.kubeConfig;
    return {
      tools,
      cluster,
      kubelet,
      gitea,
      core: kubeConfig.makeApiClient(CoreV1Api),
      batch: kubeConfig.makeApiClient(BatchV1Api),
      custom: kubeConfig.makeApiClient(CustomObjectsApi),
      objects: KubernetesObjectApi.makeApiClient(kubeConfig),
      dir,
      dispose,
    };
  } catch (error) {
    await dispose();
    throw error;
  }
}

/** Whether a Job has finished, by its Complete or Failed condition (read independently of the operator's code). */
export const isFinished = (job: V1Job): boolean =>
  (job.status?.conditions ?? []).some((c) => (c.type === "Complete" || c.type === "Failed") && c.status === "True");

/** A RunnerGroup as the tests read it back. */
export interface RunnerGroupObject {
  metadata: { name: string; namespace: string; uid: string };
  spec: Record<string, unknown>;
  status?: {
    activeRunners?: number;
    queuedJobs?: number;
    conditions?: { type: string; status: string; reason: string; message: string }[];
  };
}

const runnerGroupResource = { group: "gitea.bpg.pw", version: "v1alpha1", plural: "runnergroups" } as const;

/** Creates a RunnerGroup with the given spec (and metadata labels). */
export async function createRunnerGroup(
  custom: CustomObjectsApi,
  namespace: string,
  name: string,
  spec: Record<string, unknown>,
  labels?: Record<string, string>,
): Promise<RunnerGroupObject> {
  return await custom.createNamespacedCustomObject({
    ...runnerGroupResource,
    namespace,
    body: { apiVersion: "gitea.bpg.pw/v1alpha1", kind: "RunnerGroup", metadata: { name, labels }, spec },
  }) as RunnerGroupObject;
}

export async function getRunnerGroup(
  custom: CustomObjectsApi,
  namespace: string,
  name: string,
): Promise<RunnerGroupObject> {
  return await custom.getNamespacedCustomObject({ ...runnerGroupResource, namespace, name }) as RunnerGroupObject;
}

/** Waits until the operator has asked the forge for the group once (its ForgeReachable condition is True). */
export async function waitForFirstPoll(custom: CustomObjectsApi, namespace: string, name: string): Promise<void> {
  await eventually(`the first poll for ${namespace}/${name}`, async () => {
    const group = await getRunnerGroup(custom, namespace, name);
    return group.status?.conditions?.some((c) => c.type === "ForgeReachable" && c.status === "True");
  }, { timeoutMs: 60_000 });
}

export interface RepositorySetup {
  org: string;
  repo: string;
  /** The Kubernetes namespace to create, holding the token Secret. */
  namespace: string;
  /** Name of the token Secret. Default `tokens`. */
  secretName?: string;
  /** Store the repository's runner registration token under `registration`. Default true. */
  registrationToken?: boolean;
  /** More keys for the Secret. */
  extraSecretData?: Record<string, string>;
}

/**
 * The common start of a scenario: an organization and repository in Gitea, a namespace, and a Secret with the admin's
 * API token under `api` (and the repository's registration token under `registration`).
 */
export async function setUpRepository(env: Environment, setup: RepositorySetup): Promise<void> {
  const { gitea, core } = env;
  await gitea.createOrg(setup.org);
  await gitea.createRepo(setup.org, setup.repo);
  await core.createNamespace({ body: { metadata: { name: setup.namespace } } });
  const registration: Record<string, string> = setup.registrationToken === false
    ? {}
    : { registration: await gitea.registrationToken({ kind: "repo", owner: setup.org, repo: setup.repo }) };
  await core.createNamespacedSecret({
    namespace: setup.namespace,
    body: {
      metadata: { name: setup.secretName ?? "tokens" },
      stringData: { api: gitea.adminToken, ...registration, ...setup.extraSecretData },
    },
  });
}

/**
 * The RunnerGroup spec most scenarios start from, for a repository that {@linkcode setUpRepository} set up: repo scope,
 * the local Gitea, no default labels, at most 2 active runners, and both tokens from the `tokens` Secret. `overrides`
 * replaces or adds fields; an override of `undefined` leaves the field out (e.g. `registrationToken: undefined` for a
 * group whose registration token the operator asks the forge for).
 */
export function repoGroupSpec(
  env: Pick<Environment, "gitea">,
  repository: { org: string; repo: string },
  overrides: Record<string, unknown> = {},
): Record<string, unknown> {
  const spec: Record<string, unknown> = {
    scope: "repo",
    org: repository.org,
    repo: repository.repo,
    giteaURL: env.gitea.url.replace(/\/$/, ""),
    defaultLabels: false,
    maxActiveRunners: 2,
    authToken: { name: "tokens", key: "api" },
    registrationToken: { name: "tokens", key: "registration" },
    ...overrides,
  };
  return Object.fromEntries(Object.entries(spec).filter(([, value]) => value !== undefined));
}
