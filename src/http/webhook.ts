/**
 * Push mode: Gitea `workflow_job` webhooks. A valid delivery only pokes the demand pollers of the targets that cover
 * its repository, so the reconcile stays level-triggered and never acts on the payload itself; polling remains the
 * safety net. Bodies are never logged.
 */
import { Buffer } from "node:buffer";
import { createHmac, timingSafeEqual } from "node:crypto";
import type { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { z } from "zod";
import { logger } from "../log.ts";

export const webhookPath = "/webhooks/gitea";
export const defaultMaxBodyBytes = 1024 * 1024;

export interface WebhookOptions {
  /** The shared secret, or undefined while none is configured (the endpoint then answers 404). */
  secret: () => string | undefined;
  /** Called for each authentic workflow_job delivery. */
  onJobEvent: (event: { owner: string; repo: string; action: string }) => void;
  maxBodyBytes?: number;
}

const payloadSchema = z.object({
  action: z.string(),
  repository: z.object({ name: z.string(), owner: z.object({ login: z.string() }) }),
});

/** Whether `signature` (hex) is the HMAC-SHA256 of `body` with `secret`, compared in constant time. */
export function verifySignature(secret: string, body: Uint8Array, signature: string): boolean {
  if (!/^[0-9a-fA-F]{64}$/.test(signature)) return false;
  const expected = createHmac("sha256", secret).update(body).digest();
  return timingSafeEqual(expected, Buffer.from(signature, "hex"));
}

export function addWebhookRoutes(app: Hono, options: WebhookOptions): void {
  const log = logger("webhook");
  app.post(
    webhookPath,
    bodyLimit({
      maxSize: options.maxBodyBytes ?? defaultMaxBodyBytes,
      onError: (c) => {
        log.warn("Rejected a webhook delivery: body over {limit} bytes", {
          limit: options.maxBodyBytes ?? defaultMaxBodyBytes,
        });
        return c.text("body too large", 413);
      },
    }),
    async (c) => {
      const secret = options.secret();
      if (secret === undefined) return c.text("webhooks are not configured", 404);
      const delivery = c.req.header("x-gitea-delivery") ?? "";
      const body = new Uint8Array(await c.req.arrayBuffer());
      if (!verifySignature(secret, body, c.req.header("x-gitea-signature") ?? "")) {
        log.warn("Rejected webhook delivery {delivery}: missing or wrong signature", { delivery });
        return c.text("invalid signature", 401);
      }
      const event = c.req.header("x-gitea-event-type") ?? c.req.header("x-gitea-event") ?? "";
      if (event !== "workflow_job") {
        log.debug("Ignored webhook delivery {delivery} of event {event}", { delivery, event });
        return c.text("ignored", 202);
      }
      let payload: z.infer<typeof payloadSchema>;
      try {
        payload = payloadSchema.parse(JSON.parse(new TextDecoder().decode(body)));
      } catch {
        log.warn("Rejected webhook delivery {delivery}: not a workflow_job payload", { delivery });
        return c.text("malformed workflow_job payload", 400);
      }
      const { action, repository } = payload;
      log.debug("Webhook delivery {delivery}: job {action} in {owner}/{repo}", {
        delivery,
        action,
        owner: repository.owner.login,
        repo: repository.name,
      });
      options.onJobEvent({ owner: repository.owner.login, repo: repository.name, action });
      return c.text("accepted", 202);
    },
  );
}
