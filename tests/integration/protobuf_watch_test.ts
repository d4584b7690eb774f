/**
 * The Job informer's protobuf watch against a real kube-apiserver (the version tests/tools/build.sh builds): the same
 * runner Jobs watched in JSON and in protobuf must give the same cache, through creation, status conditions (with
 * and without reason and message), label and annotation changes, a deletion held by a finalizer and the deletion
 * itself. (ERROR events cannot be had on demand from a fresh API server; tests/unit/job_protobuf_test.ts decodes one.)
 */
import assert from "node:assert/strict";
import type { V1Job } from "@kubernetes/client-node";
import { loadKubeConfig, makeClients } from "../../src/kube/client.ts";
import { SupervisedInformer } from "../../src/kube/informer.ts";
import { decodeJobWatchEvent } from "../../src/kube/job_protobuf.ts";
import { labelKeys, pruneRunnerJob, runnerJobSelector } from "../../src/runner_group/runner_job.ts";
import { apiGroup } from "../../src/runner_group/schema.ts";
import { startCluster } from "../harness/cluster.ts";
import { eventually } from "../harness/wait.ts";

const namespace = "pb";

function runnerLikeJob(name: string): V1Job {
  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: {
      name,
      namespace,
      labels: {
        [labelKeys.managedBy]: "gitea-runner-operator",
        [labelKeys.component]: "runner",
        [labelKeys.groupName]: "group",
        [labelKeys.jobId]: "42",
      },
      annotations: {
        [`${apiGroup}/repository`]: "org/répo ✓",
        [`${apiGroup}/empty`]: "",
        "other.example/annotation": "dropped by the prune",
      },
      ownerReferences: [{
        apiVersion: `${apiGroup}/v1alpha1`,
        kind: "RunnerGroup",
        name: "group",
        uid: "4c1c0d4e-0000-4000-8000-000000000001",
        controller: true,
        blockOwnerDeletion: false,
      }],
      finalizers: ["test.example/hold"],
    },
    spec: {
      backoffLimit: 0,
      suspend: true,
      // The Job controller leaves a Job managed by another controller alone, so the conditions are the test's.
      managedBy: "example.com/not-the-job-controller",
      template: {
        spec: {
          restartPolicy: "Never",
          containers: [{ name: "runner", image: "example.invalid/runner:1", env: [{ name: "A", value: "b" }] }],
        },
      },
    },
  };
}

Deno.test({
  name: "a protobuf watch of runner Jobs gives the same cache as a JSON watch, on a real API server",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t): Promise<void> {
    const cluster = await startCluster();
    const kubeConfig = await loadKubeConfig(cluster.kubeconfigPath, () => undefined);
    const { batch } = makeClients(kubeConfig);
    let frames = 0;
    const informer = (protobuf: boolean): SupervisedInformer<V1Job> =>
      new SupervisedInformer<V1Job>({
        name: protobuf ? "jobs-protobuf" : "jobs-json",
        kubeConfig,
        path: `/apis/batch/v1/namespaces/${namespace}/jobs`,
        labelSelector: runnerJobSelector,
        transform: pruneRunnerJob,
        list: () => batch.listNamespacedJob({ namespace, labelSelector: runnerJobSelector }),
        onChange: () => {},
        ...(protobuf
          ? {
            decodeProtobuf: (frame: Uint8Array) => {
              frames++;
              return decodeJobWatchEvent(frame);
            },
          }
          : {}),
      });
    const json = informer(false);
    const protobuf = informer(true);
    const byName = (jobs: V1Job[]): V1Job[] =>
      [...jobs].sort((a, b) => a.metadata!.name!.localeCompare(b.metadata!.name!));
    const agree = (): boolean => {
      try {
        assert.deepStrictEqual(byName(protobuf.list()), byName(json.list()));
        return true;
      } catch {
        return false;
      }
    };
    /** Waits until both caches show the change and agree on every field the operator keeps (else shows the diff). */
    const same = async (what: string, check: (jobs: V1Job[]) => boolean): Promise<void> => {
      await eventually(what, () => check(json.list()) && check(protobuf.list()));
      await eventually(`${what}: both caches agree`, agree, { timeoutMs: 5_000 })
        .catch(() => assert.deepStrictEqual(byName(protobuf.list()), byName(json.list())));
    };
    const patch = (name: string, body: unknown, subresource = ""): Promise<unknown> =>
      batch.rest.request("PATCH", `/apis/batch/v1/namespaces/${namespace}/jobs/${name}${subresource}`, {
        body,
        contentType: "application/merge-patch+json",
      });
    try {
      await batch.rest.request("POST", "/api/v1/namespaces", { body: { metadata: { name: namespace } } });
      json.start();
      protobuf.start();
      await Promise.all([json.waitForSync(), protobuf.waitForSync()]);

      await t.step("created Jobs", async () => {
        for (const name of ["runner-a", "runner-b"]) {
          await batch.createNamespacedJob({ namespace, body: runnerLikeJob(name) });
        }
        await same("both Jobs cached", (jobs) => jobs.length === 2);
        const [a] = byName(protobuf.list());
        assert.equal(a.metadata?.annotations?.[`${apiGroup}/repository`], "org/répo ✓");
        assert.equal(a.metadata?.annotations?.[`${apiGroup}/empty`], "");
        assert.match(String(a.metadata?.creationTimestamp), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
        assert.equal(a.metadata?.ownerReferences?.[0].controller, true);
        assert.equal(a.metadata?.ownerReferences?.[0].blockOwnerDeletion, false);
        assert.ok(frames >= 2, `the protobuf informer decoded ${frames} frames`);
        // The light client's GET of one Job (a repeated create on the Forgejo 15 path reads the Job it met).
        const read = await batch.readNamespacedJob({ namespace, name: "runner-a" });
        assert.equal(read.metadata?.uid, a.metadata?.uid);
      });

      await t.step("status conditions, with and without reason and message", async () => {
        const now = new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
        await patch("runner-a", {
          status: {
            conditions: [{
              type: "Suspended",
              status: "True",
              reason: "JobSuspended",
              message: "Job suspended",
              lastTransitionTime: now,
              lastProbeTime: now,
            }],
          },
        }, "/status");
        await patch("runner-b", {
          status: { conditions: [{ type: "Suspended", status: "False", lastTransitionTime: now }] },
        }, "/status");
        await same("the conditions cached", (jobs) => jobs.every((job) => job.status?.conditions?.length === 1));
        const b = protobuf.get("runner-b", namespace)!;
        assert.deepEqual(Object.keys(b.status!.conditions![0]).sort(), ["lastTransitionTime", "status", "type"]);
      });

      await t.step("labels and annotations changed", async () => {
        await patch("runner-b", {
          metadata: { labels: { [labelKeys.attempt]: "2" }, annotations: { [`${apiGroup}/name`]: "build" } },
        });
        await same("the new label cached", (jobs) => jobs.some((job) => job.metadata?.labels?.[labelKeys.attempt]));
      });

      await t.step("a deletion held by a finalizer, then the deletion", async () => {
        await batch.deleteNamespacedJob({ namespace, name: "runner-a", propagationPolicy: "Background" });
        await same("the deletion time cached", (jobs) => jobs.some((job) => job.metadata?.deletionTimestamp));
        for (const name of ["runner-a", "runner-b"]) {
          await patch(name, { metadata: { finalizers: null } });
        }
        await same("runner-a gone", (jobs) => jobs.length === 1);
      });
    } finally {
      await Promise.all([json.stop(), protobuf.stop()]);
      await cluster.dispose();
    }
  },
});
