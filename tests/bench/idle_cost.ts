/**
 * Idle cost of the fleet (22 groups, no queued jobs) over a window: forge requests per minute (the operator's
 * `gitea_runner_operator_forge_requests_total`, scraped at both ends), Kubernetes API requests per minute (the API
 * server's audit log of the operator's identity) and CPU seconds of the operator process (/proc).
 */
import type { BenchContext } from "./context.ts";
import { operatorUser } from "./context.ts";
import { ensureFleet } from "./fleet.ts";
import { auditedRequests, cpuSeconds, metricByLabel, scrapeMetrics } from "./probes.ts";
import type { Figure, Target } from "./report.ts";

export interface IdleCostResult {
  seconds: number;
  targets: number;
  forgeRequests: number;
  /** Forge requests in the window by endpoint template. */
  forgeRequestsByEndpoint: Record<string, number>;
  kubeRequests: number;
  kubeRequestsByKind: Record<string, number>;
  cpuSeconds: number;
  figures: Figure[];
}

const forgeRequestsMetric = "gitea_runner_operator_forge_requests_total";

export async function measureIdleCost(ctx: BenchContext, seconds: number): Promise<IdleCostResult> {
  const fleet = await ensureFleet(ctx);
  const forgeBefore = metricByLabel(await scrapeMetrics(fleet.port), forgeRequestsMetric, "endpoint");
  const cpuBefore = cpuSeconds(fleet.pid);
  const from = Date.now();
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  const to = Date.now();
  const cpuAfter = cpuSeconds(fleet.pid);
  const forgeAfter = metricByLabel(await scrapeMetrics(fleet.port), forgeRequestsMetric, "endpoint");
  const kube = await auditedRequests(ctx.auditLogPath, operatorUser, from, to);
  const minutes = (to - from) / 60_000;
  const byEndpoint = Object.fromEntries(
    Object.entries(forgeAfter).map(([endpoint, count]) => [endpoint, count - (forgeBefore[endpoint] ?? 0)]),
  );
  const forgeRequests = Object.values(byEndpoint).reduce((sum, count) => sum + count, 0);
  // Polls are the requests for the jobs lists; the rest is the ghost-runner sweep (runners lists) and the like.
  const pollRequests = Object.entries(byEndpoint).filter(([endpoint]) => endpoint.endsWith("/actions/jobs"))
    .reduce((sum, [, count]) => sum + count, 0);
  const intervals = (to - from) / 1000 / fleet.pollIntervalSeconds;
  const perTargetPerInterval = forgeRequests / fleet.targets / intervals;
  const pollsPerTargetPerInterval = pollRequests / fleet.targets / intervals;
  const endpoints = Object.entries(byEndpoint).filter(([, count]) => count > 0).sort((a, b) => b[1] - a[1])
    .map(([endpoint, count]) => `${endpoint} ${count}`).join(", ");
  const part = `idle, ${fleet.targets} groups, ${Math.round(minutes * 60)} s`;
  const topKinds = Object.entries(kube.byKind).sort((a, b) => b[1] - a[1]).slice(0, 5)
    .map(([kind, count]) => `${kind} ${count}`).join(", ");
  return {
    seconds: (to - from) / 1000,
    targets: fleet.targets,
    forgeRequests,
    forgeRequestsByEndpoint: byEndpoint,
    kubeRequests: kube.total,
    kubeRequestsByKind: kube.byKind,
    cpuSeconds: cpuAfter - cpuBefore,
    figures: [
      {
        part,
        what: "forge requests per minute",
        unit: "req/min",
        value: forgeRequests / minutes,
        note: `by endpoint: ${endpoints || "none"}`,
      },
      {
        part,
        what: `forge requests per target per ${fleet.pollIntervalSeconds} s poll interval, all endpoints`,
        unit: "",
        value: perTargetPerInterval,
      },
      {
        part,
        what: `jobs-list requests (polls) per target per ${fleet.pollIntervalSeconds} s poll interval`,
        unit: "",
        value: pollsPerTargetPerInterval,
        target: onePollPerInterval(pollsPerTargetPerInterval, intervals),
      },
      {
        part,
        what: "Kubernetes API requests per minute",
        unit: "req/min",
        value: kube.total / minutes,
        note: `most: ${topKinds || "none"}`,
      },
      { part, what: "operator CPU per minute", unit: "CPU s/min", value: (cpuAfter - cpuBefore) / minutes },
    ],
  };
}

/**
 * "One poll per target per interval": a target polled once per interval is asked intervals - 1 to intervals + 1 times
 * in a window of that many intervals (the window's ends cut polls apart), so the target is that band around 1; no
 * polls at all is a miss like too many.
 */
export function onePollPerInterval(pollsPerTargetPerInterval: number, intervals: number): Target {
  const [low, high] = [1 - 1 / intervals, 1 + 1 / intervals];
  return {
    text: `1 (${low.toFixed(2)}–${high.toFixed(2)}: a poll more or less at the window's ends)`,
    pass: pollsPerTargetPerInterval >= low && pollsPerTargetPerInterval <= high,
  };
}
