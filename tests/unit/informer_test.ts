import assert from "node:assert/strict";
import type { KubernetesListObject, V1Job } from "@kubernetes/client-node";
import { StaticCredentials } from "../../src/kube/credentials.ts";
import { SupervisedInformer, type WatchLike } from "../../src/kube/informer.ts";
import { KubeConfig } from "../../src/kube/kubeconfig.ts";
import { pruneRunnerJob } from "../../src/runner_group/runner_job.ts";

type Callback = (phase: string, object: unknown) => void;
interface WatchCall {
  query: Record<string, unknown>;
  send: Callback;
  done: (error: unknown) => void;
  controller: AbortController;
}

/** A watch the test drives: each call is recorded; events and the end are sent by the test. */
class FakeWatch implements WatchLike {
  readonly calls: WatchCall[] = [];

  watch(
    _path: string,
    query: Record<string, unknown>,
    send: Callback,
    done: (error: unknown) => void,
  ): Promise<AbortController> {
    const controller = new AbortController();
    this.calls.push({ query, send, done, controller });
    return Promise.resolve(controller);
  }

  async waitForCall(count: number): Promise<WatchCall> {
    for (let i = 0; i < 200 && this.calls.length < count; i++) await new Promise((r) => setTimeout(r, 5));
    assert.equal(this.calls.length, count, `watch calls`);
    return this.calls[count - 1];
  }
}

const kubeConfig = new KubeConfig("http://127.0.0.1:1", [], new StaticCredentials({ headers: {} }), "unused");

function job(name: string, resourceVersion: string, extra: Record<string, unknown> = {}): V1Job {
  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: {
      name,
      namespace: "ci",
      uid: `uid-${name}`,
      resourceVersion,
      labels: { "app.kubernetes.io/component": "runner" },
      managedFields: [{ manager: "gitea-runner-operator", operation: "Update", fieldsType: "FieldsV1" }],
    },
    spec: { template: { spec: { containers: [{ name: "runner", image: "runner:1" }] } } },
    ...extra,
  };
}

const list = (resourceVersion: string, ...items: V1Job[]): KubernetesListObject<V1Job> => ({
  apiVersion: "batch/v1",
  kind: "JobList",
  metadata: { resourceVersion },
  items,
});

/**
 * A started Job informer that caches through `pruneRunnerJob`, synced with a list of `initial`: its watch stream, and
 * the changes its handler saw after the list (`name@resourceVersion`).
 */
async function syncedJobInformer(
  initial: V1Job,
): Promise<{ informer: SupervisedInformer<V1Job>; changes: string[]; stream: WatchCall }> {
  const watch = new FakeWatch();
  const changes: string[] = [];
  const informer = new SupervisedInformer<V1Job>({
    name: "jobs",
    kubeConfig,
    path: "/apis/batch/v1/jobs",
    list: () => Promise.resolve(list("10", initial)),
    transform: pruneRunnerJob,
    onChange: (object) => changes.push(`${object.metadata!.name}@${object.metadata!.resourceVersion}`),
    watch,
  });
  informer.start();
  await informer.waitForSync();
  changes.splice(0);
  return { informer, changes, stream: await watch.waitForCall(1) };
}

