/**
 * Push mode end to end: a real Gitea webhook (workflow_job, signed with a secret the operator reads from a Kubernetes
 * Secret) makes the operator create a runner Job long before its next poll. The group names no registration token:
 * the operator obtains one from Gitea and keeps it in a Secret the group owns.
 */
import assert from "node:assert/strict";
import {
  createRunnerGroup,
  repoGroupSpec,
  setUpRepository,
  startEnvironment,
  waitForFirstPoll,
} from "../harness/environment.ts";
import { startOperator } from "../harness/operator.ts";
import { eventually } from "../harness/wait.ts";

const namespace = "push";
const webhookSecret = "push-mode-webhook-secret-0123";

Deno.test({
  name: "push mode: a Gitea webhook gets a runner Job created well before the next poll; the operator keeps the " +
    "registration token",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(): Promise<void> {
    const env = await startEnvironment({ giteaSettings: { webhook: { ALLOWED_HOST_LIST: "loopback" } } });
    let operator: Awaited<ReturnType<typeof startOperator>> | undefined;
    try {
      const { gitea, core, custom } = env;
      await setUpRepository(env, {
        org: "acme",
        repo: "app",
        namespace,
        registrationToken: false,
        extraSecretData: { webhook: webhookSecret },
      });
      // The Secret holds no registration token (see above): the operator asks the forge for one.
      await createRunnerGroup(
        custom,
        namespace,
        "app",
        repoGroupSpec(env, { org: "acme", repo: "app" }, { labels: ["push-linux"], registrationToken: undefined }),
      );
      // A 10-minute poll: within this test, only a webhook can make the operator look again.
      operator = await startOperator({
        kubeconfigPath: env.cluster.kubeconfigPath,
        dir: env.dir,
        args: [
          "--namespaces",
          namespace,
          "--poll-interval",
          "10m",
          "--resync-interval",
          "10m",
          "--webhook-secret",
          `${namespace}/tokens:webhook`,
        ],
      });
      const port = await operator.port();
      await waitForFirstPoll(custom, namespace, "app");
      await gitea.api("POST", "repos/acme/app/hooks", {
        type: "gitea",
        active: true,
        events: ["workflow_job"],
        config: {
          url: `http://127.0.0.1:${port}/webhooks/gitea`,
          content_type: "json",
          secret: webhookSecret,
        },
      });

      const pushedAt = Date.now();
      await gitea.pushWorkflow(
        "acme",
        "app",
        ".gitea/workflows/push.yaml",
        "on: push\njobs:\n  build:\n    runs-on: push-linux\n    steps:\n      - run: echo pushed\n",
      );
      await eventually(
        "a runner Job",
        async () => (await env.batch.listNamespacedJob({ namespace })).items.length > 0,
        {
          timeoutMs: 120_000,
          detail: () => operator!.logTail(20),
        },
      );
      const seconds = (Date.now() - pushedAt) / 1000;
      assert.ok(seconds < 120, `created ${seconds} s after the push; the next poll was due after 600 s`);
      const logs = await operator.logs();
      assert.ok(
        logs.some((line) => String(line.message).startsWith("Webhook delivery") && line.action === "queued"),
        "the webhook delivery was received",
      );
      assert.ok(!(await Deno.readTextFile(operator.logPath)).includes(webhookSecret), "the secret is not logged");
      const kept = await core.readNamespacedSecret({ namespace, name: "app-registration-token" });
      assert.equal(kept.metadata?.ownerReferences?.[0]?.kind, "RunnerGroup", "the kept Secret is owned by the group");
      const registration = atob(kept.data!.token);
      assert.equal(registration, await gitea.registrationToken({ kind: "repo", owner: "acme", repo: "app" }));
      const job = (await env.batch.listNamespacedJob({ namespace })).items[0];
      const tokenEnv = job.spec!.template.spec!.containers[0].env!.find((e) =>
        e.name === "GITEA_RUNNER_REGISTRATION_TOKEN"
      );
      assert.deepEqual({ ...tokenEnv?.valueFrom?.secretKeyRef }, { name: "app-registration-token", key: "token" });
      assert.ok(!(await Deno.readTextFile(operator.logPath)).includes(registration), "the token is not logged");
      await eventually("the job to succeed", async () => {
        const jobs = (await gitea.listJobs({ kind: "repo", owner: "acme", repo: "app" })).jobs;
        return jobs.length === 1 && jobs[0].conclusion === "success";
      }, { timeoutMs: 120_000 });
    } finally {
      if (operator?.running()) await operator.stop("SIGTERM");
      await env.dispose();
    }
  },
});
