/**
 * The sandbox: everything on this machine, nothing to install by hand. Builds the pinned tools if needed, starts a
 * local control plane and Gitea, installs the CRD, starts the operator, applies a sample RunnerGroup and pushes a demo
 * workflow, then reports what happens until Ctrl-C, which stops everything.
 *
 *   deno task sandbox
 */
import { leaveSignalsToCaller } from "./harness/logged_process.ts";
import { createRunnerGroup, setUpRepository, startEnvironment } from "./harness/environment.ts";
import { startOperator } from "./harness/operator.ts";

const encoder = new TextEncoder();
const say = (line: string): void => void Deno.stdout.writeSync(encoder.encode(`${line}\n`));
const namespace = "gitea-runners";

leaveSignalsToCaller();
say("Starting the sandbox: a local Kubernetes control plane and Gitea (the first run builds them; that takes a while)");
const env = await startEnvironment();
const stopped = Promise.withResolvers<void>();
Deno.addSignalListener("SIGINT", () => stopped.resolve());
Deno.addSignalListener("SIGTERM", () => stopped.resolve());

try {
  const { gitea, custom } = env;
  await setUpRepository(env, { org: "demo", repo: "hello", namespace, secretName: "gitea-tokens" });
  const operator = await startOperator({
    kubeconfigPath: env.cluster.kubeconfigPath,
    dir: env.dir,
    args: ["--poll-interval", "3s"],
  });
  await createRunnerGroup(custom, namespace, "hello", {
    scope: "repo",
    org: "demo",
    repo: "hello",
    giteaURL: gitea.url.replace(/\/$/, ""),
    maxActiveRunners: 2,
    registrationToken: { name: "gitea-tokens", key: "registration" },
    authToken: { name: "gitea-tokens", key: "api" },
  });
  await gitea.pushWorkflow(
    "demo",
    "hello",
    ".gitea/workflows/demo.yaml",
    [
      "on: push",
      "jobs:",
      "  greet:",
      "    runs-on: ubuntu-latest",
      "    strategy:",
      "      matrix:",
      "        who: [world, kubernetes, gitea]",
      "    steps:",
      '      - run: echo "hello ${{ matrix.who }}" && sleep 5',
      "  done:",
      "    needs: greet",
      "    runs-on: ubuntu-latest",
      "    steps:",
      "      - run: echo all greeted",
    ].join("\n") + "\n",
  );

  say("");
  say(`Gitea:        ${gitea.url}  (login ${gitea.admin.username} / ${gitea.admin.password})`);
  say(`Repository:   ${gitea.url}demo/hello/actions`);
  say(`Kubeconfig:   ${env.cluster.kubeconfigPath}`);
  say(`Operator log: ${operator.logPath}`);
  say(`RunnerGroup:  ${namespace}/hello (repo scope, at most 2 runners)`);
  say("Watching runner Jobs and Gitea jobs; press Ctrl-C to stop everything.");
  say("");

  const seen = new Map<string, string>();
  const report = async (): Promise<void> => {
    const jobs = await env.batch.listNamespacedJob({ namespace });
    for (const job of jobs.items) {
      const conditions = job.status?.conditions ?? [];
      const state = conditions.find((c) => c.status === "True" && (c.type === "Complete" || c.type === "Failed"))
        ?.type ?? "Active";
      const key = `job/${job.metadata!.name}`;
      if (seen.get(key) !== state) {
        seen.set(key, state);
        say(
          `runner Job ${job.metadata!.name}: ${state} (for Gitea job ${job.metadata!.labels!["gitea.bpg.pw/job-id"]})`,
        );
      }
    }
    for (const job of (await gitea.listJobs({ kind: "repo", owner: "demo", repo: "hello" }, { limit: 50 })).jobs) {
      const state = job.conclusion ?? job.status;
      const key = `gitea/${job.id}`;
      if (seen.get(key) !== state) {
        seen.set(key, state);
        say(`Gitea job ${job.id} "${job.name}": ${state}${job.runner_name ? ` on runner ${job.runner_name}` : ""}`);
      }
    }
  };
  while (await Promise.race([stopped.promise.then(() => false), new Promise((r) => setTimeout(() => r(true), 2000))])) {
    await report().catch((error) => say(`(cannot read state: ${error instanceof Error ? error.message : error})`));
  }
  say("Stopping the operator, Gitea and the control plane...");
  await operator.stop("SIGTERM");
} finally {
  await env.dispose();
}
say("Stopped.");
Deno.exit(0);
