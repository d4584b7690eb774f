/** The operator's HTTP endpoints (hono): liveness, readiness, Prometheus metrics and Gitea webhooks. */
import { Hono } from "hono";
import { addWebhookRoutes, type WebhookOptions } from "./webhook.ts";

export interface HealthSource {
  /** Informers synced and the operator able to work. */
  ready(): { ready: boolean; reason: string };
}

export interface MetricsSource {
  /** The exposition text and its content type. */
  metrics(): Promise<{ text: string; contentType: string }>;
}

export function createApp(health: HealthSource, metrics?: MetricsSource, webhook?: WebhookOptions): Hono {
  const app = new Hono();
  app.get("/healthz", (c) => c.text("ok"));
  app.get("/readyz", (c) => {
    const { ready, reason } = health.ready();
    return c.text(reason, ready ? 200 : 503);
  });
  if (metrics) {
    app.get("/metrics", async (c) => {
      const { text, contentType } = await metrics.metrics();
      return c.body(text, 200, { "content-type": contentType });
    });
  }
  if (webhook) addWebhookRoutes(app, webhook);
  return app;
}
