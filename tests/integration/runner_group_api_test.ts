/**
 * The RunnerGroup API against a real kube-apiserver (and the real Job and garbage collector controllers): admission
 * validation from the committed CRD, status and events written by the operator process for bad input, garbage
 * collection of runner Jobs, and informers that recover when the API server restarts.
 */
import assert from "node:assert/strict";
import { BatchV1Api, CoreV1Api, CustomObjectsApi } from "@kubernetes/client-node";
import { effectiveRunnerLabels } from "../../src/forge/labels.ts";
import { buildRunnerJob, defaultRunnerImage } from "../../src/runner_group/runner_job.ts";
import { parseRunnerGroupSpec } from "../../src/runner_group/schema.ts";
import { startCluster } from "../harness/cluster.ts";
import { installCrd } from "../harness/environment.ts";
import { startOperator } from "../harness/operator.ts";
import { eventually } from "../harness/wait.ts";

const namespace = "teams";
const group = { group: "gitea.bpg.pw", version: "v1alpha1", namespace, plural: "runnergroups" };

const validSpec = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  scope: "repo",
  org: "acme",
  repo: "app",
  giteaURL: "https://git.example.com",
  labels: ["linux:host"],
  maxActiveRunners: 2,
  registrationToken: { name: "tokens", key: "registration" },
  authToken: { name: "tokens", key: "api" },
  ...extra,
});

const body = (name: string, spec: Record<string, unknown>): Record<string, unknown> => ({
  apiVersion: "gitea.bpg.pw/v1alpha1",
  kind: "RunnerGroup",
  metadata: { name },
  spec,
});

type Condition = { type: string; status: string; reason: string; message: string };

