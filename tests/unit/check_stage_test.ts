import assert from "node:assert/strict";
import type { GiteaClient } from "../../src/forge/gitea_client.ts";
import type { BatchV1Api } from "../../src/kube/api.ts";
import type { EventRecorder } from "../../src/kube/events.ts";
import { KubernetesApiError } from "../../src/kube/rest.ts";
import { GroupChecks } from "../../src/runner_group/check_stage.ts";
import type { CredentialsOptions } from "../../src/runner_group/credentials.ts";
import type { GroupDemand } from "../../src/runner_group/demand.ts";
import type { RunnerJobRecord } from "../../src/runner_group/planner.ts";
import type { RunnerGroup, RunnerGroupSpec } from "../../src/runner_group/schema.ts";
import { repoSpec } from "./fixtures.ts";

const spec = { ...repoSpec, registrationToken: { name: "tokens", key: "registration" } };
const group = { metadata: { name: "ci", namespace: "team", uid: "u1", generation: 1 }, spec } as RunnerGroup;
const target = { apiVersion: "gitea.bpg.pw/v1alpha1", kind: "RunnerGroup", name: "ci", namespace: "team", uid: "u1" };
// The group's own registration token: checked against the forge only after a runner failed.
const credentials = {
  ok: true as const,
  apiToken: "api-token",
  registrationToken: "stale",
  registrationSecret: { name: "tokens", key: "registration" },
  managed: false,
};

function setup(dryRun: () => Promise<unknown>): { log: string[]; checks: GroupChecks } {
  const log: string[] = [];
  const batch = {
    createNamespacedJob: () => (log.push("dry run"), dryRun()),
  } as unknown as BatchV1Api;
  const events = {
    record: (_t: unknown, _k: string, reason: string) => (log.push(`event ${reason}`), Promise.resolve()),
  } as unknown as EventRecorder;
  const options: CredentialsOptions = {
    core: {} as CredentialsOptions["core"],
    readSecret: () => Promise.resolve(undefined),
    events,
    forgeClient: () =>
      Promise.resolve({
        createRegistrationToken: () => (log.push("ask forge"), Promise.resolve("current")),
      } as unknown as GiteaClient),
  };
  return { log, checks: new GroupChecks(batch, options, events) };
}

const demandWith = (records: RunnerJobRecord[]) =>
  ({ forge: "gitea.example.com", targetKey: "t", records }) as GroupDemand;
const input = (
  records: RunnerJobRecord[],
  extra: { runnerKind?: "gitea" | "forgejo"; spec?: RunnerGroupSpec } = {},
) => ({
  key: "team/ci",
  group,
  spec: extra.spec ?? spec,
  labels: [{ name: "ubuntu-latest", schema: "host" as const, arg: "" }],
  credentials,
  demand: demandWith(records),
  ...(extra.runnerKind ? { runnerKind: extra.runnerKind } : {}),
  ownRegistration: false,
  runnerImage: "runner:test",
  target,
  now: 10_000,
});

Deno.test("a template the API server rejects stops the stage, with an event, before the token is checked", async () => {
  const { log, checks } = setup(() =>
    Promise.reject(
      new KubernetesApiError(422, { message: "spec.template.spec.containers: Required value" }, "POST", "/"),
    )
  );
  const failed: RunnerJobRecord = { name: "ci-1", forgeJobId: 1, attempt: 0, state: "failed", finishedAt: 5_000 };
  const result = await checks.check(input([failed]));
  assert.equal(result.ok, false);
  assert.equal(!result.ok && result.reason, "InvalidTemplate");
  assert.match(!result.ok ? result.message : "", /containers: Required value/);
  assert.deepEqual(log, ["dry run", "event InvalidTemplate"]);
  // The verdict is kept for the spec's generation: no second dry run.
  await checks.check(input([failed]));
  assert.equal(log.filter((line) => line === "dry run").length, 1);
});

Deno.test("a runner that failed makes the stage check the token; an evicted one does not", async () => {
  const { log, checks } = setup(() => Promise.resolve({}));
  const evicted: RunnerJobRecord = {
    name: "ci-1",
    forgeJobId: 1,
    attempt: 0,
    state: "failed",
    finishedAt: 5_000,
    evicted: true,
  };
  assert.deepEqual(await checks.check(input([evicted])), { ok: true, tokenCheck: { state: "unchecked" } });
  assert.ok(!log.includes("ask forge"));
  const failed: RunnerJobRecord = { name: "ci-2", forgeJobId: 2, attempt: 0, state: "failed", finishedAt: 6_000 };
  const result = await checks.check(input([evicted, failed]));
  assert.equal(result.ok && result.tokenCheck.state, "refused");
  assert.ok(log.includes("ask forge"));
});

Deno.test("a warm pool on Forgejo is reported as unsupported, on Gitea or an undetected forge it is not", async () => {
  const { log, checks } = setup(() => Promise.resolve({}));
  const warm = { ...spec, minIdleRunners: 2 } as RunnerGroupSpec;
  // Not detected yet: the runner is Gitea's until the forge is known.
  await checks.check(input([], { spec: warm }));
  await checks.check(input([], { runnerKind: "gitea", spec: warm }));
  assert.ok(!log.includes("event WarmPoolUnsupported"));
  await checks.check(input([], { runnerKind: "forgejo", spec: warm }));
  assert.ok(log.includes("event WarmPoolUnsupported"));
});
