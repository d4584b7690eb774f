import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { targetCovers } from "../../src/forge/demand_poller.ts";
import { createApp } from "../../src/http/app.ts";
import { verifySignature, webhookPath } from "../../src/http/webhook.ts";

const secret = "webhook-secret-value";
const sign = (body: string, key = secret): string => createHmac("sha256", key).update(body).digest("hex");
const payload = JSON.stringify({
  action: "queued",
  workflow_job: { id: 7 },
  repository: { name: "app", owner: { login: "acme" } },
});

type JobEvent = { owner: string; repo: string; action: string };

function app(options: { secret?: string; maxBodyBytes?: number } = { secret }): {
  post: (body: string, headers: Record<string, string>) => Promise<Response>;
  events: JobEvent[];
} {
  const events: JobEvent[] = [];
  const hono = createApp({ ready: () => ({ ready: true, reason: "ok" }) }, undefined, {
    secret: () => options.secret,
    onJobEvent: (event) => events.push(event),
    maxBodyBytes: options.maxBodyBytes,
  });
  const post = (body: string, headers: Record<string, string>): Promise<Response> =>
    Promise.resolve(hono.request(webhookPath, { method: "POST", body, headers }));
  return { post, events };
}

Deno.test("a signed workflow_job delivery pokes the pollers of its repository", async () => {
  const { post, events } = app();
  const response = await post(payload, { "x-gitea-event": "workflow_job", "x-gitea-signature": sign(payload) });
  assert.equal(response.status, 202);
  assert.deepEqual(events, [{ owner: "acme", repo: "app", action: "queued" }]);
});

Deno.test("bad input: wrong or missing signature 401, malformed body 400, too large 413, other events 202", async () => {
  const { post, events } = app({ secret, maxBodyBytes: 1024 });
  const headers = { "x-gitea-event": "workflow_job" };
  assert.equal((await post(payload, { ...headers, "x-gitea-signature": sign(payload, "other") })).status, 401);
  assert.equal((await post(payload, headers)).status, 401);
  assert.equal((await post(payload, { ...headers, "x-gitea-signature": "zz" })).status, 401);
  const junk = "{not json";
  assert.equal((await post(junk, { ...headers, "x-gitea-signature": sign(junk) })).status, 400);
  const wrongShape = JSON.stringify({ action: "queued" });
  assert.equal((await post(wrongShape, { ...headers, "x-gitea-signature": sign(wrongShape) })).status, 400);
  const big = JSON.stringify({ padding: "x".repeat(2048) });
  assert.equal((await post(big, { ...headers, "x-gitea-signature": sign(big) })).status, 413);
  const push = JSON.stringify({ ref: "refs/heads/main" });
  assert.equal((await post(push, { "x-gitea-event": "push", "x-gitea-signature": sign(push) })).status, 202);
  assert.deepEqual(events, [], "nothing was poked");
});

Deno.test("without a configured secret the endpoint answers 404", async () => {
  const { post } = app({});
  assert.equal((await post(payload, { "x-gitea-signature": sign(payload) })).status, 404);
});

Deno.test("verifySignature is an HMAC-SHA256 check", () => {
  const body = new TextEncoder().encode("abc");
  assert.equal(verifySignature("k", body, createHmac("sha256", "k").update("abc").digest("hex")), true);
  assert.equal(verifySignature("k", body, createHmac("sha256", "k").update("abd").digest("hex")), false);
});

Deno.test("a webhook pokes only targets that list the repository's jobs", () => {
  const base = { baseUrl: "https://git.example.com", token: "t" };
  assert.equal(targetCovers({ ...base, endpoint: { scope: "global" } }, "acme", "app"), true);
  assert.equal(targetCovers({ ...base, endpoint: { scope: "org", org: "ACME" } }, "acme", "app"), true);
  assert.equal(targetCovers({ ...base, endpoint: { scope: "org", org: "other" } }, "acme", "app"), false);
  assert.equal(
    targetCovers({ ...base, endpoint: { scope: "user" }, expectedUser: "alice" }, "alice", "site"),
    true,
  );
  assert.equal(
    targetCovers({ ...base, endpoint: { scope: "repo", owner: "acme", repo: "app" } }, "acme", "lib"),
    false,
  );
});
