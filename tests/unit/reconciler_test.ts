/**
 * The reconcile's own decisions, with fake clients: here, a namespace that is being deleted ends a reconcile without an
 * error (no retry loop), while any other refusal is retried. The stages themselves have tests of their own.
 */
import assert from "node:assert/strict";
import type { V1Secret } from "@kubernetes/client-node";
import type { DemandPollers } from "../../src/forge/demand_poller.ts";
import type { KubeClients } from "../../src/kube/client.ts";
import type { EventRecorder } from "../../src/kube/events.ts";
import { KubernetesApiError } from "../../src/kube/rest.ts";
import { RunnerGroupReconciler } from "../../src/runner_group/reconciler.ts";
import type { RunnerGroup } from "../../src/runner_group/schema.ts";
import { cleanupFinalizer } from "../../src/runner_group/teardown.ts";
import { namespaceTerminatingStatus, repoSpec } from "./fixtures.ts";

const group: RunnerGroup = {
  apiVersion: "gitea.bpg.pw/v1alpha1",
  kind: "RunnerGroup",
  metadata: { name: "ci", namespace: "team", uid: "u1", generation: 1, finalizers: [cleanupFinalizer] },
  spec: { ...repoSpec, labels: ["linux"], registrationToken: { name: "tokens", key: "registration" } },
} as RunnerGroup;

const tokens: V1Secret = {
  metadata: { name: "tokens", namespace: "team" },
  data: { api: btoa("api-token-value-0123"), registration: btoa("registration-token-0123") },
};

/** A reconciler whose every Job create (the template's dry run first) is answered with `refusal`. */
function reconcilerRefusing(refusal: Error): { reconciler: RunnerGroupReconciler; creates: string[] } {
  const creates: string[] = [];
  const clients = {
    batch: {
      createNamespacedJob: ({ namespace }: { namespace: string }) => {
        creates.push(namespace);
        return Promise.reject(refusal);
      },
    },
    core: {},
    custom: {
      patchNamespacedCustomObjectStatus: () => Promise.resolve(group),
      patchNamespacedCustomObject: () => Promise.resolve(group),
    },
  } as unknown as KubeClients;
  const pollers = {
    subscribe: () => "target",
    snapshot: () => undefined,
    unsubscribe: () => {},
    answerAfter: () => {},
  } as unknown as DemandPollers;
  const events = { record: () => Promise.resolve() } as unknown as EventRecorder;
  const reconciler = new RunnerGroupReconciler({
    clients,
    cache: {
      group: (namespace, name) => (namespace === "team" && name === "ci" ? group : undefined),
      groups: () => [group],
      runnerJobs: () => [],
      secret: (namespace, name) => Promise.resolve(namespace === "team" && name === "tokens" ? tokens : undefined),
    },
    pollers,
    events,
    runnerImage: "runner:test",
    retry: { limit: 3, baseDelayMs: 1000, maxDelayMs: 60_000 },
    resyncIntervalMs: 60_000,
  });
  return { reconciler, creates };
}

Deno.test("a reconcile in a namespace being deleted ends without an error; another refusal is retried", async () => {
  const terminating = new KubernetesApiError(
    403,
    namespaceTerminatingStatus,
    "POST",
    "/apis/batch/v1/namespaces/team/jobs",
  );
  const closing = reconcilerRefusing(terminating);
  assert.deepEqual(await closing.reconciler.reconcile("team/ci"), {});
  assert.deepEqual(closing.creates, ["team"], "the template's dry run was refused");

  const rbac = new KubernetesApiError(
    403,
    { message: "forbidden by RBAC" },
    "POST",
    "/apis/batch/v1/namespaces/team/jobs",
  );
  const refused = reconcilerRefusing(rbac);
  await assert.rejects(refused.reconciler.reconcile("team/ci"), /forbidden by RBAC/);
});
