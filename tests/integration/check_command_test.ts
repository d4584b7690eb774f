/** The `check` command against a real Gitea, through main.ts with the run task's permissions. */
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import YAML from "yaml";
import { BatchV1Api, CoreV1Api } from "@kubernetes/client-node";
import { startCluster } from "../harness/cluster.ts";
import { startGitea } from "../harness/gitea.ts";
import { runTaskFlags } from "../harness/operator.ts";
import { eventually } from "../harness/wait.ts";

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Runs `check -f file`; with `kubeconfig` undefined there is no cluster to ask (a kubeconfig that does not exist). */
async function check(file: string, kubeconfig?: string): Promise<{ code: number; output: string }> {
  const result = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...await runTaskFlags(), join(repoRoot, "main.ts"), "check", "-f", file],
    env: { KUBECONFIG: kubeconfig ?? join(repoRoot, "no-such-kubeconfig") },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code: result.code, output: decoder.decode(result.stdout) + decoder.decode(result.stderr) };
}

Deno.test({
  name: "check explains, for one group, whether each queued job would get a runner",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t): Promise<void> {
    const gitea = await startGitea();
    const cluster = await startCluster();
    const dir = await Deno.makeTempDir({ prefix: "gro-check-" });
    try {
      await cluster.kubeConfig.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: "ci" } } });
      await gitea.createOrg("acme");
      await gitea.createRepo("acme", "app");
      await gitea.pushWorkflow(
        "acme",
        "app",
        ".gitea/workflows/ci.yaml",
        "on: push\njobs:\n  build:\n    runs-on: linux-test\n    steps:\n      - run: echo hi\n" +
          "  train:\n    runs-on: [linux-test, gpu]\n    steps:\n      - run: echo hi\n",
      );
      await eventually(
        "two queued jobs",
        async () =>
          (await gitea.listJobs({ kind: "repo", owner: "acme", repo: "app" }, { status: ["queued"] })).jobs.length ===
            2,
      );
      const registration = await gitea.registrationToken({ kind: "repo", owner: "acme", repo: "app" });
      const write = async (name: string, api: string, spec: Record<string, unknown> = {}): Promise<string> => {
        const path = join(dir, `${name}.yaml`);
        await Deno.writeTextFile(
          path,
          [
            { apiVersion: "v1", kind: "Secret", metadata: { name: "tokens" }, stringData: { api, registration } },
            {
              apiVersion: "gitea.bpg.pw/v1alpha1",
              kind: "RunnerGroup",
              metadata: { name: "app", namespace: "ci" },
              spec: {
                scope: "repo",
                org: "acme",
                repo: "app",
                giteaURL: gitea.url,
                labels: ["linux-test"],
                defaultLabels: false,
                maxActiveRunners: 2,
                registrationToken: { name: "tokens", key: "registration" },
                authToken: { name: "tokens", key: "api" },
                ...spec,
              },
            },
          ].map((document) => YAML.stringify(document)).join("---\n"),
        );
        return path;
      };

      await t.step("a working group: exit 0, the server version, and a reason for each queued job", async () => {
        const { code, output } = await check(await write("good", gitea.adminToken));
        assert.equal(code, 0, output);
        assert.ok(output.includes(`\nok    Gitea ${gitea.version} answers at `), output);
        assert.match(output, /^ok {4}The API token belongs to gitea-admin \(site administrator\)$/m);
        assert.match(output, /job \d+ "build" of acme\/app \(runs-on: linux-test\): this group runs it/);
        assert.match(
          output,
          /job \d+ "train" of acme\/app \(runs-on: linux-test, gpu\): not this group, it lacks the label gpu/,
        );
        assert.ok(!output.includes(gitea.adminToken) && !output.includes(registration), "no token is printed");
        assert.match(output, /^note {2}Cannot ask the API server whether it accepts the group's runner Jobs: /m);
      });

      await t.step(
        "with a cluster: the runner Job in a dry run, and the API server's reason when it is refused",
        async () => {
          let { code, output } = await check(await write("good", gitea.adminToken), cluster.kubeconfigPath);
          assert.equal(code, 0, output);
          assert.match(output, /^ok {4}The API server accepts the group's runner Jobs in namespace ci \(a dry run\)$/m);
          const noImage = { spec: { containers: [{ name: "log-shipper" }] } };
          ({ code, output } = await check(
            await write("no-image", gitea.adminToken, { template: noImage }),
            cluster.kubeconfigPath,
          ));
          assert.equal(code, 1, output);
          assert.match(
            output,
            /^FAIL {2}The API server rejects runner Jobs built from spec\.template: .*containers\[1\]\.image: Required value/m,
          );
          const jobs = await cluster.kubeConfig.makeApiClient(BatchV1Api).listNamespacedJob({ namespace: "ci" });
          assert.deepEqual(jobs.items, [], "a dry run stores nothing");
        },
      );

      await t.step(
        "a token that reads jobs but cannot manage runners: a note, and FAIL without registrationToken",
        async () => {
          const readerToken = await gitea.createUser("reader");
          await gitea.api("PUT", "repos/acme/app/collaborators/reader", { permission: "read" });
          let { code, output } = await check(await write("reader", readerToken));
          assert.equal(code, 0, output);
          assert.match(output, /^ok {4}The token can list the scope's jobs: 2 queued/m);
          assert.match(output, /^note {2}The token cannot manage the scope's runners \(Forbidden\)/m);
          ({ code, output } = await check(
            await write("reader-managed", readerToken, { registrationToken: undefined }),
          ));
          assert.equal(code, 1, output);
          assert.match(output, /^FAIL {2}The token cannot obtain the scope's runner registration token \(Forbidden\)/m);
          // The admin's token can do both.
          ({ code, output } = await check(
            await write("admin-managed", gitea.adminToken, { registrationToken: undefined }),
          ));
          assert.equal(code, 0, output);
          assert.match(output, /^ok {4}The token can manage the scope's runners \(\d+ registered\)/m);
          assert.match(output, /^ok {4}The token can obtain the scope's runner registration token$/m);
        },
      );

      await t.step(
        "a missing registration key: FAIL, unless the selector is optional (then kept by the operator)",
        async () => {
          const missingKey = { name: "tokens", key: "no-such-key" };
          let { code, output } = await check(
            await write("required-missing", gitea.adminToken, { registrationToken: missingKey }),
          );
          assert.equal(code, 1, output);
          assert.match(output, /^FAIL {2}spec\.registrationToken: .* has no non-empty key "no-such-key"/m);
          ({ code, output } = await check(
            await write("optional-missing", gitea.adminToken, { registrationToken: { ...missingKey, optional: true } }),
          ));
          assert.equal(code, 0, output);
          assert.match(output, /^note {2}spec\.registrationToken: .* has no non-empty key "no-such-key"/m);
          assert.match(
            output,
            /^note {2}spec\.registrationToken is optional: the operator obtains one .* Secret ci\/app-registration-token$/m,
          );
          assert.match(output, /^ok {4}The token can obtain the scope's runner registration token$/m);
        },
      );

      await t.step("a rejected token: exit 1 and the reason", async () => {
        const { code, output } = await check(await write("bad-token", "not-a-real-token-0123456789"));
        assert.equal(code, 1, output);
        assert.match(output, /^FAIL {2}Unauthorized: /m);
      });

      await t.step("an invalid spec: exit 1 naming the field, before any request", async () => {
        const { code, output } = await check(await write("bad-spec", gitea.adminToken, { maxActiveRunners: -1 }));
        assert.equal(code, 1, output);
        assert.match(output, /^FAIL {2}The spec is invalid: spec\.maxActiveRunners/m);
      });

      await t.step("warm pool schedules: the pool now and its next change, or the schedule at fault", async () => {
        // Open all day every day (a window of 24 h that each day's occurrence extends): the pool is 2 for good.
        const always = { cron: "0 0 * * *", duration: "24h", minIdleRunners: 2 };
        let { code, output } = await check(await write("pool", gitea.adminToken, { warmPoolSchedules: [always] }));
        assert.equal(code, 0, output);
        assert.match(output, /^ok {4}Warm pool: 2 idle runners now; no window changes it$/m);
        ({ code, output } = await check(
          await write("bad-pool", gitea.adminToken, { warmPoolSchedules: [{ ...always, timeZone: "Mars/Base" }] }),
        ));
        assert.equal(code, 1, output);
        assert.match(
          output,
          /^FAIL {2}The spec is invalid: spec\.warmPoolSchedules\[0\]\.timeZone: unknown time zone/m,
        );
      });
    } finally {
      await cluster.dispose();
      await gitea.dispose();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
