import assert from "node:assert/strict";
import { managedRegistrationSecret } from "../../src/runner_group/runner_job.ts";
import { parseRunnerGroupSpec } from "../../src/runner_group/schema.ts";
import { registrationTokenSource } from "../../src/runner_group/token_selector.ts";

const kept = { secret: managedRegistrationSecret("app"), managed: true };
const found = { ok: true };
const missing = { ok: false };

Deno.test("without a registrationToken selector the operator keeps the token", () => {
  assert.deepEqual(registrationTokenSource("app", undefined, undefined), kept);
  assert.deepEqual(kept.secret, { name: "app-registration-token", key: "token" });
});

Deno.test("a named registration token is used when found, whether optional or not", () => {
  for (const optional of [undefined, false, true]) {
    const selector = { name: "tokens", key: "registration", optional };
    assert.deepEqual(registrationTokenSource("app", selector, found), {
      secret: { name: "tokens", key: "registration" },
      managed: false,
    });
  }
});

Deno.test("an optional registration token whose Secret or key is missing falls back to the kept token", () => {
  assert.deepEqual(
    registrationTokenSource("app", { name: "tokens", key: "registration", optional: true }, missing),
    kept,
  );
});

Deno.test("a required registration token that is missing stays the named one, for the caller to report", () => {
  for (const optional of [undefined, false]) {
    const source = registrationTokenSource("app", { name: "tokens", key: "registration", optional }, missing);
    assert.deepEqual(source, { secret: { name: "tokens", key: "registration" }, managed: false });
  }
});

Deno.test("the operator's schema takes optional on both selectors and still needs name and key", () => {
  const spec = (authToken: unknown, registrationToken?: unknown): unknown => ({
    scope: "global",
    giteaURL: "https://git.example.com",
    maxActiveRunners: 1,
    authToken,
    ...(registrationToken === undefined ? {} : { registrationToken }),
  });
  const parsed = parseRunnerGroupSpec(
    spec({ name: "a", key: "api", optional: false }, { name: "a", key: "registration", optional: true }),
  );
  assert.ok(parsed.success, JSON.stringify(parsed.error?.issues));
  assert.equal(parsed.data.registrationToken?.optional, true);
  assert.equal(parsed.data.authToken.optional, false);
  assert.equal(parseRunnerGroupSpec(spec({ key: "api" })).success, false, "a selector without name");
  assert.equal(parseRunnerGroupSpec(spec({ name: "", key: "api" })).success, false, 'name ""');
  assert.equal(parseRunnerGroupSpec(spec({ name: "a", key: "api", optional: "yes" })).success, false);
});
