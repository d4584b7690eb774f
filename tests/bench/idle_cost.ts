/**
 * Idle cost of the fleet (22 groups, no queued jobs) over a window: forge requests per minute (the operator's
 * `gitea_runner_operator_forge_requests_total`, scraped at both ends), Kubernetes API requests per minute (the API
 * server's audit log of the operator's identity) and CPU seconds of the operator process (/proc).
 */
import type { BenchContext } from "./context.ts";
import { operatorUser } from "./context.ts";
import { ensureFleet } from "./fleet.ts";
import { auditedRequests, cpuSeconds, metricSum, scrapeMetrics } from "./probes.ts";
import type { Figure } from "./report.ts";

export interface IdleCostResult {
  seconds: number;
  targets: number;
  forgeRequests: number;
  kubeRequests: number;
  kubeRequestsByKind: Record<string, number>;
  cpuSeconds: number;
  figures: Figure[];
}

const forgeRequestsMetric = "gitea_runner_operator_forge_requests_total";

export async function measureIdleCost(ctx: BenchContext, seconds: number): Promise<IdleCostResult> {
  const fleet = await ensureFleet(ctx);
  const forgeBefore = metricSum(await scrapeMetrics(fleet.port), forgeRequestsMetric);
  const cpuBefore = cpuSeconds(fleet.pid);
  const from = Date.now();
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  const to = Date.now();
  const cpuAfter = cpuSeconds(fleet.pid);
  const forgeAfter = metricSum(await scrapeMetrics(fleet.port), forgeRequestsMetric);
  const kube = await auditedRequests(ctx.auditLogPath, operatorUser, from, to);
  const minutes = (to - from) / 60_000;
  const forgeRequests = forgeAfter - forgeBefore;
  const polls = (to - from) / 1000 / fleet.pollIntervalSeconds;
  // A target polled every interval is asked at most polls + 1 times in the window (its ends cut polls apart).
  const perTargetPerInterval = forgeRequests / fleet.targets / polls;
  const part = `idle, ${fleet.targets} groups, ${Math.round(minutes * 60)} s`;
  const topKinds = Object.entries(kube.byKind).sort((a, b) => b[1] - a[1]).slice(0, 5)
    .map(([kind, count]) => `${kind} ${count}`).join(", ");
  return {
    seconds: (to - from) / 1000,
    targets: fleet.targets,
    forgeRequests,
    kubeRequests: kube.total,
    kubeRequestsByKind: kube.byKind,
    cpuSeconds: cpuAfter - cpuBefore,
    figures: [
      { part, what: "forge requests per minute", unit: "req/min", value: forgeRequests / minutes },
      {
        part,
        what: `forge requests per target per ${fleet.pollIntervalSeconds} s poll interval`,
        unit: "",
        value: perTargetPerInterval,
        target: {
          text: `≤ 1 (${(1 + 1 / polls).toFixed(2)} with one more poll at the window's ends)`,
          pass: perTargetPerInterval <= 1 + 1 / polls,
        },
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
