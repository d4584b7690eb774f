/**
 * The test cluster's Nodes: no kubelet runs them (runner pods are run by the stand-in in `kubelet.ts`), so each is
 * created Ready through its status subresource, and the first one is checked to take pods before tests start.
 */
import { type CoreV1Api, PatchStrategy, setHeaderOptions, type V1Node, type V1Taint } from "@kubernetes/client-node";
import { type LoggedProcess, waitUntil } from "./logged_process.ts";

/**
 * Creates a Node that kube-scheduler considers Ready and roomy. Its status goes through the `status` subresource
 * (status is dropped on create). No taints but those given: TaintNodesByCondition admission is disabled because its
 * `not-ready` taint is normally lifted by the node-lifecycle controller, which does not run here. Tests add a second
 * Node with it (and a stand-in kubelet for it) to take a Node away from under a runner.
 */
export async function createFakeNode(
  core: CoreV1Api,
  name: string,
  options: { taints?: V1Taint[] } = {},
): Promise<void> {
  const capacity = { cpu: "64", memory: "256Gi", pods: "500", "ephemeral-storage": "1Ti" };
  const node: V1Node = {
    metadata: {
      name,
      labels: { "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64" },
    },
    spec: options.taints ? { taints: options.taints } : {},
  };
  await core.createNode({ body: node });
  const now = new Date();
  const condition = (type: string, status: string, reason: string): object => ({
    type,
    status,
    reason,
    message: "set by the test harness",
    lastHeartbeatTime: now,
    lastTransitionTime: now,
  });
  const status = {
    status: {
      capacity,
      allocatable: capacity,
      conditions: [
        condition("Ready", "True", "KubeletReady"),
        condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
        condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
        condition("PIDPressure", "False", "KubeletHasSufficientPID"),
      ],
      addresses: [{ type: "InternalIP", address: "127.0.0.1" }, { type: "Hostname", address: name }],
      nodeInfo: {
        architecture: "amd64",
        operatingSystem: "linux",
        kubeletVersion: "v1.35.4",
        kubeProxyVersion: "",
        containerRuntimeVersion: "harness://0",
        kernelVersion: "",
        osImage: "harness",
        bootID: "",
        machineID: "",
        systemUUID: "",
      },
    },
  };
  await core.patchNodeStatus(
    { name, body: status },
    setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
  );
}

/** Proves the scheduler is up and binds to the fake Node by scheduling a throwaway pod. */
export async function waitUntilSchedulable(
  core: CoreV1Api,
  nodeName: string,
  deadline: number,
  processes: LoggedProcess[],
): Promise<void> {
  const namespace = "default";
  const name = "harness-schedulable-probe";
  await waitUntil("a probe pod can be created", deadline, processes, async () => {
    await core.createNamespacedPod({
      namespace,
      body: {
        metadata: { name },
        spec: {
          containers: [{ name: "probe", image: "harness.invalid/probe" }],
          // Not a runner pod; a toleration-free pod proves the Node has no blocking taints.
          automountServiceAccountToken: false,
        },
      },
    });
    return true;
  });
  await waitUntil("the probe pod is scheduled", deadline, processes, async () => {
    const pod = await core.readNamespacedPod({ name, namespace });
    return pod.spec?.nodeName === nodeName;
  });
  // An unstarted pod is deleted at once; no kubelet needs to confirm it.
  await core.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 0 });
}
