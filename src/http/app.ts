/** The operator's HTTP endpoints (hono): liveness and readiness for the Deployment's probes. */
import { Hono } from "hono";

export interface HealthSource {
  /** Informers synced and the operator able to work. */
  ready(): { ready: boolean; reason: string };
}

export function createApp(health: HealthSource): Hono {
  const app = new Hono();
  app.get("/healthz", (c) => c.text("ok"));
  app.get("/readyz", (c) => {
    const { ready, reason } = health.ready();
    return c.text(reason, ready ? 200 : 503);
  });
  return app;
}
