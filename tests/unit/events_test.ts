/**
 * The event recorder against a fake Events API that keeps Events like the API server does (create with generateName,
 * JSON patch by name), so aggregation, the bounded queue and the bounded drain can be checked without a cluster.
 * `tests/integration/event_recorder_test.ts` runs the same calls against a real kube-apiserver.
 */
import assert from "node:assert/strict";
import { ApiException, type CoreV1Event } from "@kubernetes/client-node";
import {
  combinedPrefix,
  EventRecorder,
  type EventRecorderOptions,
  type EventTarget,
  type EventWriter,
} from "../../src/kube/events.ts";
import { KubernetesApiError } from "../../src/kube/rest.ts";
import { namespaceTerminatingStatus } from "./fixtures.ts";

const group = (name = "app"): EventTarget => ({
  apiVersion: "gitea.bpg.pw/v1alpha1",
  kind: "RunnerGroup",
  name,
  namespace: "ci",
  uid: `uid-${name}`,
});

type PatchOperation = { op: string; path: string; value: unknown };

/** Events by name; `gate` holds every write until released, `delayMs` slows each one. */
class FakeEventsApi implements EventWriter {
  readonly events = new Map<string, CoreV1Event>();
  creates = 0;
  patches = 0;
  inFlight = 0;
  mostInFlight = 0;
  delayMs = 0;
  fail?: Error;
  #gate?: Promise<void>;
  #open?: () => void;

  hold(): void {
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#gate = promise;
    this.#open = resolve;
  }

  release(): void {
    this.#open?.();
    this.#gate = undefined;
  }

  async #enter(): Promise<void> {
    this.mostInFlight = Math.max(this.mostInFlight, ++this.inFlight);
    try {
      await this.#gate;
      if (this.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.delayMs));
    } finally {
      this.inFlight--;
    }
    if (this.fail) throw this.fail;
  }

  createNamespacedEvent = async (param: { namespace: string; body: CoreV1Event }): Promise<CoreV1Event> => {
    await this.#enter();
    this.creates++;
    const name = `${param.body.metadata.generateName}${this.creates.toString(16).padStart(8, "0")}`;
    const event = structuredClone({ ...param.body, metadata: { ...param.body.metadata, name } });
    this.events.set(name, event);
    return event;
  };

  patchNamespacedEvent = async (param: { name: string; namespace: string; body: unknown }): Promise<CoreV1Event> => {
    await this.#enter();
    const event = this.events.get(param.name);
    if (!event) throw new ApiException(404, "Not Found", { message: `events "${param.name}" not found` }, {});
    this.patches++;
    for (const operation of param.body as PatchOperation[]) {
      assert.equal(operation.op, "replace");
      const field = operation.path.slice(1) as "count" | "lastTimestamp" | "message";
      (event as unknown as Record<string, unknown>)[field] = field === "lastTimestamp"
        ? new Date(operation.value as string)
        : operation.value;
    }
    return event;
  };

  list(): CoreV1Event[] {
    return [...this.events.values()];
  }
}

/** A recorder whose reports of unwritten occurrences are collected in `drops`, as [reason, occurrences]. */
const recorderWithDrops = (
  api: FakeEventsApi,
  options: EventRecorderOptions = {},
): { recorder: EventRecorder; drops: [string, number][] } => {
  const drops: [string, number][] = [];
  const recorder = new EventRecorder(api, "test", "test-1", {
    ...options,
    onDropped: (reason, occurrences) => drops.push([reason, occurrences]),
  });
  return { recorder, drops };
};

const settle = async (recorder: EventRecorder): Promise<void> => {
  for (let i = 0; i < 500 && recorder.backlog > 0; i++) await new Promise((resolve) => setTimeout(resolve, 2));
  assert.equal(recorder.backlog, 0, "the queue drained");
};

Deno.test("record() returns at once while the API is slow; the event is written in the background", async () => {
  const api = new FakeEventsApi();
  api.hold();
  const recorder = new EventRecorder(api, "test", "test-1");
  const started = performance.now();
  await recorder.record(group(), "Normal", "RunnerJobCreated", "Created runner Job app-1 for job 1");
  assert.ok(performance.now() - started < 50, "record() did not wait for the write");
  assert.equal(api.creates, 0, "not written yet: the API holds it");
  api.release();
  await settle(recorder);
  assert.equal(api.creates, 1);
  const [event] = api.list();
  assert.equal(event.reason, "RunnerJobCreated");
  assert.equal(event.involvedObject.uid, "uid-app");
  assert.equal(event.count, 1);
  assert.equal(event.reportingInstance, "test-1");
});

