/**
 * Proves the install manifests and the samples against a real kube-apiserver: the kustomize base in
 * `manifests/base` is rendered by the real `kustomize build`, the CRD and Namespace are created for real, every other
 * object is created with a server-side dry run, and every sample RunnerGroup and Secret in `manifests/samples` must be
 * accepted by the CRD's schema and validation rules.
 *
 * Set GRO_HARNESS_DEBUG=1 to copy every process's output to stderr.
 */
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type {
  KubernetesObject,
  V1ClusterRole,
  V1ClusterRoleBinding,
  V1CustomResourceDefinition,
  V1Deployment,
  V1Secret,
} from "@kubernetes/client-node";
import { environmentVariables, parseConfig } from "../../src/config.ts";
import { apiMessage, apiStatus } from "../../src/kube/client.ts";
import { describeSpecIssues, kind, parseRunnerGroupSpec } from "../../src/runner_group/schema.ts";
import {
  createObject,
  describeObject,
  installCustomResourceDefinition,
  readObjects,
  WireObjectApi,
} from "../harness/apply.ts";
import { startCluster } from "../harness/cluster.ts";
import { kustomizeBuild } from "../harness/render.ts";

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const baseDir = join(repoRoot, "manifests", "base");
const samplesDir = join(repoRoot, "manifests", "samples");
const sampleNamespace = "default";
const echoOutput = Deno.env.get("GRO_HARNESS_DEBUG") === "1";

/** Kinds of the base that are cluster-scoped; kustomize's `namespace:` leaves them alone. */
const clusterScopedKinds = new Set(["Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"]);

function findObject<T extends KubernetesObject>(objects: KubernetesObject[], objectKind: string): T {
  const matches = objects.filter((object) => object.kind === objectKind);
  assert.equal(matches.length, 1, `expected one ${objectKind} in the base, found ${matches.length}`);
  return matches[0] as T;
}

// ---------------------------------------------------------------------------------------------------------------

