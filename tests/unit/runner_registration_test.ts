/**
 * The per-runner registration path (Forgejo 15) and the removal of a Forgejo runner, with recording fakes for the
 * Kubernetes and forge calls: what is done in which order, and what is undone when a step fails.
 */
import assert from "node:assert/strict";
import { ApiException, type V1Job, type V1Secret } from "@kubernetes/client-node";
import type { ForgeClient, RunnerRegistration } from "../../src/forge/forge_client.ts";
import { forgeFeatures, parseForgeVersion } from "../../src/forge/forge_client.ts";
import { logger } from "../../src/log.ts";
import { RunnerCleanup } from "../../src/runner_group/cleanup.ts";
import { createRegisteredRunnerJob } from "../../src/runner_group/runner_registration.ts";

const forge = parseForgeVersion("forgejo", "15.0.0+gitea-1.22.0");
const endpoint = { scope: "repo" as const, owner: "acme", repo: "app" };
const job: V1Job = { metadata: { name: "fj-42", namespace: "ci" }, spec: { template: { spec: { containers: [] } } } };

interface FakeOptions {
  jobCreate?: "ok" | "conflict" | "fail";
  /** The group uid label of the Job that exists already (jobCreate "conflict"). */
  existingJobGroupUid?: string;
  secretExists?: boolean;
  registrations?: RunnerRegistration[];
}

interface Fakes {
  calls: string[];
  secrets: Map<string, V1Secret>;
  client: ForgeClient;
  core: unknown;
  batch: unknown;
}

function fakes(options: FakeOptions = {}): Fakes {
  const calls: string[] = [];
  const secrets = new Map<string, V1Secret>();
  if (options.secretExists) secrets.set("fj-42-runner", { metadata: { name: "fj-42-runner" } });
  const client = {
    forge,
    features: forgeFeatures(forge),
    registerRunner: (_: unknown, runner: { name: string }) => {
      calls.push(`register ${runner.name}`);
      return Promise.resolve({ id: 7, uuid: "uuid-7", token: "runner-token-7" });
    },
    deleteRunner: (_: unknown, id: number) => (calls.push(`delete-registration ${id}`), Promise.resolve()),
    listRunners: () => (calls.push("list-registrations"), Promise.resolve(options.registrations ?? [])),
    setRunnerDisabled: () => Promise.reject(new Error("Forgejo cannot disable a runner")),
    listOpenJobs: () => Promise.reject(new Error("not needed")),
  } as unknown as ForgeClient;
  const core = {
    createNamespacedSecret: ({ body }: { body: V1Secret }) => {
      calls.push(`create-secret ${body.metadata!.name} owner=${body.metadata!.ownerReferences![0].kind}`);
      if (secrets.has(body.metadata!.name!)) return Promise.reject(new ApiException(409, "exists", "", {}));
      secrets.set(body.metadata!.name!, body);
      return Promise.resolve(body);
    },
    replaceNamespacedSecret: ({ body }: { body: V1Secret }) => {
      calls.push(`replace-secret ${body.metadata!.name} owner=${body.metadata!.ownerReferences![0].kind}`);
      secrets.set(body.metadata!.name!, body);
      return Promise.resolve(body);
    },
    deleteNamespacedSecret: ({ name }: { name: string }) => {
      calls.push(`delete-secret ${name}`);
      secrets.delete(name);
      return Promise.resolve({});
    },
  };
  const batch = {
    createNamespacedJob: ({ body }: { body: V1Job }) => {
      calls.push(`create-job ${body.metadata!.name}`);
      if (options.jobCreate === "conflict") return Promise.reject(new ApiException(409, "exists", "", {}));
      if (options.jobCreate === "fail") return Promise.reject(new ApiException(422, "invalid", "", {}));
      return Promise.resolve({ ...body, metadata: { ...body.metadata, uid: "job-uid" } });
    },
    deleteNamespacedJob: ({ name }: { name: string }) => (calls.push(`delete-job ${name}`), Promise.resolve({})),
    readNamespacedJob: ({ name }: { name: string }) => {
      calls.push(`read-job ${name}`);
      const labels = { "gitea.bpg.pw/runnergroup-uid": options.existingJobGroupUid ?? "group-uid" };
      return Promise.resolve({ metadata: { name, namespace: "ci", uid: "existing-job-uid", labels } });
    },
  };
  return { calls, secrets, client, core, batch };
}