Deno.test("the same event again increments count and lastTimestamp of one Event, with PATCH", async () => {
  const api = new FakeEventsApi();
  let now = Date.UTC(2026, 0, 1, 12, 0, 0);
  const recorder = new EventRecorder(api, "test", "test-1", { now: () => now });
  await recorder.record(group(), "Warning", "ForgeServerError", "List open jobs: server error (500)");
  await settle(recorder);
  for (let i = 0; i < 3; i++) {
    now += 60_000;
    await recorder.record(group(), "Warning", "ForgeServerError", "List open jobs: server error (500)");
    await settle(recorder);
  }
  assert.equal(api.creates, 1, "one Event");
  assert.equal(api.patches, 3, "three increments");
  const [event] = api.list();
  assert.equal(event.count, 4);
  assert.equal(new Date(event.firstTimestamp!).getTime(), Date.UTC(2026, 0, 1, 12, 0, 0));
  assert.equal(new Date(event.lastTimestamp!).getTime(), Date.UTC(2026, 0, 1, 12, 3, 0));
  // Another object, type or reason is another Event.
  await recorder.record(group("other"), "Warning", "ForgeServerError", "List open jobs: server error (500)");
  await recorder.record(group(), "Warning", "ForgeUnreachable", "List open jobs: server error (500)");
  await settle(recorder);
  assert.equal(api.creates, 3);
  // After the correlation window (10 minutes), a new Event.
  now += 11 * 60_000;
  await recorder.record(group(), "Warning", "ForgeServerError", "List open jobs: server error (500)");
  await settle(recorder);
  assert.equal(api.creates, 4);
});

Deno.test("occurrences queued while the API is busy are written as one, with their count", async () => {
  const api = new FakeEventsApi();
  api.hold();
  const recorder = new EventRecorder(api, "test", "test-1", { maxInFlight: 1 });
  await recorder.record(group(), "Normal", "WarmRunnerCreated", "Created warm runner app-warm-0");
  for (let i = 0; i < 5; i++) await recorder.record(group(), "Warning", "SecretNotFound", 'Secret "tokens" not found');
  api.release();
  await settle(recorder);
  assert.equal(api.creates, 2, "two Events");
  assert.equal(api.patches, 0, "the five were coalesced in the queue");
  assert.equal(api.list().find((e) => e.reason === "SecretNotFound")?.count, 5);
});

Deno.test("beyond 10 different messages of one reason for one object, the rest are combined into one Event", async () => {
  const api = new FakeEventsApi();
  const recorder = new EventRecorder(api, "test", "test-1");
  for (let job = 1; job <= 25; job++) {
    await recorder.record(group(), "Normal", "RunnerJobCreated", `Created runner Job app-${job} for job ${job}`);
  }
  await recorder.record(group("other"), "Normal", "RunnerJobCreated", "Created runner Job other-1 for job 1");
  await settle(recorder);
  const mine = api.list().filter((e) => e.involvedObject.name === "app");
  assert.equal(mine.length, 11, "10 Events of their own, then one combined");
  const combined = mine.filter((e) => e.message!.startsWith(combinedPrefix));
  assert.equal(combined.length, 1);
  assert.equal(combined[0].count, 15, "jobs 11 to 25");
  assert.equal(combined[0].message, `${combinedPrefix}Created runner Job app-25 for job 25`, "the latest message");
  assert.equal(api.list().filter((e) => e.involvedObject.name === "other").length, 1, "other objects are apart");
  // A message seen before the burst was reached keeps counting on its own Event.
  await recorder.record(group(), "Normal", "RunnerJobCreated", "Created runner Job app-3 for job 3");
  await settle(recorder);
  assert.equal(api.list().find((e) => e.message === "Created runner Job app-3 for job 3")?.count, 2);
});

Deno.test("writes in flight are bounded", async () => {
  const api = new FakeEventsApi();
  api.delayMs = 10;
  const recorder = new EventRecorder(api, "test", "test-1", { maxInFlight: 3 });
  for (let i = 0; i < 20; i++) await recorder.record(group(`g${i}`), "Normal", "RunnerJobCreated", `job ${i}`);
  await settle(recorder);
  assert.equal(api.creates, 20);
  assert.equal(api.mostInFlight, 3);
});

Deno.test("a full queue drops the oldest waiting events, counts them, and never blocks record()", async () => {
  const api = new FakeEventsApi();
  api.hold();
  const { recorder, drops } = recorderWithDrops(api, { maxInFlight: 1, maxQueued: 3 });
  const started = performance.now();
  for (let i = 1; i <= 10; i++) await recorder.record(group(`g${i}`), "Normal", "RunnerJobCreated", `job ${i}`);
  assert.ok(performance.now() - started < 100, "record() never waited");
  // g1 is in flight; g2..g10 went through a queue of 3: g2..g7 were dropped.
  assert.equal(recorder.dropped, 6);
  assert.deepEqual(drops, Array.from({ length: 6 }, () => ["queue_full", 1]), "each drop is reported, with its reason");
  assert.equal(recorder.backlog, 4);
  api.release();
  await settle(recorder);
  assert.deepEqual(api.list().map((e) => e.involvedObject.name).sort(), ["g1", "g10", "g8", "g9"]);
});