Deno.test("the informer caches transformed objects, follows the watch, relists after 410 and restarts after errors", async () => {
  const watch = new FakeWatch();
  const lists = [list("10", job("a", "1"), job("b", "2")), list("30", job("c", "25"))];
  let listed = 0;
  const changes: string[] = [];
  let restarts = 0;
  const informer: SupervisedInformer<V1Job> = new SupervisedInformer<V1Job>({
    name: "jobs",
    kubeConfig,
    path: "/apis/batch/v1/jobs",
    labelSelector: "app.kubernetes.io/component=runner",
    list: () => Promise.resolve(structuredClone(lists[Math.min(listed++, lists.length - 1)])),
    transform: pruneRunnerJob,
    onChange: (object) => {
      const name = object.metadata!.name!;
      // The cache is up to date when the handler runs.
      changes.push(`${name}@${object.metadata!.resourceVersion}:${informer.cache.get(name, "ci") ? "in" : "out"}`);
      if (name === "b") throw new Error("a handler error must not stop the informer");
    },
    onRestart: () => restarts++,
    baseDelayMs: 1,
    maxDelayMs: 1,
    watch,
  });
  informer.start();
  try {
    await informer.waitForSync();
    assert.deepEqual(changes.splice(0), ["a@1:in", "b@2:in"]);
    const cached = informer.cache.get("a", "ci")!;
    assert.equal(cached.metadata?.managedFields, undefined);
    assert.equal(cached.spec, undefined);
    assert.equal(cached.metadata?.uid, "uid-a");

    const first = await watch.waitForCall(1);
    assert.deepEqual(first.query, {
      resourceVersion: "10",
      labelSelector: "app.kubernetes.io/component=runner",
      fieldSelector: undefined,
    });
    first.send("MODIFIED", job("a", "11", { status: { conditions: [{ type: "Failed", status: "True" }] } }));
    first.send("MODIFIED", job("a", "11"));
    first.send("DELETED", job("b", "12"));
    first.send("BOOKMARK", { kind: "Job", apiVersion: "batch/v1", metadata: { resourceVersion: "15" } });
    assert.deepEqual(changes.splice(0), ["a@11:in", "b@12:out"]);
    assert.deepEqual(informer.cache.get("a", "ci")?.status, { conditions: [{ type: "Failed", status: "True" }] });
    assert.deepEqual(informer.cache.list().map((object) => object.metadata?.name), ["a"]);

    // The watch's resourceVersion expired: list again, report what went and came, watch from the new list.
    first.send("ERROR", { kind: "Status", code: 410, message: "too old resource version: 15 (20)" });
    const second = await watch.waitForCall(2);
    assert.ok(first.controller.signal.aborted);
    assert.equal(listed, 2);
    assert.equal(second.query.resourceVersion, "30");
    assert.deepEqual(changes.splice(0), ["a@11:out", "c@25:in"]);
    assert.equal(restarts, 0);

    // An error ends the watch: restart after the backoff, from the last resourceVersion, without listing.
    second.send("ADDED", job("d", "31"));
    second.done(new Error("connection reset"));
    const third = await watch.waitForCall(3);
    assert.equal(third.query.resourceVersion, "31");
    assert.equal(listed, 2);
    assert.equal(restarts, 1);
    assert.equal(informer.restarts, 1);

    // A watch request the API server answers 410 (resourceVersion too old) lists again too.
    third.done(Object.assign(new Error("Watch of /apis/batch/v1/jobs failed with status 410"), { statusCode: 410 }));
    const fourth = await watch.waitForCall(4);
    assert.equal(listed, 3);
    assert.equal(fourth.query.resourceVersion, "30");
    assert.equal(restarts, 1);
  } finally {
    await informer.stop();
  }
  assert.ok(watch.calls.at(-1)!.controller.signal.aborted);
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(watch.calls.length, 4, "no watch after stop");
});

Deno.test("an update that changes nothing the transform keeps updates the cache but calls no handler", async () => {
  const { informer, changes, stream } = await syncedJobInformer(job("a", "1"));
  try {
    // The Job controller's pod counts: pruned away, so nothing the operator reads changed.
    stream.send("MODIFIED", job("a", "11", { status: { active: 1, startTime: "2026-11-29T10:00:00Z" } }));
    assert.deepEqual(changes, []);
    assert.equal(informer.cache.get("a", "ci")?.metadata?.resourceVersion, "11", "the cache has the new version");
    stream.send(
      "MODIFIED",
      job("a", "12", { status: { active: 0, conditions: [{ type: "Complete", status: "True" }] } }),
    );
    const relabelled = job("a", "13", { status: { conditions: [{ type: "Complete", status: "True" }] } });
    relabelled.metadata!.labels = { ...relabelled.metadata!.labels, extra: "yes" };
    stream.send("MODIFIED", relabelled);
    assert.deepEqual(changes, ["a@12", "a@13"], "a new condition and a new label are changes");
  } finally {
    await informer.stop();
  }
});

Deno.test("without a transform the informer still drops managedFields and keeps the rest", async () => {
  const watch = new FakeWatch();
  const informer = new SupervisedInformer<V1Job>({
    name: "jobs",
    kubeConfig,
    path: "/apis/batch/v1/jobs",
    list: () => Promise.resolve(list("1", job("a", "1"))),
    onChange: () => {},
    watch,
  });
  informer.start();
  try {
    await informer.waitForSync();
    const cached = informer.cache.get("a", "ci")!;
    assert.equal(cached.metadata?.managedFields, undefined);
    assert.equal(cached.spec?.template.spec?.containers[0].image, "runner:1");
  } finally {
    await informer.stop();
  }
});

