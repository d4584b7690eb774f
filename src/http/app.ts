/** The operator's HTTP endpoints (hono): liveness, readiness and Prometheus metrics. */
import { Hono } from "hono";

export interface HealthSource {
  /** Informers synced and the operator able to work. */
  ready(): { ready: boolean; reason: string };
}

export interface MetricsSource {
  /** The exposition text and its content type. */
  metrics(): Promise<{ text: string; contentType: string }>;
}

export function createApp(health: HealthSource, metrics?: MetricsSource): Hono {
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
  return app;
}
