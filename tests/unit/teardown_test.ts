import assert from "node:assert/strict";
import type { V1Job } from "@kubernetes/client-node";
import { ForgeError } from "../../src/forge/errors.ts";
import type { GiteaClient, RunnerRegistration } from "../../src/forge/gitea_client.ts";
import type { EventRecorder } from "../../src/kube/events.ts";
import { logger } from "../../src/log.ts";
import { cleanupFinalizer, tearDownGroup, type TeardownInput } from "../../src/runner_group/teardown.ts";
import type { RunnerGroup } from "../../src/runner_group/schema.ts";

const deletedAt = Date.parse("2026-11-29T10:00:00Z");
const uid = "group-uid";

function group(): RunnerGroup {
  return {
    metadata: {
      name: "ci",
      namespace: "team",
      uid,
      resourceVersion: "7",
      deletionTimestamp: new Date(deletedAt),
      finalizers: ["other/finalizer", cleanupFinalizer],
    },
    spec: {} as RunnerGroup["spec"],
  };
}

function runnerJob(name: string, owner = uid): V1Job {
  const warm = name.includes("-warm-");
  const labels: Record<string, string> = {
    "gitea.bpg.pw/runnergroup-uid": owner,
    ...(warm ? { "gitea.bpg.pw/warm": "true" } : { "gitea.bpg.pw/job-id": name.split("-").at(-1)! }),
  };
  return { metadata: { name, namespace: "team", labels }, status: {} };
}

function registration(id: number, name: string, busy = false): RunnerRegistration {
  return { id, name, online: true, busy, disabled: false, ephemeral: true };
}

/** A forge and cluster that record what the teardown did to them. */
function world(
  runners: RunnerRegistration[],
  options: { failList?: boolean; running?: string[] } = {},
): { calls: string[]; input: (now: number, jobs: V1Job[]) => TeardownInput; finalizers: () => string[] | undefined } {
  const calls: string[] = [];
  const client = {
    listRunners: () => {
      calls.push("list");
      if (options.failList) return Promise.reject(new ForgeError("ServerError", "Gitea answered 503"));
      return Promise.resolve(runners);
    },
    setRunnerDisabled: (_: unknown, id: number) => (calls.push(`disable ${id}`), Promise.resolve()),
    deleteRunner: (_: unknown, id: number) => (calls.push(`delete-runner ${id}`), Promise.resolve()),
    listOpenJobs: () =>
      Promise.resolve({ queued: [], running: (options.running ?? []).map((runnerName) => ({ id: 1, runnerName })) }),
  } as unknown as GiteaClient;
  let finalizers: string[] | undefined;
  const input = (now: number, jobs: V1Job[]): TeardownInput => ({
    group: group(),
    forge: { client, endpoint: { scope: "repo", owner: "acme", repo: "app" } },
    runnerJobs: jobs,
    batch: {
      deleteNamespacedJob: ({ name }: { name: string }) => (calls.push(`delete-job ${name}`), Promise.resolve({})),
    } as unknown as TeardownInput["batch"],
    custom: {
      patchNamespacedCustomObject: ({ body }: { body: { metadata: { finalizers: string[] } } }) => {
        finalizers = body.metadata.finalizers;
        return Promise.resolve({});
      },
    } as unknown as TeardownInput["custom"],
    events: {
      record: (_t: unknown, _type: string, reason: string) => (calls.push(`event ${reason}`), Promise.resolve()),
    } as unknown as EventRecorder,
    target: { apiVersion: "gitea.bpg.pw/v1alpha1", kind: "RunnerGroup", name: "ci", namespace: "team", uid },
    log: logger("test"),
    now,
    timeoutMs: 600_000,
  });
  return { calls, input, finalizers: () => finalizers };
}

Deno.test("a deleted group's idle runners and registrations are removed, then the finalizer alone", async () => {
  const w = world([registration(1, "ci-warm-0"), registration(2, "ci-41"), registration(3, "hand-made")]);
  const result = await tearDownGroup(w.input(deletedAt + 1000, [runnerJob("ci-warm-0"), runnerJob("ci-42")]));
  assert.deepEqual(result, { released: true });
  assert.deepEqual(w.calls.filter((call) => !call.startsWith("event") && call !== "list"), [
    "disable 1",
    "disable 2",
    "delete-job ci-warm-0",
    "delete-runner 1",
    "delete-runner 2",
    // ci-42 never registered: its Job is deleted too.
    "delete-job ci-42",
  ]);
  assert.deepEqual(w.finalizers(), ["other/finalizer"], "other finalizers are kept");
});

Deno.test("a busy runner keeps the group until its job ends, or the deletion timeout", async () => {
  const busy = world([registration(1, "ci-41", true), registration(2, "ci-warm-0")]);
  const waiting = await tearDownGroup(busy.input(deletedAt + 1000, [runnerJob("ci-41"), runnerJob("ci-warm-0")]));
  assert.equal(waiting.released, false);
  assert.ok(!busy.calls.includes("delete-runner 1") && !busy.calls.includes("delete-job ci-41"));
  assert.ok(busy.calls.includes("delete-runner 2"), "the idle one goes at once");
  assert.equal(busy.finalizers(), undefined);

  const overdue = world([registration(1, "ci-41", true)]);
  const released = await tearDownGroup(overdue.input(deletedAt + 600_000, [runnerJob("ci-41")]));
  assert.deepEqual(released, { released: true });
  assert.ok(overdue.calls.includes("delete-job ci-41") && overdue.calls.includes("delete-runner 1"));
});

Deno.test("a runner that took a task while being disabled is waited for, not killed", async () => {
  const w = world([registration(1, "ci-warm-0")], { running: ["ci-warm-0"] });
  const result = await tearDownGroup(w.input(deletedAt + 1000, [runnerJob("ci-warm-0")]));
  assert.equal(result.released, false);
  assert.ok(w.calls.includes("disable 1"));
  assert.ok(!w.calls.includes("delete-runner 1"));
});

Deno.test("a forge that does not answer is waited for until the timeout, then the group goes with a warning", async () => {
  const early = world([], { failList: true });
  assert.equal((await tearDownGroup(early.input(deletedAt + 1000, []))).released, false);
  assert.ok(early.calls.includes("event CleanupWaiting"));
  const late = world([], { failList: true });
  assert.deepEqual(await tearDownGroup(late.input(deletedAt + 600_000, [])), { released: true });
  assert.ok(late.calls.includes("event CleanupIncomplete"));
});

Deno.test("without an API token the group is released at once, saying what may be left", async () => {
  const w = world([]);
  const result = await tearDownGroup({ ...w.input(deletedAt + 1000, []), forge: { unavailable: "no API token" } });
  assert.deepEqual(result, { released: true });
  assert.deepEqual(w.calls, ["event CleanupIncomplete"]);
});

Deno.test("registrations named like another group's runner Jobs are left alone", async () => {
  // "ci-41" could be this group's name for job 41, but a Job of another group holds that name.
  const w = world([registration(1, "ci-41")]);
  const result = await tearDownGroup(w.input(deletedAt + 1000, [runnerJob("ci-41", "other-uid")]));
  assert.deepEqual(result, { released: true });
  assert.ok(!w.calls.includes("delete-runner 1"));
});