Deno.test({
  name: "RunnerGroups against a real API server",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t): Promise<void> {
    const cluster = await startCluster();
    const dir = await Deno.makeTempDir({ prefix: "gro-api-test-" });
    const custom = cluster.kubeConfig.makeApiClient(CustomObjectsApi);
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    const batch = cluster.kubeConfig.makeApiClient(BatchV1Api);
    let operator: Awaited<ReturnType<typeof startOperator>> | undefined;
    const fakeGitea = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      () => Response.json({ message: "token is invalid" }, { status: 401 }),
    );
    try {
      await t.step("the CRD installs from crds/ and becomes established", async () => {
        await installCrd(cluster);
        await core.createNamespace({ body: { metadata: { name: namespace } } });
      });

      await t.step("invalid RunnerGroups are rejected at admission with a message naming the field", async () => {
        const invalid: [string, Record<string, unknown>, RegExp][] = [
          ["bad-scope", validSpec({ scope: "team" }), /spec\.scope: Unsupported value: "team"/],
          ["no-repo", validSpec({ repo: undefined }), /scope repo needs spec\.repo/],
          ["two-owners", validSpec({ user: "bob" }), /scope repo needs exactly one owner/],
          ["no-owner", validSpec({ org: undefined }), /scope repo needs exactly one owner/],
          ["org-no-org", validSpec({ scope: "org", org: undefined, repo: undefined }), /scope org needs spec\.org/],
          [
            "user-no-user",
            validSpec({ scope: "user", org: undefined, repo: undefined }),
            /scope user needs spec\.user/,
          ],
          ["repo-on-org", validSpec({ scope: "org", repo: "app" }), /spec\.repo is only valid with scope repo/],
          ["bad-url", validSpec({ giteaURL: "git.example.com" }), /spec\.giteaURL/],
          ["ftp-url", validSpec({ giteaURL: "ftp://git.example.com" }), /spec\.giteaURL/],
          ["negative", validSpec({ maxActiveRunners: -1 }), /spec\.maxActiveRunners/],
          ["no-max", validSpec({ maxActiveRunners: undefined }), /spec\.maxActiveRunners: Required value/],
          ["no-auth", validSpec({ authToken: undefined }), /spec\.authToken: Required value/],
          ["bad-ref", validSpec({ authToken: { name: "tokens" } }), /spec\.authToken\.key: Required value/],
          [
            "reserved-env",
            validSpec({ template: { env: [{ name: "GITEA_RUNNER_REGISTRATION_TOKEN", value: "x" }] } }),
            /spec\.template\.env\[0\].*GITEA_RUNNER_REGISTRATION_TOKEN/,
          ],
        ];
        for (const [name, spec, message] of invalid) {
          const error = await custom.createNamespacedCustomObject({ ...group, body: body(name, spec) }).then(
            () => undefined,
            (e) => e,
          );
          assert.ok(error, `${name} should be rejected`);
          assert.equal(error.code, 422, `${name}: ${error.body}`);
          assert.match(JSON.parse(String(error.body)).message, message, `${name}: ${error.body}`);
          // The operator's own validation agrees with the API server.
          assert.equal(parseRunnerGroupSpec(spec).success, false, `${name} passes the operator's schema`);
        }
        for (
          const [name, spec] of [
            ["repo-of-user", validSpec({ org: undefined, user: "alice" })],
            ["global", validSpec({ scope: "global", org: undefined, repo: undefined, maxActiveRunners: 0 })],
          ] as const
        ) {
          await custom.createNamespacedCustomObject({ ...group, body: body(name, spec) });
          assert.equal(parseRunnerGroupSpec(spec).success, true, name);
          await custom.deleteNamespacedCustomObject({ ...group, name });
        }
      });

      const conditionsOf = async (name: string): Promise<Condition[]> => {
        const object = await custom.getNamespacedCustomObject({ ...group, name }) as {
          status?: { conditions?: Condition[] };
        };
        return object.status?.conditions ?? [];
      };
      const waitForCondition = (
        name: string,
        type: string,
        status: string,
        reason: string,
        timeoutMs = 30_000,
      ): Promise<Condition> =>
        eventually(`${name} ${type}=${status} (${reason})`, async () => {
          const condition = (await conditionsOf(name)).find((c) => c.type === type);
          return condition?.status === status && condition.reason === reason ? condition : undefined;
        }, {
          timeoutMs,
          detail: async () => `${JSON.stringify(await conditionsOf(name))}\n${await operator?.logTail(10)}`,
        });

      operator = await startOperator({
        kubeconfigPath: cluster.kubeconfigPath,
        dir,
        args: ["--poll-interval", "1s", "--resync-interval", "5s"],
      });

      await t.step("a missing Secret shows as CredentialsAvailable False in status, and as an event", async () => {
        await custom.createNamespacedCustomObject({ ...group, body: body("no-secret", validSpec()) });
        const condition = await waitForCondition("no-secret", "CredentialsAvailable", "False", "SecretNotFound");
        assert.match(condition.message, /Secret teams\/tokens does not exist \(spec\.authToken\)/);
        assert.equal((await conditionsOf("no-secret")).find((c) => c.type === "Ready")?.status, "False");
        await eventually("a SecretNotFound event", async () => {
          const events = await core.listNamespacedEvent({ namespace });
          return events.items.some((e) => e.reason === "SecretNotFound" && e.involvedObject.name === "no-secret");
        }, { timeoutMs: 10_000 });
      });

      await t.step(
        "a missing key, then a rejected token, are reported; the token never reaches the status",
        async () => {
          await core.createNamespacedSecret({
            namespace,
            body: { metadata: { name: "tokens" }, stringData: { api: "api-token-value-123456" } },
          });
          const missing = await waitForCondition("no-secret", "CredentialsAvailable", "False", "KeyNotFound");
          assert.match(missing.message, /has no key "registration"/);
          await core.patchNamespacedSecret({
            namespace,
            name: "tokens",
            body: [{ op: "add", path: "/data/registration", value: btoa("registration-token-value-123456") }],
          });
          await custom.patchNamespacedCustomObject({
            ...group,
            name: "no-secret",
            body: [{ op: "replace", path: "/spec/giteaURL", value: `http://127.0.0.1:${fakeGitea.addr.port}` }],
          });
          const forge = await waitForCondition("no-secret", "ForgeReachable", "False", "Unauthorized");
          assert.match(forge.message, /401/);
          const status = JSON.stringify(await conditionsOf("no-secret"));
          assert.ok(!status.includes("api-token-value-123456") && !status.includes("registration-token-value"));
        },
      );

      await t.step("an invalid runner label is reported as SpecValid False, not a crash", async () => {
        await custom.createNamespacedCustomObject({
          ...group,
          body: body("bad-label", validSpec({ labels: ["linux::docker"] })),
        });
        const condition = await waitForCondition("bad-label", "SpecValid", "False", "InvalidLabels");
        assert.match(condition.message, /Cannot parse runner label "linux::docker"/);
        assert.ok(operator!.running());
      });

      await t.step("deleting a group garbage-collects its runner Jobs", async () => {
        const created = await custom.createNamespacedCustomObject({
          ...group,
          body: body("doomed", validSpec({ maxActiveRunners: 0 })),
        }) as {
          metadata: { uid: string };
        };
        const parsed = parseRunnerGroupSpec(validSpec());
        assert.ok(parsed.success);
        const job = buildRunnerJob({
          group: { name: "doomed", namespace, uid: created.metadata.uid, spec: parsed.data },
          registrationToken: { name: "tokens", key: "registration" },
          forge: "https://git.example.com",
          labels: effectiveRunnerLabels(["linux:host"], false),
          for: {
            job: {
              id: 77,
              runId: 1,
              name: "build",
              runsOn: ["linux"],
              owner: "acme",
              repo: "app",
              createdAt: "",
              htmlUrl: "",
            },
            attempt: 0,
          },
          defaultImage: defaultRunnerImage,
        });
        await batch.createNamespacedJob({ namespace, body: job });
        await custom.deleteNamespacedCustomObject({ ...group, name: "doomed" });
        // The garbage collector learns about a new CRD's resources on its periodic discovery (30 s here): seen
        // taking 40 s on this machine, so the wait is generous.
        await eventually("the runner Job to be garbage-collected", async () => {
          const jobs = await batch.listNamespacedJob({ namespace });
          return !jobs.items.some((j) => j.metadata?.name === "doomed-77");
        }, { timeoutMs: 150_000 });
      });

      await t.step("the operator's informers recover after the API server restarts", async () => {
        await cluster.restartApiServer();
        await custom.createNamespacedCustomObject({
          ...group,
          body: body("after-restart", validSpec({ authToken: { name: "other", key: "api" } })),
        });
        // The informers' watch retries back off up to 30 s while the API server is down (src/kube/informer.ts), so
        // after a slow restart the first retry that succeeds can come most of that later.
        await waitForCondition("after-restart", "CredentialsAvailable", "False", "SecretNotFound", 90_000);
        assert.ok(operator!.running(), "the operator survived the restart");
      });

      await t.step("SIGTERM stops the operator with exit code 0", async () => {
        assert.equal(await operator!.stop("SIGTERM"), 0);
      });
    } finally {
      if (operator?.running()) await operator.stop("SIGKILL");
      await fakeGitea.shutdown();
      await cluster.dispose();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
