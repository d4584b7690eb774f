import assert from "node:assert/strict";
import { ForgeError } from "../../src/forge/errors.ts";
import type { GiteaClient } from "../../src/forge/gitea_client.ts";
import type { EventRecorder } from "../../src/kube/events.ts";
import {
  type CredentialsOptions,
  RegistrationTokenCheck,
  tokenCheckIntervalMs,
} from "../../src/runner_group/credentials.ts";
import type { RunnerGroup } from "../../src/runner_group/schema.ts";
import { repoSpec } from "./fixtures.ts";

const spec = repoSpec;
const group = { metadata: { name: "ci", namespace: "team", uid: "u1" }, spec } as RunnerGroup;
const target = { apiVersion: "gitea.bpg.pw/v1alpha1", kind: "RunnerGroup", name: "ci", namespace: "team", uid: "u1" };

function setup(forgeToken: () => string): { log: string[]; check: RegistrationTokenCheck } {
  const log: string[] = [];
  const options: CredentialsOptions = {
    core: {
      replaceNamespacedSecret: ({ name, body }: { name: string; body: { stringData: Record<string, string> } }) => {
        log.push(`replace ${name}=${body.stringData.token}`);
        return Promise.resolve({});
      },
    } as unknown as CredentialsOptions["core"],
    readSecret: () => Promise.resolve(undefined),
    events: {
      record: (_t: unknown, _k: string, reason: string) => (log.push(`event ${reason}`), Promise.resolve()),
    } as unknown as EventRecorder,
    forgeClient: () =>
      Promise.resolve({
        createRegistrationToken: () => {
          log.push("ask");
          return Promise.resolve(forgeToken());
        },
      } as unknown as GiteaClient),
  };
  return { log, check: new RegistrationTokenCheck(options) };
}

const credentials = (registrationToken: string, own = false) => ({
  ok: true as const,
  apiToken: "api-token",
  registrationToken,
  registrationSecret: own ? { name: "tokens", key: "registration" } : { name: "ci-registration-token", key: "token" },
  managed: !own,
});

Deno.test("a managed token that the forge reset is renewed in its Secret, with an event", async () => {
  let current = "old";
  const { log, check } = setup(() => current);
  const input = { groupKey: "team/ci", group, spec, targetKey: "t", lastFailureAt: -Infinity, target };
  assert.deepEqual(await check.check({ ...input, credentials: credentials("old"), now: 0 }), { state: "current" });
  current = "new";
  // Within the interval and without a failure, the forge is not asked again.
  assert.deepEqual(await check.check({ ...input, credentials: credentials("old"), now: 1000 }), { state: "current" });
  assert.equal(log.filter((line) => line === "ask").length, 1);
  // A runner failed after the check: asked again, and the Secret renewed.
  const renewed = await check.check({ ...input, credentials: credentials("old"), lastFailureAt: 20_000, now: 21_000 });
  assert.deepEqual(renewed, { state: "renewed" });
  assert.ok(log.includes("replace ci-registration-token=new"));
  assert.ok(log.includes("event RegistrationTokenRenewed"));
  // The periodic check, without any failure.
  current = "newer";
  await check.check({ ...input, credentials: credentials("new"), now: 21_000 + tokenCheckIntervalMs });
  assert.ok(log.includes("replace ci-registration-token=newer"));
});

Deno.test("a group's own token is never written; after a runner failure it is reported as refused", async () => {
  const { log, check } = setup(() => "current");
  const ownSpec = { ...spec, registrationToken: { name: "tokens", key: "registration" } };
  const input = { groupKey: "team/ci", group, spec: ownSpec, targetKey: "t", target };
  // No failure: not even asked (the token may be another scope's, e.g. an organization's).
  assert.deepEqual(
    await check.check({ ...input, credentials: credentials("stale", true), lastFailureAt: -Infinity, now: 0 }),
    { state: "unchecked" },
  );
  assert.equal(log.length, 0);
  const refused = await check.check({ ...input, credentials: credentials("stale", true), lastFailureAt: 5, now: 10 });
  assert.equal(refused.state, "refused");
  assert.match((refused as { message: string }).message, /Secret team\/tokens \(key "registration"\)/);
  assert.ok(!log.some((line) => line.startsWith("replace")));
  // Fixed by the user: current again.
  const fixed = await check.check({ ...input, credentials: credentials("current", true), lastFailureAt: 5, now: 20 });
  assert.deepEqual(fixed, { state: "current" });
});

Deno.test("a forge that refuses the question leaves the token unchecked until the next interval", async () => {
  const { check } = setup(() => {
    throw new ForgeError("Forbidden", "403");
  });
  const input = { groupKey: "team/ci", group, spec, targetKey: "t", lastFailureAt: -Infinity, target };
  assert.deepEqual(await check.check({ ...input, credentials: credentials("old"), now: 0 }), { state: "unchecked" });
});
