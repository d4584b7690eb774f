/**
 * Benchmark: spawn latency, from a push that queues jobs to the runner Job of each job existing, in poll mode and in
 * push mode (webhooks), over 20 jobs each, against the real local control plane and Gitea. Prints median and p95.
 *
 *   deno task bench
 *
 * Latency is measured from the moment Gitea's API accepted the push (the jobs are queued while it handles it) to the
 * moment a watcher polling the Job list every 100 ms first sees the job's runner Job, so figures carry up to ~0.1 s of
 * observation delay; Gitea's and Kubernetes' own timestamps have only second resolution.
 *
 * A second table shows what the warm pool (`minIdleRunners`) buys: start latency, from the push to Gitea reporting the
 * job in progress (a runner took it), for 20 jobs pushed one after another, without and with a pool of 2, both in push
 * mode. The stand-in kubelet starts runner processes at once; a real node adds image pull and container start to every
 * cold start, which the pool avoids too.
 */
import {
  createRunnerGroup,
  getRunnerGroup,
  setUpRepository,
  startEnvironment,
  waitForFirstPoll,
} from "../harness/environment.ts";
import { ownPathWorkflow, simpleJob } from "../harness/gitea.ts";
import { eventually } from "../harness/wait.ts";
import { type OperatorProcess, startOperator } from "../harness/operator.ts";

const jobs = 20;
const namespace = "bench";
const pollInterval = "10s";
const webhookSecret = "bench-webhook-secret-0123456789";
const encoder = new TextEncoder();
const say = (line: string): void => void Deno.stdout.writeSync(encoder.encode(`${line}\n`));

function percentile(sorted: number[], p: number): number {
  const index = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1);
  return sorted[Math.max(0, index)];
}