Deno.test("a created object assumed into the cache is read at once; its own watch event calls no handler", async () => {
  const { informer, changes, stream } = await syncedJobInformer(job("a", "5"));
  try {
    // Created by this process: in the cache before the watch shows it, shaped as the watch would store it.
    informer.assume(job("b", "12"));
    assert.equal(informer.cache.get("b", "ci")?.metadata?.resourceVersion, "12");
    assert.equal(informer.cache.get("b", "ci")?.metadata?.managedFields, undefined);
    assert.equal(informer.cache.get("b", "ci")?.spec, undefined, "through the transform");
    assert.deepEqual(informer.cache.list().map((object) => object.metadata?.name), ["a", "b"]);
    // Its ADDED event changes nothing; the next change of it is reported as usual.
    stream.send("ADDED", job("b", "12"));
    assert.deepEqual(changes.splice(0), []);
    stream.send("MODIFIED", job("b", "13", { status: { conditions: [{ type: "Complete", status: "True" }] } }));
    assert.deepEqual(changes.splice(0), ["b@13"]);

    // Nothing older replaces what the cache holds.
    informer.assume(job("b", "12"));
    assert.equal(informer.cache.get("b", "ci")?.metadata?.resourceVersion, "13");

    // An object the watch has passed already was seen, and its absence is the truth (deleted since): not assumed.
    stream.send("ADDED", job("c", "14"));
    stream.send("DELETED", job("c", "15"));
    changes.splice(0);
    informer.assume(job("c", "14"));
    assert.equal(informer.cache.get("c", "ci"), undefined);
  } finally {
    await informer.stop();
  }
});

Deno.test("an object this process wrote is read at once; the watch event of that write calls no handler", async () => {
  const { informer, changes, stream } = await syncedJobInformer(job("a", "5"));
  try {
    // A write's answer (say a status patch): the next read sees it before the watch shows it.
    informer.assumeWritten(job("a", "12", { status: { active: 1 } }));
    assert.equal(informer.cache.get("a", "ci")?.metadata?.resourceVersion, "12");
    assert.equal(informer.cache.get("a", "ci")?.metadata?.managedFields, undefined, "prepared as the watch's");
    stream.send("MODIFIED", job("a", "12", { status: { active: 1 } }));
    assert.deepEqual(changes.splice(0), [], "its own write's event");
    stream.send("MODIFIED", job("a", "13", { status: { conditions: [{ type: "Complete", status: "True" }] } }));
    assert.deepEqual(changes.splice(0), ["a@13"], "anybody's later change");

    // An older answer (a write the watch or a later write has passed) changes nothing.
    informer.assumeWritten(job("a", "12"));
    assert.equal(informer.cache.get("a", "ci")?.metadata?.resourceVersion, "13");
    informer.assumeWritten(job("a", "15"));
    informer.assumeWritten(job("a", "14"));
    assert.equal(informer.cache.get("a", "ci")?.metadata?.resourceVersion, "15", "two answers out of order");
    stream.send("ADDED", job("b", "20"));
    changes.splice(0);
    informer.assumeWritten(job("a", "19"));
    assert.equal(informer.cache.get("a", "ci")?.metadata?.resourceVersion, "15", "the watch is past 19");

    // An object the cache does not hold (deleted meanwhile) is not brought back.
    stream.send("DELETED", job("b", "21"));
    informer.assumeWritten(job("b", "22"));
    assert.equal(informer.cache.get("b", "ci"), undefined);
  } finally {
    await informer.stop();
  }
});

Deno.test("nothing is assumed before the first list: the list is the truth then", () => {
  const watch = new FakeWatch();
  const informer = new SupervisedInformer<V1Job>({
    name: "jobs",
    kubeConfig,
    path: "/apis/batch/v1/jobs",
    list: () => new Promise(() => {}),
    onChange: () => {},
    watch,
  });
  informer.assume(job("b", "12"));
  informer.assumeWritten(job("b", "12"));
  assert.equal(informer.cache.get("b", "ci"), undefined);
});