const create = async (f: Fakes): Promise<string | undefined> =>
  (await createRegisteredRunnerJob({
    batch: f.batch as never,
    core: f.core as never,
    client: f.client,
    endpoint,
    group: { name: "fj", uid: "group-uid" },
    job,
    purpose: "job 42 of acme/app",
    log: logger("test"),
  }))?.metadata?.uid;

Deno.test("a runner of its own: registered, credentials stored, Job created, then the Secret handed to the Job", async () => {
  const f = fakes();
  assert.equal(await create(f), "job-uid", "the created Job is returned");
  assert.deepEqual(f.calls, [
    "register fj-42",
    "create-secret fj-42-runner owner=RunnerGroup",
    "create-job fj-42",
    "replace-secret fj-42-runner owner=Job",
  ]);
  const secret = f.secrets.get("fj-42-runner")!;
  assert.deepEqual(secret.stringData, { uuid: "uuid-7", token: "runner-token-7" });
  assert.deepEqual(secret.metadata!.ownerReferences!.map((o) => [o.kind, o.name, o.uid]), [[
    "Job",
    "fj-42",
    "job-uid",
  ]]);
});

Deno.test("a Job that cannot be created takes its registration and Secret with it", async () => {
  const f = fakes({ jobCreate: "fail" });
  await assert.rejects(create(f), /Cannot create runner Job ci\/fj-42/);
  assert.deepEqual(f.calls.slice(-2), ["delete-registration 7", "delete-secret fj-42-runner"]);
  assert.equal(f.secrets.size, 0);
});

Deno.test("a Job that exists already is not created twice; a Secret left by an interrupted attempt is replaced", async () => {
  const conflict = fakes({ jobCreate: "conflict" });
  assert.equal(await create(conflict), undefined);
  assert.ok(!conflict.calls.some((call) => call.startsWith("delete-")), "its registration is left to the sweep");
  // The rewritten Secret goes back to the existing Job, not left to the group until it is deleted.
  assert.deepEqual(conflict.calls.slice(2), [
    "create-job fj-42",
    "read-job fj-42",
    "replace-secret fj-42-runner owner=Job",
  ]);
  assert.deepEqual(conflict.secrets.get("fj-42-runner")!.metadata!.ownerReferences!.map((o) => [o.kind, o.uid]), [[
    "Job",
    "existing-job-uid",
  ]]);
  // A Job of that name that is not the group's is not touched; what this attempt made is removed.
  const foreign = fakes({ jobCreate: "conflict", existingJobGroupUid: "another-group" });
  assert.equal(await create(foreign), undefined);
  assert.deepEqual(foreign.calls.slice(3), ["read-job fj-42", "delete-registration 7", "delete-secret fj-42-runner"]);
  assert.equal(foreign.secrets.size, 0);
  const leftover = fakes({ secretExists: true });
  assert.equal(await create(leftover), "job-uid");
  assert.deepEqual(leftover.calls.slice(1, 3), [
    "create-secret fj-42-runner owner=RunnerGroup",
    "replace-secret fj-42-runner owner=RunnerGroup",
  ]);
});

Deno.test("an idle Forgejo runner is removed without disabling it; a busy one is kept", async () => {
  const registration = (busy: boolean): RunnerRegistration => ({
    id: 9,
    name: "fj-42",
    online: busy,
    busy,
    disabled: false,
    ephemeral: true,
  });
  for (const busy of [false, true]) {
    const f = fakes({ registrations: [registration(busy)] });
    const cleanup = new RunnerCleanup({
      context: {
        key: "ci/fj",
        namespace: "ci",
        name: "fj",
        uid: "group-uid",
        spec: {} as never,
        labels: [],
        registrationToken: { name: "x", key: "y" },
      },
      client: f.client,
      endpoint,
      batch: f.batch as never,
      events: { record: () => Promise.resolve() } as never,
      target: {} as never,
      log: logger("test"),
    });
    assert.equal(await cleanup.removeIdleRunner("fj-42", 0, 10_000), !busy);
    assert.deepEqual(
      f.calls,
      busy ? ["list-registrations"] : ["list-registrations", "delete-job fj-42", "delete-registration 9"],
    );
  }
});
