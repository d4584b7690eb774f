/**
 * The pod status the stand-in kubelet writes through `pods/status` at each step of a runner pod: Pending with a
 * container configuration error, Running while the runner lives, Succeeded or Failed with its exit code, and Failed for
 * a deleted pod whose runner never started. The fields follow what a v1.35 kubelet reports.
 */
import type { V1Container, V1Pod } from "@kubernetes/client-node";
import { hostIp, runnerContainerName } from "./pod_env.ts";
import type { RunnerPodObservation } from "./kubelet.ts";

/** What a status is written for: the pod's uid and, once its runner started, what the stand-in saw of it. */
export interface StatusSource {
  readonly uid: string;
  readonly observation?: Pick<RunnerPodObservation, "startedAt" | "exitCode" | "finishedAt">;
}

function condition(type: string, status: boolean, reason?: string): Record<string, unknown> {
  return { type, status: status ? "True" : "False", lastTransitionTime: new Date().toISOString(), reason };
}

/** The pod conditions a kubelet owns (Kubernetes v1.35 pkg/kubelet/types/pod_status.go PodConditionsByKubelet). */
const kubeletConditions = new Set([
  "PodScheduled",
  "Ready",
  "Initialized",
  "ContainersReady",
  "PodResizeInProgress",
  "PodResizePending",
  "PodReadyToStartContainers",
]);

/**
 * The kubelet's conditions followed by those others set, such as `DisruptionTarget` (the Eviction API, the pod
 * garbage collector): a kubelet keeps them (generateAPIPodStatus in v1.35 pkg/kubelet/kubelet_pods.go), and the
 * status is written with a merge patch, which replaces the whole list.
 */
function withOthersConditions(pod: V1Pod, own: Record<string, unknown>[]): unknown[] {
  return [...own, ...(pod.status?.conditions ?? []).filter((c) => !kubeletConditions.has(c.type))];
}

function addresses(pod: V1Pod): Record<string, unknown> {
  return {
    hostIP: hostIp,
    hostIPs: [{ ip: hostIp }],
    podIP: hostIp,
    podIPs: [{ ip: hostIp }],
    startTime: pod.status?.startTime ?? new Date().toISOString(),
  };
}

function containers(pod: V1Pod): V1Container[] {
  return pod.spec?.containers ?? [];
}

function containerId(record: StatusSource, container: V1Container): string {
  return `harness://${record.uid}/${container.name}`;
}

export function pendingStatus(pod: V1Pod, message: string): Record<string, unknown> {
  return {
    phase: "Pending",
    ...addresses(pod),
    conditions: withOthersConditions(pod, [
      condition("PodScheduled", true),
      condition("PodReadyToStartContainers", true),
      condition("Initialized", true),
      condition("ContainersReady", false, "ContainersNotReady"),
      condition("Ready", false, "ContainersNotReady"),
    ]),
    containerStatuses: containers(pod).map((container) => ({
      name: container.name,
      image: container.image ?? "",
      imageID: "",
      ready: false,
      started: false,
      restartCount: 0,
      state: {
        waiting: container.name === runnerContainerName
          ? { reason: "CreateContainerConfigError", message }
          : { reason: "ContainerCreating" },
      },
    })),
  };
}

export function runningStatus(pod: V1Pod, record: StatusSource): Record<string, unknown> {
  const startedAt = (record.observation?.startedAt ?? new Date()).toISOString();
  return {
    phase: "Running",
    ...addresses(pod),
    conditions: withOthersConditions(pod, [
      condition("PodScheduled", true),
      condition("PodReadyToStartContainers", true),
      condition("Initialized", true),
      condition("ContainersReady", true),
      condition("Ready", true),
    ]),
    containerStatuses: containers(pod).map((container) => ({
      name: container.name,
      image: container.image ?? "",
      imageID: "",
      containerID: containerId(record, container),
      ready: true,
      started: true,
      restartCount: 0,
      state: { running: { startedAt } },
    })),
  };
}

export function terminalStatus(pod: V1Pod, record: StatusSource): Record<string, unknown> {
  const observation = record.observation;
  const exitCode = observation?.exitCode ?? 137;
  const startedAt = (observation?.startedAt ?? new Date()).toISOString();
  const finishedAt = (observation?.finishedAt ?? new Date()).toISOString();
  return {
    phase: exitCode === 0 ? "Succeeded" : "Failed",
    ...addresses(pod),
    conditions: withOthersConditions(pod, [
      condition("PodScheduled", true),
      condition("PodReadyToStartContainers", false),
      condition("Initialized", true, "PodCompleted"),
      condition("ContainersReady", false, "PodCompleted"),
      condition("Ready", false, "PodCompleted"),
    ]),
    containerStatuses: containers(pod).map((container) => {
      // Only the runner really ran; the other containers are reported as having finished cleanly with it.
      const code = container.name === runnerContainerName ? exitCode : 0;
      return {
        name: container.name,
        image: container.image ?? "",
        imageID: "",
        containerID: containerId(record, container),
        ready: false,
        started: false,
        restartCount: 0,
        state: {
          terminated: {
            exitCode: code,
            reason: code === 0 ? "Completed" : "Error",
            startedAt,
            finishedAt,
            containerID: containerId(record, container),
          },
        },
      };
    }),
  };
}

/** A deleted pod whose runner never started: Failed, its containers as they were (never initialized). */
export function unstartedTerminalStatus(pod: V1Pod): Record<string, unknown> {
  return {
    phase: "Failed",
    ...addresses(pod),
    conditions: withOthersConditions(pod, [
      condition("PodScheduled", true),
      condition("PodReadyToStartContainers", false),
      condition("Initialized", true),
      condition("ContainersReady", false, "PodCompleted"),
      condition("Ready", false, "PodCompleted"),
    ]),
  };
}
