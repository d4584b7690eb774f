/**
 * The reconcile's own decisions, with fake clients: a namespace that is being deleted ends a reconcile without an error
 * (no retry loop), while any other refusal is retried; a deleted group is released once, however many reconciles the
 * cache's lag lets through. The stages themselves have tests of their own.
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

Deno.test("a released group is not torn down again while the cache still shows its finalizer", async () => {
  // Deleted, and its token Secret went first (the namespace is going): released at once, with a CleanupIncomplete.
  const deleted = {
    ...group,
    metadata: { ...group.metadata, deletionTimestamp: new Date(), resourceVersion: "7" },
  } as RunnerGroup;
  const log: string[] = [];
  let cached: RunnerGroup | undefined = deleted;
  const reconciler = new RunnerGroupReconciler({
    clients: {
      batch: {},
      core: {},
      custom: {
        patchNamespacedCustomObject: ({ body }: { body: { metadata: { finalizers: string[] } } }) => {
          log.push(`finalizers [${body.metadata.finalizers.join(",")}]`);
          return Promise.resolve(deleted);
        },
      },
    } as unknown as KubeClients,
    cache: {
      group: () => cached,
      groups: () => (cached ? [cached] : []),
      runnerJobs: () => [],
      secret: () => Promise.resolve(undefined),
    },
    pollers: { unsubscribe: () => {} } as unknown as DemandPollers,
    events: {
      record: (_t: unknown, _k: string, reason: string) => (log.push(`event ${reason}`), Promise.resolve()),
    } as unknown as EventRecorder,
    runnerImage: "runner:test",
    retry: { limit: 3, baseDelayMs: 1000, maxDelayMs: 60_000 },
    resyncIntervalMs: 60_000,
  });
  assert.deepEqual(await reconciler.reconcile("team/ci"), {});
  assert.deepEqual(log, ["event CleanupIncomplete", "finalizers []"]);
  // A reconcile queued meanwhile runs before the watch event of the release: nothing more happens.
  assert.deepEqual(await reconciler.reconcile("team/ci"), {});
  assert.deepEqual(log, ["event CleanupIncomplete", "finalizers []"]);
  // Gone from the cache; a new group of the same name (another uid) is torn down on its own when deleted.
  cached = undefined;
  await reconciler.reconcile("team/ci");
  cached = { ...deleted, metadata: { ...deleted.metadata, uid: "u2" } } as RunnerGroup;
  await reconciler.reconcile("team/ci");
  assert.equal(log.filter((line) => line === "event CleanupIncomplete").length, 2);
});