const env = await startEnvironment({ giteaSettings: { webhook: { ALLOWED_HOST_LIST: "loopback" } } });
let operator: OperatorProcess | undefined;
try {
  const { gitea, custom } = env;
  await setUpRepository(env, {
    org: "acme",
    repo: "bench",
    namespace,
    extraSecretData: { webhook: webhookSecret },
  });

  /** Creates the group `mode` (runner label `bench-<mode>`), starts an operator for it, returns its port. */
  const startGroupAndOperator = async (
    mode: string,
    spec: Record<string, unknown>,
    args: string[],
  ): Promise<number> => {
    await createRunnerGroup(custom, namespace, mode, {
      scope: "repo",
      org: "acme",
      repo: "bench",
      giteaURL: gitea.url.replace(/\/$/, ""),
      labels: [`bench-${mode}`],
      defaultLabels: false,
      registrationToken: { name: "tokens", key: "registration" },
      authToken: { name: "tokens", key: "api" },
      ...spec,
    });
    operator = await startOperator({
      kubeconfigPath: env.cluster.kubeconfigPath,
      dir: env.dir,
      name: `operator-${mode}`,
      args: ["--namespaces", namespace, ...args],
    });
    const port = await operator.port();
    await waitForFirstPoll(custom, namespace, mode);
    return port;
  };

  /** A repository webhook for workflow_job events to the operator on `port`. */
  const addWebhook = async (port: number): Promise<void> => {
    await gitea.api("POST", "repos/acme/bench/hooks", {
      type: "gitea",
      active: true,
      events: ["workflow_job"],
      config: { url: `http://127.0.0.1:${port}/webhooks/gitea`, content_type: "json", secret: webhookSecret },
    });
  };

  const measure = async (mode: "poll" | "push", extraArgs: string[]): Promise<number[]> => {
    const label = `bench-${mode}`;
    const port = await startGroupAndOperator(mode, { maxActiveRunners: jobs }, ["--log-level", "info", ...extraArgs]);
    if (mode === "push") {
      await addWebhook(port);
    } else {
      // Start at a random point of the poll cycle, as a real push would.
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 10_000));
    }
    const path = `.gitea/workflows/${mode}.yaml`;
    const matrix = Array.from({ length: jobs }, (_, index) => index + 1).join(", ");
    await gitea.pushWorkflow(
      "acme",
      "bench",
      path,
      ownPathWorkflow(
        path,
        `  run:\n    runs-on: ${label}\n    strategy:\n      matrix:\n        n: [${matrix}]\n` +
          `    steps:\n      - run: echo \${{ matrix.n }}\n`,
      ),
    );
    const pushedAt = performance.now();
    const seen = new Map<string, number>();
    while (seen.size < jobs) {
      const list = await env.batch.listNamespacedJob({
        namespace,
        labelSelector: `gitea.bpg.pw/runnergroup-name=${mode}`,
      });
      for (const job of list.items) {
        const id = job.metadata!.labels!["gitea.bpg.pw/job-id"];
        if (!seen.has(id)) seen.set(id, (performance.now() - pushedAt) / 1000);
      }
      if (performance.now() - pushedAt > 180_000) throw new Error(`Only ${seen.size} of ${jobs} runner Jobs in 180 s`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await operator?.stop("SIGTERM");
    operator = undefined;
    return [...seen.values()].sort((a, b) => a - b);
  };

  say(`Spawn latency over ${jobs} jobs (push accepted -> runner Job exists), seconds:`);
  for (
    const [mode, args] of [["poll", ["--poll-interval", pollInterval]], [
      "push",
      ["--poll-interval", "10m", "--webhook-secret", `${namespace}/tokens:webhook`],
    ]] as const
  ) {
    const latencies = await measure(mode, [...args]);
    say(
      `${mode.padEnd(5)} mode${mode === "poll" ? ` (interval ${pollInterval})` : ""}: median ${
        percentile(latencies, 50).toFixed(2)
      } s, p95 ${percentile(latencies, 95).toFixed(2)} s, min ${latencies[0].toFixed(2)} s, max ${
        latencies.at(-1)!.toFixed(2)
      } s, n=${latencies.length}`,
    );
  }

  /** The status of the newest job named `name`, looking through every page of the repository's jobs. */
  const jobStatus = async (name: string): Promise<string | undefined> => {
    for (let page = 1;; page++) {
      const answer = await gitea.listJobs({ kind: "repo", owner: "acme", repo: "bench" }, { limit: 50, page });
      const job = answer.jobs.find((entry) => entry.name === name);
      if (job) return job.status;
      if (answer.jobs.length < 50) return undefined;
    }
  };

  const measureStart = async (mode: "cold" | "warm"): Promise<number[]> => {
    const label = `bench-${mode}`;
    const pool = mode === "warm" ? 2 : 0;
    const port = await startGroupAndOperator(mode, { maxActiveRunners: 4, minIdleRunners: pool }, [
      "--poll-interval",
      "10m",
      "--webhook-secret",
      `${namespace}/tokens:webhook`,
    ]);
    await addWebhook(port);
    const latencies: number[] = [];
    for (let n = 1; n <= jobs; n++) {
      // Jobs arrive slower than the pool refills: wait until it is full again.
      await eventually(`${pool} idle runners registered`, async () => {
        const group = await getRunnerGroup(custom, namespace, mode);
        const idle = (group.status as { idleRunners?: number } | undefined)?.idleRunners ?? 0;
        const registered = (await gitea.listRunners()).filter((runner) => runner.name.startsWith(`${mode}-warm-`));
        return idle === pool && registered.length >= pool;
      }, { timeoutMs: 120_000 });
      const name = `${mode}${n}`;
      const path = `.gitea/workflows/${name}.yaml`;
      await gitea.pushWorkflow(
        "acme",
        "bench",
        path,
        ownPathWorkflow(path, simpleJob(name, label, 0)),
      );
      const pushedAt = performance.now();
      await eventually(`job ${name} started`, async () => {
        const status = await jobStatus(name);
        return status !== undefined && status !== "queued" && status !== "waiting";
      }, { timeoutMs: 120_000, intervalMs: 100 });
      latencies.push((performance.now() - pushedAt) / 1000);
      await eventually(`job ${name} done`, async () => (await jobStatus(name)) === "completed", { timeoutMs: 120_000 });
    }
    await operator?.stop("SIGTERM");
    operator = undefined;
    return latencies.sort((a, b) => a - b);
  };

  say(`Start latency over ${jobs} jobs pushed one at a time (push accepted -> job in progress), push mode, seconds:`);
  for (const mode of ["cold", "warm"] as const) {
    const latencies = await measureStart(mode);
    say(
      `${mode === "cold" ? "no warm pool    " : "minIdleRunners 2"}: median ${
        percentile(latencies, 50).toFixed(2)
      } s, ` +
        `p95 ${percentile(latencies, 95).toFixed(2)} s, min ${latencies[0].toFixed(2)} s, max ${
          latencies.at(-1)!.toFixed(2)
        } s, n=${latencies.length}`,
    );
  }
} finally {
  if (operator?.running()) await operator.stop("SIGTERM");
  await env.dispose();
}
Deno.exit(0);
