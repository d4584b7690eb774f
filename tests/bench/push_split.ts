/**
 * Push latency split: single pushes in push mode (a repository webhook to the operator, a 10-minute poll interval so
 * that only the webhook wakes it), one after another. Each job's latency is split where the operator's JSON log says
 * it received the webhook (`src/http/webhook.ts`, debug level):
 *
 * - Gitea's part: push accepted by Gitea's API -> the `workflow_job` delivery logged by the operator (Gitea creates
 *   the job from its push queue, then sends the webhook from its webhook queue);
 * - the operator's own part: that log line -> the log line of the runner Job's creation (after the create returned).
 *
 * Log timestamps have millisecond resolution and the same clock as the benchmark.
 */
import { ownPathWorkflow, simpleJob } from "../harness/gitea.ts";
import { runnerJobSelector } from "../../src/runner_group/runner_job.ts";
import type { BenchContext } from "./context.ts";
import { unschedulable } from "./context.ts";
import { JobWatch } from "./job_watch.ts";
import { type LogLine, logTime } from "./probes.ts";
import { atMost, distribution, type Figure } from "./report.ts";

export interface PushSplitResult {
  /** Milliseconds per push. */
  giteaPart: number[];
  operatorPart: number[];
  total: number[];
  figures: Figure[];
}

const namespace = "push";

export async function measurePushSplit(ctx: BenchContext, samples: number): Promise<PushSplitResult> {
  const { gitea } = ctx.env;
  const { operator, port } = await ctx.startRepositoryGroup(namespace, {
    maxActiveRunners: Math.min(10_000, samples * 2),
    template: { nodeSelector: unschedulable },
  }, [
    "--poll-interval",
    "10m",
    "--webhook-secret",
    `${namespace}/tokens:webhook`,
    "--log-level",
    "debug",
  ]);
  const watch = await JobWatch.start(ctx.env.cluster.kubeConfig, namespace, runnerJobSelector);
  const result: PushSplitResult = { giteaPart: [], operatorPart: [], total: [], figures: [] };
  try {
    await ctx.addWebhook(namespace, "app", port);
    // Pushes are one at a time, so a push's delivery is the first one logged after the previous runner Job's creation
    // (even if, on a busy machine, it beat the push's own API answer to the benchmark).
    let previousCreated = 0;
    for (let n = 1; n <= samples; n++) {
      // A pause of 1-2 s: single jobs, not a stream, and not in step with anything periodic.
      await new Promise((resolve) => setTimeout(resolve, 1_000 + Math.random() * 1_000));
      const path = `.gitea/workflows/single${n}.yaml`;
      await gitea.pushWorkflow(namespace, "app", path, ownPathWorkflow(path, simpleJob(`single${n}`, "push", 0)));
      const accepted = Date.now();
      await watch.waitForAdded(n, 120_000);
      const job = watch.added().sort((a, b) => b.at - a.at)[0];
      const { line: created, lines } = await findLine(
        () => operator.logs(),
        (line) => String(line.message).startsWith("Created runner Job") && line.jobName === job.name,
      );
      const delivery = lines.filter((line) =>
        String(line.message).startsWith("Webhook delivery") && line.action === "queued" &&
        logTime(line) > previousCreated && logTime(line) <= logTime(created)
      )[0];
      if (!delivery) {
        throw new Error(`No queued webhook delivery logged for push ${n} before ${job.name} was created`);
      }
      result.giteaPart.push(logTime(delivery) - accepted);
      result.operatorPart.push(logTime(created) - logTime(delivery));
      result.total.push(job.at - accepted);
      previousCreated = logTime(created);
    }
  } finally {
    await ctx.stopOperator(operator);
    await watch.stop();
  }
  await ctx.deleteNamespace(namespace);
  const part = `push mode, ${samples} single pushes`;
  const own = distribution(result.operatorPart);
  result.figures.push(
    {
      part,
      what: "push accepted -> webhook received (Gitea's part)",
      unit: "ms",
      distribution: distribution(result.giteaPart),
    },
    {
      part,
      what: "webhook received -> runner Job created (operator's part)",
      unit: "ms",
      distribution: own,
      target: atMost(own.p95, 100, "ms (p95)"),
    },
    { part, what: "push accepted -> runner Job exists", unit: "ms", distribution: distribution(result.total) },
  );
  return result;
}

/** The first log line matching `match` and the lines read, reading again for a few seconds until it is written. */
async function findLine(
  read: () => Promise<LogLine[]>,
  match: (line: LogLine) => boolean,
): Promise<{ line: LogLine; lines: LogLine[] }> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const lines = await read();
    const line = lines.find(match);
    if (line) return { line, lines };
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error("The operator did not log the creation of the runner Job within 5 s");
}
