/**
 * The runner pod: the group's `spec.template` (a full pod template, its shorthand fields, or both) merged with what
 * the operator owns. Pure. The rules, in the order they apply:
 *
 * 1. `template.spec` is the base: every field of it is kept as written (imagePullSecrets, securityContext, init and
 *    sidecar containers, dnsConfig, hostAliases, topologySpreadConstraints, ...). The API server validates it when
 *    the runner Job is created, and first in a dry run (see template_check.ts).
 * 2. A shorthand field (`template.image`, `template.nodeSelector`, ...) wins over the same field of `template.spec`;
 *    lists (tolerations, volumes, volumeMounts) are joined, the shorthand's items last; maps (nodeSelector, pod labels
 *    and annotations, env by name) are merged key by key, the shorthand winning.
 * 3. The operator keeps: the runner container's identity (the container named `runner`, added first when the
 *    template has none), its registration environment (a user variable of the same name is dropped), the Forgejo
 *    runner's command and arguments, the pod's `restartPolicy: Never`, the identity labels and the job annotations.
 *    It sets defaults a user can override: `automountServiceAccountToken: false`, pull policy `IfNotPresent`, the
 *    runner container's security context, and the annotations that keep node autoscalers from evicting a running
 *    runner ({@linkcode defaultRunnerPodAnnotations}).
 */
import type {
  V1Container,
  V1EnvVar,
  V1PodSpec,
  V1PodTemplateSpec,
  V1SecurityContext,
  V1Toleration,
  V1Volume,
  V1VolumeMount,
} from "@kubernetes/client-node";
import type { RunnerContainerSetup } from "./forgejo_runner.ts";
import type { RunnerTemplate } from "./schema.ts";

/** The container that runs the runner; a template container of this name is the base for it. */
export const runnerContainerName = "runner";

/**
 * Annotations on every runner pod unless the template sets the same key: the cluster autoscaler (FAQ, "What types of
 * pods can prevent CA from removing a node?") and Karpenter (`karpenter.sh/do-not-disrupt`, GA in v1; it replaced
 * `do-not-evict`) then neither evict a runner for a scale-down or consolidation nor remove its node while it runs.
 * A runner's job cannot move: evicting it loses the job.
 */
export const defaultRunnerPodAnnotations: Readonly<Record<string, string>> = {
  "cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
  "karpenter.sh/do-not-disrupt": "true",
};

export interface RunnerPodInput {
  template: RunnerTemplate;
  /** What the operator puts in the runner container: its environment, and for Forgejo its command and files. */
  setup: RunnerContainerSetup;
  /** The image when neither `template.image` nor the template's runner container names one. */
  defaultImage: string;
  /** Whether the runner container is privileged when the template says nothing about it. */
  privilegedByDefault: boolean;
  /** The operator's labels; they win over the template's. */
  identityLabels: Record<string, string>;
  /** The operator's annotations (the job's repository, run, ...); they win over the template's. */
  annotations: Record<string, string>;
}

/** Builds the runner Job's pod template by the rules above. */
export function buildRunnerPodTemplate(input: RunnerPodInput): V1PodTemplateSpec {
  const { template } = input;
  const user = (template.spec ?? {}) as V1PodSpec;
  const userContainers = user.containers ?? [];
  const index = userContainers.findIndex((container) => container.name === runnerContainerName);
  const runner = runnerContainer(index >= 0 ? userContainers[index] : { name: runnerContainerName }, input);
  // The runner stays where the template put it; added, it comes first, so `kubectl logs` shows it by default.
  const containers = index >= 0 ? userContainers.with(index, runner) : [runner, ...userContainers];

  const nodeSelector = { ...user.nodeSelector, ...template.nodeSelector };
  const tolerations = [...(user.tolerations ?? []), ...(template.tolerations ?? []) as V1Toleration[]];
  const volumes = [
    ...input.setup.volumes,
    ...(user.volumes ?? []),
    ...(template.volumes ?? []) as unknown as V1Volume[],
  ];
  const spec: V1PodSpec = withoutUndefined({
    ...user,
    containers,
    // One runner, one attempt: a runner that exits is done, and the Job must see its pod fail or succeed.
    restartPolicy: "Never",
    automountServiceAccountToken: template.automountServiceAccountToken ?? user.automountServiceAccountToken ?? false,
    serviceAccountName: template.serviceAccountName ?? user.serviceAccountName,
    nodeSelector: Object.keys(nodeSelector).length > 0 ? nodeSelector : undefined,
    tolerations: tolerations.length > 0 ? tolerations : undefined,
    affinity: (template.affinity as V1PodSpec["affinity"]) ?? user.affinity,
    volumes: volumes.length > 0 ? volumes : undefined,
    priorityClassName: template.priorityClassName ?? user.priorityClassName,
    runtimeClassName: template.runtimeClassName ?? user.runtimeClassName,
  });
  return {
    metadata: {
      labels: { ...template.metadata?.labels, ...template.podLabels, ...input.identityLabels },
      annotations: {
        ...defaultRunnerPodAnnotations,
        ...template.metadata?.annotations,
        ...template.podAnnotations,
        ...input.annotations,
      },
    },
    spec,
  };
}

/** The runner container: the template's container named `runner` (if any) with the shorthand and the operator's parts. */
function runnerContainer(base: V1Container, input: RunnerPodInput): V1Container {
  const { template, setup } = input;
  const reserved = new Set(setup.env.map((variable) => variable.name));
  const userEnv = mergeByName(base.env ?? [], (template.env ?? []) as V1EnvVar[])
    .filter((variable) => !reserved.has(variable.name));
  const volumeMounts = [
    ...setup.volumeMounts,
    ...(base.volumeMounts ?? []),
    ...(template.volumeMounts ?? []) as unknown as V1VolumeMount[],
  ];
  return withoutUndefined({
    ...base,
    name: runnerContainerName,
    image: template.image ?? base.image ?? input.defaultImage,
    imagePullPolicy: template.imagePullPolicy ?? base.imagePullPolicy ?? "IfNotPresent",
    // The Forgejo runner's command carries how it connects; Gitea's image starts the runner from its environment, so
    // a command of the template's stays.
    command: setup.command ?? base.command,
    args: setup.command ? setup.args : base.args,
    env: [...setup.env, ...userEnv],
    securityContext: runnerSecurityContext(base.securityContext, template.privileged, input.privilegedByDefault),
    resources: (template.resources as V1Container["resources"]) ?? base.resources,
    volumeMounts: volumeMounts.length > 0 ? volumeMounts : undefined,
  });
}

/**
 * The template's security context of the runner container as written, with `template.privileged` applied when set;
 * without one, privileged or not (then without privilege escalation) by `template.privileged` or the forge's default.
 */
function runnerSecurityContext(
  user: V1SecurityContext | undefined,
  privileged: boolean | undefined,
  privilegedByDefault: boolean,
): V1SecurityContext {
  if (user === undefined) {
    return privileged ?? privilegedByDefault ? { privileged: true } : { allowPrivilegeEscalation: false };
  }
  if (privileged === undefined) return user;
  if (privileged) return { ...user, privileged: true };
  return { ...user, privileged: false, allowPrivilegeEscalation: user.allowPrivilegeEscalation ?? false };
}

/** `base` with the items of `override` replacing those of the same name, new names appended. */
function mergeByName<T extends { name: string }>(base: readonly T[], override: readonly T[]): T[] {
  const names = new Set(override.map((item) => item.name));
  return [...base.filter((item) => !names.has(item.name)), ...override];
}

/** The object without its undefined properties, so that the built Job says only what is set. */
function withoutUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, item]) => item !== undefined)) as T;
}