Deno.test("a dropped event is reported with every occurrence it held", async () => {
  const api = new FakeEventsApi();
  api.hold();
  const { recorder, drops } = recorderWithDrops(api, { maxInFlight: 1, maxQueued: 1 });
  await recorder.record(group("g1"), "Normal", "RunnerJobCreated", "job 1"); // in flight
  await recorder.record(group("g2"), "Warning", "ForgeUnavailable", "down");
  await recorder.record(group("g2"), "Warning", "ForgeUnavailable", "down"); // the same event: one series, twice
  await recorder.record(group("g3"), "Normal", "RunnerJobCreated", "job 3"); // the queue is full: g2 goes
  assert.deepEqual(drops, [["queue_full", 2]]);
  assert.equal(recorder.dropped, 2);
  api.release();
  await settle(recorder);
});

Deno.test("stop() drains the queue, but waits no longer than its bound for a hanging API", async () => {
  const api = new FakeEventsApi();
  api.delayMs = 20;
  const recorder = new EventRecorder(api, "test", "test-1", { maxInFlight: 2 });
  for (let i = 0; i < 10; i++) await recorder.record(group(`g${i}`), "Normal", "RunnerJobCreated", `job ${i}`);
  await recorder.stop(2_000);
  assert.equal(api.creates, 10, "everything queued before stop() was written");
  await recorder.record(group(), "Normal", "RunnerJobCreated", "after stop");
  assert.equal(recorder.backlog, 0, "a stopped recorder takes nothing more");

  const hanging = new FakeEventsApi();
  hanging.hold();
  const { recorder: stuck, drops } = recorderWithDrops(hanging);
  for (let i = 0; i < 10; i++) await stuck.record(group(`g${i}`), "Normal", "RunnerJobCreated", `job ${i}`);
  const started = performance.now();
  let guard: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([stuck.stop(300), new Promise((resolve) => (guard = setTimeout(resolve, 3_000)))]);
  clearTimeout(guard);
  const took = performance.now() - started;
  assert.ok(took >= 290 && took < 1_000, `stop() returned after ${Math.round(took)} ms with a 300 ms bound`);
  // Four writes were in flight (the default bound); the six still queued are reported as not written.
  assert.deepEqual(drops, [["shutdown", 6]]);
  hanging.release();
});

Deno.test("a failing write is logged and dropped; an expired Event is created again", async () => {
  const api = new FakeEventsApi();
  const { recorder, drops } = recorderWithDrops(api);
  api.fail = new Error("connection refused");
  await recorder.record(group(), "Warning", "ForgeUnauthorized", "token rejected");
  await settle(recorder);
  assert.equal(api.list().length, 0);
  assert.deepEqual(drops, [["write_failed", 1]]);
  api.fail = undefined;
  await recorder.record(group(), "Warning", "ForgeUnauthorized", "token rejected");
  await settle(recorder);
  assert.equal(api.creates, 1);
  api.events.clear(); // The API server expired it.
  await recorder.record(group(), "Warning", "ForgeUnauthorized", "token rejected");
  await settle(recorder);
  assert.equal(api.patches, 0, "the patch found no Event to change");
  assert.equal(api.creates, 2, "so a new one was created");
  assert.equal(api.list()[0].count, 1);
});

Deno.test("an Event in a namespace being deleted is dropped as such, not as a failed write", async () => {
  const api = new FakeEventsApi();
  const { recorder, drops } = recorderWithDrops(api);
  api.fail = new KubernetesApiError(403, namespaceTerminatingStatus, "POST", "/api/v1/namespaces/ci/events");
  await recorder.record(group(), "Warning", "SecretNotFound", "Secret tokens not found");
  await settle(recorder);
  assert.deepEqual(drops, [["namespace_terminating", 1]]);
  // Any other refusal is a failed write.
  api.fail = new KubernetesApiError(403, { message: "forbidden by RBAC" }, "POST", "/api/v1/namespaces/ci/events");
  await recorder.record(group(), "Warning", "SecretNotFound", "Secret tokens not found again");
  await settle(recorder);
  assert.deepEqual(drops, [["namespace_terminating", 1], ["write_failed", 1]]);
});

Deno.test("secrets registered with the log redactor never reach an event", async () => {
  const { registerSecret } = await import("../../src/log.ts");
  registerSecret("s3cr3t-token-value-0123");
  const api = new FakeEventsApi();
  const recorder = new EventRecorder(api, "test", "test-1");
  await recorder.record(group(), "Warning", "ForgeUnauthorized", "token s3cr3t-token-value-0123 was rejected");
  await settle(recorder);
  assert.ok(!JSON.stringify(api.list()).includes("s3cr3t-token-value-0123"));
});
