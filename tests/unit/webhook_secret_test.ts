import assert from "node:assert/strict";
import type { CoreV1Api } from "../../src/kube/api.ts";
import { WebhookSecret } from "../../src/http/webhook_secret.ts";
import { redact } from "../../src/log.ts";

/** A Secret store read by name; `reads` records what was asked. */
function core(data: () => Record<string, string> | Error): { core: CoreV1Api; reads: string[] } {
  const reads: string[] = [];
  return {
    reads,
    core: {
      readNamespacedSecret: ({ namespace, name }: { namespace: string; name: string }) => {
        reads.push(`${namespace}/${name}`);
        const answer = data();
        return answer instanceof Error ? Promise.reject(answer) : Promise.resolve({ data: answer });
      },
    } as unknown as CoreV1Api,
  };
}

const b64 = (text: string) => btoa(text);

Deno.test("the webhook secret is read from its Secret's key, trimmed, re-read on load, and redacted from logs", async () => {
  let value = "first-webhook-secret-1234\n";
  const { core: client, reads } = core(() => ({ secret: b64(value) }));
  const secret = new WebhookSecret("gro-system/gitea-webhook:secret", client);
  assert.equal(secret.value, undefined);
  await secret.load();
  assert.equal(secret.value, "first-webhook-secret-1234");
  assert.deepEqual(reads, ["gro-system/gitea-webhook"]);
  assert.ok(!redact("got first-webhook-secret-1234").includes("first-webhook-secret-1234"));
  // Rotated: the next load (each resync) picks it up.
  value = "second-webhook-secret-5678";
  await secret.load();
  assert.equal(secret.value, "second-webhook-secret-5678");
});

Deno.test("a webhook secret that cannot be read, or lacks its key, refuses webhooks until it can", async () => {
  let answer: Record<string, string> | Error = { secret: b64("valid-webhook-secret-0000") };
  const { core: client } = core(() => answer);
  const secret = new WebhookSecret("gro-system/gitea-webhook:secret", client);
  await secret.load();
  assert.equal(secret.value, "valid-webhook-secret-0000");
  answer = { other: b64("x") };
  await secret.load();
  assert.equal(secret.value, undefined);
  answer = new Error("forbidden");
  await secret.load();
  assert.equal(secret.value, undefined);
  answer = { secret: b64("valid-webhook-secret-0000") };
  await secret.load();
  assert.equal(secret.value, "valid-webhook-secret-0000");
});

Deno.test("without --webhook-secret nothing is read", async () => {
  const { core: client, reads } = core(() => ({}));
  const secret = new WebhookSecret("", client);
  await secret.load();
  assert.equal(secret.value, undefined);
  assert.deepEqual(reads, []);
});
