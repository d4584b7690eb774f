/**
 * Manifests written for the Go operator, against a real kube-apiserver with our CRD, and what `optional` on the token
 * selectors does, against the real operator and a real Gitea. Each object is shaped like one of the Go operator's
 * samples, README examples or controller tests (the seeds) and is created with strict field validation (a server-side
 * dry run): accepted, or rejected with the reason the README's migration table gives. The operator's own spec check
 * agrees with the API server on every one.
 */
import assert from "node:assert/strict";
import { BatchV1Api, CoreV1Api, CustomObjectsApi, type KubernetesObject } from "@kubernetes/client-node";
import { effectiveRunnerLabels, InvalidLabelError } from "../../src/forge/labels.ts";
import { apiMessage, apiStatus } from "../../src/kube/client.ts";
import { parseRunnerGroupSpec } from "../../src/runner_group/schema.ts";
import { WireObjectApi } from "../harness/apply.ts";
import { startCluster } from "../harness/cluster.ts";
import { installCrd } from "../harness/environment.ts";
import { startGitea } from "../harness/gitea.ts";
import { startOperator } from "../harness/operator.ts";
import { eventually } from "../harness/wait.ts";

const namespace = "migrated";
const gitea = "https://gitea.example.com";
const tokens = { authToken: { name: "gitea-credentials", key: "auth-token" } };
const bothTokens = { ...tokens, registrationToken: { name: "gitea-credentials", key: "registration-token" } };

interface Case {
  name: string;
  /** Where the shape comes from in the Go operator. */
  from: string;
  spec: Record<string, unknown>;
  /** undefined: accepted; else the API server's message. */
  rejected?: RegExp;
  /** The rejection's HTTP status: 422 for a failed validation (default), 400 for an unknown field (strict decoding). */
  status?: number;
}

const cases: Case[] = [
  {
    name: "config-sample-org",
    from: "config/samples (scope org), with the org it needs",
    spec: {
      giteaURL: gitea,
      scope: "org",
      org: "acme",
      labels: ["linux", "amd64"],
      maxActiveRunners: 5,
      ...bothTokens,
    },
  },
  {
    name: "config-sample-as-shipped",
    from: "config/samples as shipped: scope org with only user set, which the Go operator polled as /orgs//...",
    spec: { giteaURL: gitea, scope: "org", user: "alice", labels: ["linux"], maxActiveRunners: 5, ...bothTokens },
    rejected: /scope org needs spec\.org/,
  },
  {
    name: "readme-repo",
    from: "README, repository scope, with the selectors as {name, key}",
    spec: {
      scope: "repo",
      org: "acme",
      repo: "app",
      giteaURL: gitea,
      maxActiveRunners: 5,
      labels: ["ubuntu-latest", "custom-label"],
      ...bothTokens,
    },
  },
  {
    name: "readme-org",
    from: "README, organization scope",
    spec: { scope: "org", org: "acme", giteaURL: gitea, maxActiveRunners: 10, ...bothTokens },
  },
  {
    name: "readme-user",
    from: "README, user scope",
    spec: { scope: "user", user: "alice", giteaURL: gitea, maxActiveRunners: 3, ...bothTokens },
  },
  {
    name: "readme-global",
    from: "README, global scope",
    spec: { scope: "global", giteaURL: gitea, maxActiveRunners: 20, ...bothTokens },
  },
  {
    name: "controller-test",
    from: "the controller test's SecretKeySelectors (one Secret, keys token and auth)",
    spec: {
      scope: "repo",
      org: "acme",
      repo: "app",
      giteaURL: gitea,
      maxActiveRunners: 1,
      registrationToken: { name: "gitea-secret", key: "token" },
      authToken: { name: "gitea-secret", key: "auth" },
    },
  },
  {
    name: "optional-false",
    from: "SecretKeySelectors with optional: false, as tools that write core/v1 selectors do",
    spec: {
      scope: "global",
      giteaURL: gitea,
      maxActiveRunners: 1,
      registrationToken: { name: "gitea-credentials", key: "registration-token", optional: false },
      authToken: { name: "gitea-credentials", key: "auth-token", optional: false },
    },
  },
  {
    name: "optional-true",
    from: "SecretKeySelectors with optional: true",
    spec: {
      scope: "global",
      giteaURL: gitea,
      maxActiveRunners: 1,
      registrationToken: { name: "gitea-credentials", key: "registration-token", optional: true },
      authToken: { name: "gitea-credentials", key: "auth-token", optional: true },
    },
  },
  {
    name: "selector-without-name",
    from: 'a selector with only key, which the Go CRD defaulted to name ""',
    spec: { scope: "global", giteaURL: gitea, maxActiveRunners: 1, authToken: { key: "auth-token" } },
    rejected: /spec\.authToken\.name: Required value/,
  },
  {
    name: "selector-empty-name",
    from: 'a selector with name: "", as the Go CRD stored it',
    spec: { scope: "global", giteaURL: gitea, maxActiveRunners: 1, authToken: { name: "", key: "auth-token" } },
    rejected: /spec\.authToken\.name: Invalid value: "": .*at least 1 chars long/,
  },
  {
    name: "readme-secret-ref",
    from: "README, repository scope as written: each token nested under secretRef",
    spec: {
      scope: "repo",
      org: "myorg",
      repo: "myrepo",
      giteaURL: gitea,
      maxActiveRunners: 5,
      registrationToken: { secretRef: { name: "gitea-runner-secret", key: "registrationToken" } },
      authToken: { secretRef: { name: "gitea-runner-secret", key: "authToken" } },
    },
    rejected: /strict decoding error: unknown field "spec\.authToken\.secretRef"/,
    status: 400,
  },
  {
    name: "readme-no-tokens",
    from: 'README, organization scope as written: tokens left out ("# ... (tokens)")',
    spec: { scope: "org", org: "myorg", giteaURL: gitea, maxActiveRunners: 10 },
    rejected: /spec\.authToken: Required value/,
  },
  {
    name: "readme-gitea-url",
    from: "README before v0.1.0: gitea.url instead of giteaURL",
    spec: { scope: "org", org: "myorg", gitea: { url: gitea }, maxActiveRunners: 5, ...bothTokens },
    rejected: /strict decoding error: unknown field "spec\.gitea"/,
    status: 400,
  },
];

