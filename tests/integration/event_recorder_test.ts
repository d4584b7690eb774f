/**
 * The event recorder against a real kube-apiserver (v1.35): the JSON patch that counts a repeated event is accepted
 * as client-node sends it, the timestamps round-trip, and a burst of similar events ends in one combined Event. In a
 * namespace being deleted, the API server's refusal carries the cause `isNamespaceTerminating` looks for.
 */
import assert from "node:assert/strict";
import { CoreV1Api as FullCoreV1Api, type CoreV1Event } from "@kubernetes/client-node";
import { apiMessage, apiStatus, isNamespaceTerminating, loadKubeConfig, makeClients } from "../../src/kube/client.ts";
import { combinedPrefix, EventRecorder, type EventTarget } from "../../src/kube/events.ts";
import { startCluster } from "../harness/cluster.ts";
import { eventually } from "../harness/wait.ts";

const namespace = "events";

Deno.test({
  name: "events against a real API server: counted with a patch, similar ones combined, drained on stop",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(): Promise<void> {
    const cluster = await startCluster();
    try {
      // The recorder writes with the operator's own (light) client; the test reads with the full one.
      const { core } = makeClients(await loadKubeConfig(cluster.kubeconfigPath, () => undefined));
      const admin = cluster.kubeConfig.makeApiClient(FullCoreV1Api);
      await admin.createNamespace({ body: { metadata: { name: namespace } } });
      // Any object will do for involvedObject; the API server does not check that it exists.
      const target: EventTarget = {
        apiVersion: "gitea.bpg.pw/v1alpha1",
        kind: "RunnerGroup",
        name: "app",
        namespace,
        uid: "5f1c0e4e-0000-4000-8000-000000000001",
      };
      const recorder = new EventRecorder(core, "gitea-runner-operator", "test-instance");
      const list = async (): Promise<CoreV1Event[]> => (await admin.listNamespacedEvent({ namespace })).items;

      await recorder.record(target, "Warning", "ForgeServerError", "List open jobs: server error (500)");
      await eventually("the first Event", async () => (await list()).length === 1, { timeoutMs: 10_000 });
      const first = (await list())[0];
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      await recorder.record(target, "Warning", "ForgeServerError", "List open jobs: server error (500)");
      await recorder.record(target, "Warning", "ForgeServerError", "List open jobs: server error (500)");
      const counted = await eventually("the count to reach 3", async () => {
        const events = await list();
        return events.length === 1 && events[0].count === 3 ? events[0] : undefined;
      }, { timeoutMs: 10_000 });
      assert.equal(counted.metadata.name, first.metadata.name, "the same Event, patched");
      assert.equal(new Date(counted.firstTimestamp!).getTime(), new Date(first.firstTimestamp!).getTime());
      assert.ok(new Date(counted.lastTimestamp!) > new Date(first.lastTimestamp!), "lastTimestamp moved on");
      assert.equal(counted.involvedObject.uid, target.uid);
      assert.equal(counted.source?.component, "gitea-runner-operator");

      for (let job = 1; job <= 30; job++) {
        await recorder.record(target, "Normal", "RunnerJobCreated", `Created runner Job app-${job} for job ${job}`);
      }
      // stop() writes everything queued before it returns (within its bound).
      await recorder.stop(5_000);
      const created = (await list()).filter((event) => event.reason === "RunnerJobCreated");
      assert.equal(created.length, 11, "10 Events of their own, then one combined");
      const combined = created.find((event) => event.message!.startsWith(combinedPrefix));
      assert.equal(combined?.count, 20);
      assert.equal(combined?.message, `${combinedPrefix}Created runner Job app-30 for job 30`);

      // A namespace being deleted (held by a finalizer of a ConfigMap in it): the API server refuses new objects there
      // with the NamespaceLifecycle plugin's cause, which the operator recognizes: no retry for a create, and an Event
      // dropped as such rather than as a failed write.
      const closing = "closing";
      await admin.createNamespace({ body: { metadata: { name: closing } } });
      await admin.createNamespacedConfigMap({
        namespace: closing,
        body: { metadata: { name: "hold", finalizers: ["gitea.bpg.pw/test-hold"] } },
      });
      await admin.deleteNamespace({ name: closing });
      const refusal = await eventually("a create in the namespace to be refused", async () => {
        try {
          await core.createNamespacedSecret({ namespace: closing, body: { metadata: { name: "late" } } });
          return undefined;
        } catch (error) {
          return error;
        }
      }, { timeoutMs: 10_000 });
      assert.equal(apiStatus(refusal), 403);
      assert.equal(isNamespaceTerminating(refusal), true, `not recognized: ${apiMessage(refusal)}`);
      const drops: [string, number][] = [];
      const late = new EventRecorder(core, "gitea-runner-operator", "test-instance", {
        onDropped: (reason, occurrences) => drops.push([reason, occurrences]),
      });
      await late.record({ ...target, namespace: closing }, "Warning", "SecretNotFound", "Secret tokens not found");
      await late.stop(5_000);
      assert.deepEqual(drops, [["namespace_terminating", 1]]);
      await admin.patchNamespacedConfigMap({
        namespace: closing,
        name: "hold",
        body: [{ op: "remove", path: "/metadata/finalizers" }],
      });
    } finally {
      await cluster.dispose();
    }
  },
});