Deno.test({
  name: "the kustomize base and every sample are accepted by a real API server",
  // The Kubernetes client keeps pooled HTTP connections open past the test.
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const base = await kustomizeBuild(baseDir);
    const sampleFiles = [...Deno.readDirSync(samplesDir)].filter((entry) => entry.name.endsWith(".yaml"))
      .map((entry) => entry.name).sort();
    assert.deepEqual(sampleFiles, [
      "runnergroup-global.yaml",
      "runnergroup-org.yaml",
      "runnergroup-repo.yaml",
      "runnergroup-user.yaml",
    ]);

    const cluster = await startCluster({ echoOutput });
    try {
      const client = cluster.kubeConfig.makeApiClient(WireObjectApi);

      await t.step("the base installs: CRD and Namespace for real, the rest as a dry run", async () => {
        const crd = findObject<V1CustomResourceDefinition>(base, "CustomResourceDefinition");
        const namespace = findObject(base, "Namespace");
        await installCustomResourceDefinition(client, crd);
        await createObject(client, namespace, { dryRun: false });
        for (const object of base) {
          if (object !== crd && object !== namespace) await createObject(client, object, { dryRun: true });
        }
      });

      await t.step("every namespaced object of the base lands in the operator's namespace", () => {
        const namespace = findObject(base, "Namespace").metadata!.name;
        for (const object of base) {
          if (clusterScopedKinds.has(object.kind ?? "")) continue;
          assert.equal(object.metadata?.namespace, namespace, describeObject(object));
        }
        const serviceAccount = findObject(base, "ServiceAccount");
        const binding = findObject<V1ClusterRoleBinding>(base, "ClusterRoleBinding");
        assert.deepEqual(binding.subjects, [{
          kind: "ServiceAccount",
          name: serviceAccount.metadata!.name,
          namespace: serviceAccount.metadata!.namespace,
        }]);
        assert.equal(binding.roleRef.name, findObject(base, "ClusterRole").metadata!.name);
        const deployment = findObject<V1Deployment>(base, "Deployment");
        assert.equal(deployment.spec?.template.spec?.serviceAccountName, serviceAccount.metadata!.name);
      });

      await t.step("the ClusterRole grants named verbs on named resources only", () => {
        const role = findObject<V1ClusterRole>(base, "ClusterRole");
        assert.ok((role.rules ?? []).length > 0, "the ClusterRole has no rules");
        assert.equal(role.aggregationRule, undefined);
        for (const rule of role.rules ?? []) {
          const where = JSON.stringify(rule);
          assert.ok(!rule.verbs.includes("*"), `wildcard verb in ${where}`);
          assert.ok(
            !(rule.resources ?? []).some((resource) => resource.includes("*")),
            `wildcard resource in ${where}`,
          );
          assert.ok(!(rule.apiGroups ?? []).includes("*"), `wildcard API group in ${where}`);
          assert.equal(rule.nonResourceURLs, undefined, `non-resource URLs in ${where}`);
          assert.equal(rule.resourceNames, undefined, `resource names in ${where}`);
        }
        const secretRules = (role.rules ?? []).filter((rule) => rule.resources?.includes("secrets"));
        assert.deepEqual(
          secretRules.flatMap((rule) => rule.verbs),
          ["get", "list", "watch", "create", "update", "delete"],
          "secrets: the named ones cached, kept registration tokens written, Forgejo runners' credentials managed",
        );
      });

      await t.step("the Deployment runs non-root on a read-only root filesystem", () => {
        const deployment = findObject<V1Deployment>(base, "Deployment");
        const pod = deployment.spec!.template.spec!;
        // More than one replica only with leader election, so that one instance acts.
        assert.equal(deployment.spec?.replicas, 2);
        const operatorEnv = deployment.spec!.template.spec!.containers[0].env ?? [];
        assert.equal(operatorEnv.find((e) => e.name === "GRO_LEADER_ELECT")?.value, "true");
        assert.equal(pod.securityContext?.runAsNonRoot, true);
        assert.equal(pod.securityContext?.seccompProfile?.type, "RuntimeDefault");
        assert.equal(pod.containers.length, 1);
        const [container] = pod.containers;
        const security = container.securityContext;
        assert.equal(security?.runAsNonRoot, true);
        assert.ok((security?.runAsUser ?? pod.securityContext?.runAsUser ?? 0) > 0, "runAsUser must not be root");
        assert.equal(security?.readOnlyRootFilesystem, true);
        assert.equal(security?.allowPrivilegeEscalation, false);
        assert.equal(security?.privileged ?? false, false);
        assert.deepEqual(security?.capabilities?.drop, ["ALL"]);
        assert.equal(security?.capabilities?.add, undefined);
        assert.match(container.image ?? "", /:\d+\.\d+\.\d+$/, "the image tag must be a pinned version");

        // The probes point at the port the operator serves health on with the settings the Deployment passes.
        const env = Object.fromEntries((container.env ?? []).map((variable) => [variable.name, variable.value]));
        for (const name of Object.keys(env)) assert.ok(environmentVariables.includes(name), `unknown variable ${name}`);
        const config = parseConfig(container.args ?? [], (name) => env[name]);
        const healthPort = container.ports?.find((port) => port.name === "health");
        assert.equal(healthPort?.containerPort, config.healthPort);
        assert.equal(container.livenessProbe?.httpGet?.path, "/healthz");
        assert.equal(container.livenessProbe?.httpGet?.port, "health");
        assert.equal(container.readinessProbe?.httpGet?.path, "/readyz");
        assert.equal(container.readinessProbe?.httpGet?.port, "health");
      });

      for (const file of sampleFiles) {
        await t.step(`sample ${file} is accepted`, async () => {
          const objects = await readObjects(join(samplesDir, file));
          const groups = objects.filter((object) => object.kind === kind);
          const secrets = objects.filter((object) => object.kind === "Secret") as V1Secret[];
          assert.equal(groups.length, 1, `expected one RunnerGroup in ${file}`);
          assert.equal(secrets.length, 1, `expected one Secret in ${file}`);

          // The operator's own validation, and the Secret keys the group names exist.
          const spec = (groups[0] as KubernetesObject & { spec: unknown }).spec;
          const parsed = parseRunnerGroupSpec(spec);
          assert.ok(parsed.success, parsed.success ? "" : describeSpecIssues(parsed.error));
          for (const selector of [parsed.data.authToken, parsed.data.registrationToken]) {
            if (selector === undefined) continue; // the operator keeps the registration token itself
            assert.equal(selector.name, secrets[0].metadata?.name);
            assert.ok(Object.hasOwn(secrets[0].stringData ?? {}, selector.key), `Secret has no key ${selector.key}`);
          }

          for (const object of objects) {
            assert.equal(object.metadata?.namespace, undefined, `${describeObject(object)} should not pin a namespace`);
            const inNamespace = { ...object, metadata: { ...object.metadata, namespace: sampleNamespace } };
            await createObject(client, inNamespace, { dryRun: true });
          }
        });
      }

      await t.step("a repository group with two owners is rejected, so the dry runs above did validate", async () => {
        const [group] = (await readObjects(join(samplesDir, "runnergroup-repo.yaml")))
          .filter((object) => object.kind === kind) as (KubernetesObject & { spec: Record<string, unknown> })[];
        const invalid = {
          ...group,
          metadata: { ...group.metadata, namespace: sampleNamespace },
          spec: { ...group.spec, org: "acme", user: "alice" },
        };
        const error = await client.createAsWritten(invalid, { dryRun: true }).then(() => undefined, (error) => error);
        assert.ok(error !== undefined, "the API server accepted a repository group with two owners");
        assert.equal(apiStatus(error), 422, apiMessage(error));
        assert.match(apiMessage(error), /scope repo needs exactly one owner/);
      });
    } finally {
      await cluster.dispose();
    }
  },
});