const runnerGroup = (name: string, spec: Record<string, unknown>): KubernetesObject & { spec: unknown } => ({
  apiVersion: "gitea.bpg.pw/v1alpha1",
  kind: "RunnerGroup",
  metadata: { name, namespace },
  spec,
});

type Condition = { type: string; status: string; reason: string; message: string };

Deno.test({
  name: "Go operator manifests: accepted or rejected with the migration table's reason; optional token selectors",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t): Promise<void> {
    const [cluster, forge] = await Promise.all([startCluster(), startGitea()]);
    const dir = await Deno.makeTempDir({ prefix: "gro-go-manifests-" });
    let operator: Awaited<ReturnType<typeof startOperator>> | undefined;
    try {
      await installCrd(cluster);
      const wire = cluster.kubeConfig.makeApiClient(WireObjectApi);
      const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
      const batch = cluster.kubeConfig.makeApiClient(BatchV1Api);
      const custom = cluster.kubeConfig.makeApiClient(CustomObjectsApi);
      await core.createNamespace({ body: { metadata: { name: namespace } } });

      for (const { name, from, spec, rejected, status } of cases) {
        await t.step(`${rejected ? "rejected" : "accepted"}: ${from}`, async () => {
          const error = await wire.createAsWritten(runnerGroup(name, spec), { dryRun: true }).then(
            () => undefined,
            (error) => error,
          );
          const parsed = parseRunnerGroupSpec(spec);
          if (rejected === undefined) {
            assert.equal(error, undefined, error && apiMessage(error));
            assert.ok(parsed.success, "the operator's own check accepts it too");
          } else {
            assert.ok(error !== undefined, "the API server accepted it");
            assert.equal(apiStatus(error), status ?? 422, apiMessage(error));
            assert.match(apiMessage(error), rejected);
            assert.equal(parsed.success, false, "the operator's own check rejects it too");
          }
        });
      }

      await t.step("accepted: labels like app:infra, which status then reports as InvalidLabels", async () => {
        // The Go README's first example; "infra" is no runner schema (docker or host), so the label cannot work.
        const spec = { scope: "org", org: "acme", giteaURL: gitea, labels: ["default", "app:infra"], ...bothTokens };
        await wire.createAsWritten(runnerGroup("app-infra", { ...spec, maxActiveRunners: 5 }), { dryRun: true });
        assert.throws(() => effectiveRunnerLabels(spec.labels, true), InvalidLabelError);
      });

      // What optional means, with the real operator and Gitea: one organization repository with a queued job.
      await forge.createOrg("acme");
      await forge.createRepo("acme", "app");
      const workflow = (label: string): string =>
        `on: push\njobs:\n  build:\n    runs-on: ${label}\n    steps:\n      - run: echo hi\n`;
      await forge.pushWorkflow("acme", "app", ".gitea/workflows/first.yaml", workflow("migrated-linux"));
      await core.createNamespacedSecret({
        namespace,
        body: { metadata: { name: "gitea-credentials" }, stringData: { "auth-token": forge.adminToken } },
      });
      const repoGroup = (labels: string[], selectors: Record<string, unknown>): Record<string, unknown> => ({
        scope: "repo",
        org: "acme",
        repo: "app",
        giteaURL: forge.url.replace(/\/$/, ""),
        labels,
        defaultLabels: false,
        maxActiveRunners: 2,
        ...selectors,
      });
      const optionalRegistration = { name: "gitea-credentials", key: "registration-token", optional: true };
      await wire.createAsWritten(
        runnerGroup(
          "optional-registration",
          repoGroup(["migrated-linux"], { ...tokens, registrationToken: optionalRegistration }),
        ),
        { dryRun: false },
      );
      await wire.createAsWritten(
        runnerGroup("required-registration", repoGroup(["other-linux"], bothTokens)),
        { dryRun: false },
      );
      await wire.createAsWritten(
        runnerGroup(
          "optional-auth",
          repoGroup(["third-linux"], { authToken: { name: "no-such-secret", key: "auth-token", optional: true } }),
        ),
        { dryRun: false },
      );
      operator = await startOperator({
        kubeconfigPath: cluster.kubeconfigPath,
        dir,
        args: ["--namespaces", namespace, "--poll-interval", "1s", "--resync-interval", "5s"],
      });
      const conditionsOf = async (name: string): Promise<Condition[]> =>
        ((await custom.getNamespacedCustomObject({
          group: "gitea.bpg.pw",
          version: "v1alpha1",
          namespace,
          plural: "runnergroups",
          name,
        })) as { status?: { conditions?: Condition[] } }).status?.conditions ?? [];
      const condition = (name: string, type: string, status: string): Promise<Condition> =>
        eventually(`${name}: ${type}=${status}`, async () => {
          const found = (await conditionsOf(name)).find((c) => c.type === type);
          return found?.status === status ? found : undefined;
        }, {
          timeoutMs: 60_000,
          detail: async () => `${JSON.stringify(await conditionsOf(name))}\n${await operator?.logTail(15)}`,
        });
      const runnerJobsOf = async (group: string): Promise<string[]> =>
        (await batch.listNamespacedJob({ namespace, labelSelector: `gitea.bpg.pw/runnergroup-name=${group}` })).items
          .map((job) => {
            const env = job.spec!.template.spec!.containers[0].env ?? [];
            const ref = env.find((e) => e.name === "GITEA_RUNNER_REGISTRATION_TOKEN")?.valueFrom?.secretKeyRef;
            return `${ref?.name}:${ref?.key}`;
          });

      await t.step(
        "registrationToken optional and missing: the operator keeps the token, as without a selector",
        async () => {
          const jobs = await eventually("a runner Job of optional-registration", async () => {
            const found = await runnerJobsOf("optional-registration");
            return found.length > 0 ? found : undefined;
          }, { timeoutMs: 60_000, detail: () => operator!.logTail(20) });
          assert.deepEqual(jobs, ["optional-registration-registration-token:token"]);
          const kept = await core.readNamespacedSecret({ namespace, name: "optional-registration-registration-token" });
          assert.equal(kept.metadata?.ownerReferences?.[0]?.name, "optional-registration");
          assert.equal(
            atob(kept.data!.token),
            await forge.registrationToken({ kind: "repo", owner: "acme", repo: "app" }),
          );
          const named = await core.readNamespacedSecret({ namespace, name: "gitea-credentials" });
          assert.deepEqual(Object.keys(named.data ?? {}), ["auth-token"], "the named Secret is left alone");
          assert.equal((await condition("optional-registration", "CredentialsAvailable", "True")).status, "True");
        },
      );

      await t.step("registrationToken required and missing: reported, nothing kept, nothing started", async () => {
        const missing = await condition("required-registration", "CredentialsAvailable", "False");
        assert.equal(missing.reason, "KeyNotFound");
        assert.match(missing.message, /has no key "registration-token" \(spec\.registrationToken\)/);
        await assert.rejects(
          core.readNamespacedSecret({ namespace, name: "required-registration-registration-token" }),
        );
        assert.deepEqual(await runnerJobsOf("required-registration"), []);
      });

      await t.step("authToken optional and missing: reported like a required one, nothing started", async () => {
        const missing = await condition("optional-auth", "CredentialsAvailable", "False");
        assert.equal(missing.reason, "SecretNotFound");
        assert.match(missing.message, /no-such-secret does not exist \(spec\.authToken\)/);
        assert.deepEqual(await runnerJobsOf("optional-auth"), []);
      });

      await t.step("once the optional key exists, runner pods use it again", async () => {
        await core.patchNamespacedSecret({
          namespace,
          name: "gitea-credentials",
          body: [{ op: "add", path: "/data/registration-token", value: btoa("named-registration-token-0123") }],
        });
        // Every reconcile reads the Secrets afresh, so the reconcile that plans the next job sees the key.
        await forge.pushWorkflow("acme", "app", ".gitea/workflows/second.yaml", workflow("migrated-linux"));
        const jobs = await eventually("a second runner Job", async () => {
          const found = await runnerJobsOf("optional-registration");
          return found.length === 2 ? found : undefined;
        }, { timeoutMs: 60_000, detail: () => operator!.logTail(20) });
        assert.deepEqual(jobs.sort(), [
          "gitea-credentials:registration-token",
          "optional-registration-registration-token:token",
        ]);
      });
    } finally {
      if (operator?.running()) await operator.stop("SIGTERM");
      await Promise.all([cluster.dispose(), forge.dispose()]);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
