/**
 * Proves the Helm chart in `manifests/helm/gitea-runner-operator` with the pinned Helm and a real kube-apiserver: it
 * lints clean, every object it renders (with default values and with a set of non-default ones) is accepted by a
 * server-side dry run with strict field validation, the rendered settings are ones the operator parses, bad values
 * fail the render with a clear message, and its Deployment and RBAC match the kustomize base.
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
  V1ConfigMap,
  V1Container,
  V1Deployment,
  V1Ingress,
  V1PolicyRule,
  V1Role,
  V1RoleBinding,
  V1Service,
} from "@kubernetes/client-node";
import { environmentVariables, parseConfig } from "../../src/config.ts";
import { webhookPath } from "../../src/http/webhook.ts";
import {
  createObject,
  describeObject,
  installCustomResourceDefinition,
  parseObjects,
  readObjects,
  WireObjectApi,
} from "../harness/apply.ts";
import { startCluster } from "../harness/cluster.ts";
import { helm, kustomizeBuild } from "../harness/render.ts";
import { ensureTools } from "../harness/tools.ts";

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const chartDir = join(repoRoot, "manifests", "helm", "gitea-runner-operator");
const baseDir = join(repoRoot, "manifests", "base");
const dashboardFile = join(repoRoot, "manifests", "grafana", "gitea-runner-operator-dashboard.json");
const echoOutput = Deno.env.get("GRO_HARNESS_DEBUG") === "1";

const release = "gro";
const releaseNamespace = "gro-system";
const watchNamespaces = ["team-a", "team-b"];

/** Non-default values touching every optional part of the chart. */
const customValues = {
  image: { tag: "0.1.1", pullPolicy: "Always" },
  imagePullSecrets: [{ name: "regcred" }],
  replicas: 1,
  leaderElection: { enabled: false },
  watchNamespaces,
  groupSelector: "tier=ci,team in (a,b)",
  rbac: { create: true, scope: "namespace" },
  serviceAccount: { create: true, name: "ci-operator", annotations: { "example.com/role": "ci" } },
  pollInterval: "30s",
  idleRunnerGrace: "45s",
  logLevel: "debug",
  logFormat: "text",
  runnerImage: "docker.gitea.com/act_runner:0.2.13",
  webhook: {
    secret: { name: "gitea-webhook", key: "secret" },
    ingress: {
      enabled: true,
      className: "nginx",
      host: "gro.example.com",
      tls: { secretName: "gro-example-tls" },
      annotations: { "nginx.ingress.kubernetes.io/proxy-body-size": "1m" },
    },
  },
  metrics: { serviceMonitor: { enabled: true, interval: "15s", labels: { release: "prometheus" } } },
  grafana: { dashboard: { enabled: true } },
  resources: { requests: { cpu: "100m", memory: "128Mi" }, limits: { cpu: "1", memory: "512Mi" } },
  nodeSelector: { "kubernetes.io/os": "linux" },
  tolerations: [{ key: "ci", operator: "Exists", effect: "NoSchedule" }],
  podAnnotations: { "example.com/scrape": "false" },
  extraEnv: [{ name: "GRO_WORKERS", value: "8" }],
};

// ---------------------------------------------------------------------------------------------------------------

async function writeValues(values: unknown): Promise<string> {
  const file = await Deno.makeTempFile({ prefix: "gro-values-", suffix: ".yaml" });
  await Deno.writeTextFile(file, JSON.stringify(values)); // JSON is YAML
  return file;
}

/** `helm template` of the chart; throws with Helm's message when the render fails. */
async function render(...args: string[]): Promise<KubernetesObject[]> {
  const result = await helm("template", release, chartDir, "--namespace", releaseNamespace, ...args);
  if (!result.success) throw new Error(`helm template failed: ${result.stderr.trim()}`);
  return parseObjects(result.stdout, "helm template");
}

/** The error output of a render that must fail. */
async function renderError(...args: string[]): Promise<string> {
  const result = await helm("template", release, chartDir, "--namespace", releaseNamespace, ...args);
  assert.equal(result.success, false, `helm template ${args.join(" ")} succeeded, expected a failure`);
  return result.stderr;
}

function ofKind<T extends KubernetesObject>(objects: KubernetesObject[], kind: string): T[] {
  return objects.filter((object) => object.kind === kind) as T[];
}

function one<T extends KubernetesObject>(objects: KubernetesObject[], kind: string): T {
  const matches = ofKind<T>(objects, kind);
  assert.equal(matches.length, 1, `expected one ${kind}, found ${matches.length}`);
  return matches[0];
}

function operatorContainer(deployment: V1Deployment): V1Container {
  const containers = deployment.spec!.template.spec!.containers;
  assert.equal(containers.length, 1);
  return containers[0];
}

/** The container's environment as a map; every value must be literal (no valueFrom). */
function envOf(container: V1Container): Record<string, string> {
  const env: Record<string, string> = {};
  for (const variable of container.env ?? []) {
    assert.equal(typeof variable.value, "string", `${variable.name} has no literal value`);
    env[variable.name] = variable.value!;
  }
  return env;
}

function assertKnownVariables(container: V1Container): void {
  for (const variable of container.env ?? []) {
    assert.ok(
      environmentVariables.includes(variable.name),
      `the chart sets ${variable.name}, which src/config.ts does not read`,
    );
  }
}

/** The rules without their comments' influence: sorted lists, so that only what is granted is compared. */
function normalizedRules(rules: V1PolicyRule[] | undefined): string[] {
  return (rules ?? []).map((rule) =>
    JSON.stringify({
      apiGroups: [...rule.apiGroups ?? []].sort(),
      resources: [...rule.resources ?? []].sort(),
      resourceNames: rule.resourceNames ? [...rule.resourceNames].sort() : undefined,
      verbs: [...rule.verbs].sort(),
    })
  ).sort();
}

const isLeaseRule = (rule: V1PolicyRule): boolean => rule.resources?.includes("leases") ?? false;

// ---------------------------------------------------------------------------------------------------------------

Deno.test("helm lint passes with default and with non-default values", async () => {
  const valuesFile = await writeValues(customValues);
  try {
    for (const args of [[], ["--values", valuesFile]]) {
      const result = await helm("lint", "--strict", chartDir, "--namespace", releaseNamespace, ...args);
      const output = result.stdout + result.stderr;
      assert.ok(result.success, `helm lint ${args.join(" ")} failed:\n${output}`);
      assert.match(output, /1 chart\(s\) linted, 0 chart\(s\) failed/);
      assert.doesNotMatch(output, /\[(ERROR|WARNING)\]/, output);
    }
  } finally {
    await Deno.remove(valuesFile);
  }
});

Deno.test("bad values fail the render with a message that names them", async (t) => {
  await t.step("namespace-scoped RBAC without watchNamespaces", async () => {
    assert.match(
      await renderError("--set", "rbac.scope=namespace"),
      /rbac\.scope=namespace needs watchNamespaces: list the namespaces whose RunnerGroups the operator watches/,
    );
  });
  await t.step("a string where the schema wants an integer", async () => {
    const error = await renderError("--set", "replicas=two");
    assert.match(error, /values don't meet the specifications of the schema/);
    assert.match(error, /at '\/replicas': got string, want integer/);
  });
  await t.step("a misspelt value", async () => {
    assert.match(await renderError("--set", "rbac.scpe=namespace"), /at '\/rbac': additional properties 'scpe'/);
  });
  await t.step("a value outside its choices", async () => {
    assert.match(await renderError("--set", "logFormat=xml"), /at '\/logFormat': value must be one of 'json', 'text'/);
  });
  await t.step("several replicas without leader election", async () => {
    assert.match(
      await renderError("--set", "leaderElection.enabled=false"),
      /replicas=2 needs leaderElection\.enabled=true/,
    );
  });
  await t.step("a webhook Ingress without the webhook secret", async () => {
    assert.match(
      await renderError("--set", "webhook.ingress.enabled=true", "--set", "webhook.ingress.host=gro.example.com"),
      /webhook\.ingress\.enabled needs webhook\.secret\.name and webhook\.secret\.key/,
    );
  });
});

Deno.test({
  name: "the chart's objects are accepted by a real API server and match the kustomize base",
  // The Kubernetes client keeps pooled HTTP connections open past the test.
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const tools = await ensureTools();
    const base = await kustomizeBuild(baseDir);
    const chartCrds = (await Promise.all(
      [...Deno.readDirSync(join(chartDir, "crds"))].map((entry) => readObjects(join(chartDir, "crds", entry.name))),
    )).flat();
    const defaults = await render();
    const valuesFile = await writeValues(customValues);
    const custom = await render("--values", valuesFile);

    const cluster = await startCluster({ echoOutput });
    try {
      const client = cluster.kubeConfig.makeApiClient(WireObjectApi);

      await t.step("the chart's CRDs, the ServiceMonitor CRD and the namespaces install for real", async () => {
        assert.deepEqual(chartCrds.map((crd) => crd.metadata?.name), ["runnergroups.gitea.bpg.pw"]);
        for (const crd of [...chartCrds, ...await readObjects(tools.serviceMonitorCrd)]) {
          await installCustomResourceDefinition(client, crd);
        }
        for (const name of [releaseNamespace, ...watchNamespaces]) {
          await createObject(client, { apiVersion: "v1", kind: "Namespace", metadata: { name } }, { dryRun: false });
        }
      });

      await t.step("every object of the default render is accepted (dry run)", async () => {
        assert.deepEqual(
          defaults.map((object) => object.kind).sort(),
          ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"],
        );
        for (const object of defaults) await createObject(client, object, { dryRun: true });
      });

      await t.step("every object of the non-default render is accepted (dry run)", async () => {
        for (const object of custom) await createObject(client, object, { dryRun: true });
      });

      await t.step("namespaced objects land in the release namespace", () => {
        for (const object of [...defaults, ...custom]) {
          if (["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"].includes(object.kind!)) continue;
          assert.equal(object.metadata?.namespace, releaseNamespace, describeObject(object));
        }
      });

      await t.step("default RBAC: the ClusterRole grants exactly what the base's does, to the chart's account", () => {
        const role = one<V1ClusterRole>(defaults, "ClusterRole");
        assert.deepEqual(normalizedRules(role.rules), normalizedRules(one<V1ClusterRole>(base, "ClusterRole").rules));
        const binding = one<V1ClusterRoleBinding>(defaults, "ClusterRoleBinding");
        const account = one(defaults, "ServiceAccount");
        assert.deepEqual(binding.roleRef, {
          apiGroup: "rbac.authorization.k8s.io",
          kind: "ClusterRole",
          name: role.metadata!.name,
        });
        assert.deepEqual(binding.subjects, [{
          kind: "ServiceAccount",
          name: account.metadata!.name,
          namespace: releaseNamespace,
        }]);
        const deployment = one<V1Deployment>(defaults, "Deployment");
        assert.equal(deployment.spec?.template.spec?.serviceAccountName, account.metadata!.name);
      });

      await t.step("the Deployment keeps the base's security settings, probes, ports and resources", () => {
        const chart = one<V1Deployment>(defaults, "Deployment");
        const kustomized = one<V1Deployment>(base, "Deployment");
        const [chartPod, basePod] = [chart.spec!.template.spec!, kustomized.spec!.template.spec!];
        assert.deepEqual(chartPod.securityContext, basePod.securityContext);
        assert.equal(chartPod.automountServiceAccountToken, basePod.automountServiceAccountToken);
        assert.deepEqual(chartPod.volumes, basePod.volumes);
        const [chartContainer, baseContainer] = [operatorContainer(chart), operatorContainer(kustomized)];
        for (
          const field of [
            "securityContext",
            "livenessProbe",
            "readinessProbe",
            "ports",
            "resources",
            "volumeMounts",
            "imagePullPolicy",
          ] as const
        ) {
          assert.deepEqual(chartContainer[field], baseContainer[field], field);
        }
        assert.equal(chartContainer.image, baseContainer.image);
        assert.equal(chart.spec?.replicas, kustomized.spec?.replicas);
      });

      await t.step("default settings: leader election on in the release namespace, all namespaces watched", () => {
        const container = operatorContainer(one<V1Deployment>(defaults, "Deployment"));
        assertKnownVariables(container);
        const env = envOf(container);
        const config = parseConfig([], (name) => env[name]);
        assert.equal(config.leaderElect, true);
        assert.equal(config.leaderElectionNamespace, releaseNamespace);
        assert.equal(config.leaseDuration, 15_000);
        assert.equal(env.GRO_LEADER_ELECTION_ID, `${release}-gitea-runner-operator`);
        assert.deepEqual(config.namespaces, []);
        assert.equal(config.logFormat, "json");
        assert.equal(config.webhookSecret, "");
        assert.equal(config.healthPort, container.ports?.find((port) => port.name === "health")?.containerPort);
      });

      await t.step("non-default settings reach the operator's environment and parse", () => {
        const deployment = one<V1Deployment>(custom, "Deployment");
        assert.equal(deployment.spec?.replicas, 1);
        const container = operatorContainer(deployment);
        assertKnownVariables(container);
        const env = envOf(container);
        assert.equal(env.GRO_NAMESPACES, watchNamespaces.join(","));
        assert.equal(env.GRO_WEBHOOK_SECRET, `${releaseNamespace}/gitea-webhook:secret`);
        assert.equal(env.GRO_GROUP_SELECTOR, customValues.groupSelector);
        assert.equal(env.GRO_LEADER_ELECT, "false");
        assert.equal(env.GRO_LEADER_ELECTION_ID, undefined);
        assert.equal(container.env?.at(-1)?.name, "GRO_WORKERS", "extraEnv comes last, so that it wins");
        const config = parseConfig([], (name) => env[name]);
        assert.deepEqual(config.namespaces, watchNamespaces);
        assert.equal(config.webhookSecret, `${releaseNamespace}/gitea-webhook:secret`);
        assert.equal(config.groupSelector, customValues.groupSelector);
        assert.equal(config.leaderElect, false);
        assert.equal(config.pollInterval, 30_000);
        assert.equal(config.idleRunnerGrace, 45_000);
        assert.equal(config.logLevel, "debug");
        assert.equal(config.logFormat, "text");
        assert.equal(config.runnerImage, customValues.runnerImage);
        assert.equal(config.workers, 8);
        assert.equal(container.image, "ghcr.io/gitea-runner-operator/gitea-runner-operator:0.1.1");
        assert.equal(container.imagePullPolicy, "Always");
        assert.deepEqual(container.resources, customValues.resources);
        const pod = deployment.spec!.template.spec!;
        assert.deepEqual(pod.imagePullSecrets, customValues.imagePullSecrets);
        assert.deepEqual(pod.nodeSelector, customValues.nodeSelector);
        assert.deepEqual(pod.tolerations, customValues.tolerations);
        assert.deepEqual(deployment.spec?.template.metadata?.annotations, customValues.podAnnotations);
        assert.equal(pod.serviceAccountName, "ci-operator");
      });

      await t.step("namespace-scoped RBAC: a Role in each watched namespace, no cluster-wide grant", () => {
        assert.deepEqual(ofKind(custom, "ClusterRole"), []);
        assert.deepEqual(ofKind(custom, "ClusterRoleBinding"), []);
        const baseRules = one<V1ClusterRole>(base, "ClusterRole").rules ?? [];
        const roles = ofKind<V1Role>(custom, "Role");
        const bindings = ofKind<V1RoleBinding>(custom, "RoleBinding");
        for (const namespace of watchNamespaces) {
          const role = roles.find((candidate) => candidate.metadata?.namespace === namespace);
          assert.ok(role, `no Role in ${namespace}`);
          assert.deepEqual(
            normalizedRules(role.rules),
            normalizedRules(baseRules.filter((rule) => !isLeaseRule(rule))),
          );
          const binding = bindings.find((candidate) => candidate.metadata?.namespace === namespace);
          assert.deepEqual(binding?.roleRef, {
            apiGroup: "rbac.authorization.k8s.io",
            kind: "Role",
            name: role.metadata!.name,
          });
          assert.deepEqual(binding?.subjects, [{
            kind: "ServiceAccount",
            name: "ci-operator",
            namespace: releaseNamespace,
          }]);
        }
        // In its own namespace the operator reads only the webhook Secret; without leader election, no Lease rights.
        const own = roles.find((candidate) => candidate.metadata?.namespace === releaseNamespace);
        assert.ok(own, `no Role in ${releaseNamespace}`);
        assert.deepEqual(
          own.rules?.map(({ apiGroups, resources, resourceNames, verbs }) => ({
            apiGroups,
            resources,
            resourceNames,
            verbs,
          })),
          [
            { apiGroups: [""], resources: ["secrets"], resourceNames: ["gitea-webhook"], verbs: ["get"] },
          ],
        );
        const ownBinding = bindings.find((candidate) => candidate.metadata?.namespace === releaseNamespace);
        assert.equal(ownBinding?.roleRef.name, own.metadata!.name);
        assert.equal(roles.length, watchNamespaces.length + 1);
      });

      await t.step("namespace-scoped RBAC with leader election grants Leases in the lease namespace only", async () => {
        const objects = await render(
          "--set",
          "rbac.scope=namespace",
          "--set",
          `watchNamespaces={${watchNamespaces.join(",")}}`,
          "--set",
          `leaderElection.namespace=${watchNamespaces[0]}`,
        );
        for (const object of objects) await createObject(client, object, { dryRun: true });
        const leaseRoles = ofKind<V1Role>(objects, "Role").filter((role) => role.rules?.some(isLeaseRule));
        assert.deepEqual(leaseRoles.map((role) => role.metadata?.namespace), [watchNamespaces[0]]);
        const env = envOf(operatorContainer(one<V1Deployment>(objects, "Deployment")));
        assert.equal(env.GRO_LEADER_ELECTION_NAMESPACE, watchNamespaces[0]);
      });

      await t.step("the metrics Service selects the operator's pods and serves the container's port", () => {
        const service = one<V1Service>(custom, "Service");
        const deployment = one<V1Deployment>(custom, "Deployment");
        const podLabels = deployment.spec!.template.metadata!.labels!;
        for (const [key, value] of Object.entries(service.spec!.selector!)) assert.equal(podLabels[key], value, key);
        assert.deepEqual(deployment.spec?.selector.matchLabels, service.spec?.selector);
        const [port] = service.spec!.ports!;
        assert.equal(port.name, "http");
        assert.equal(port.port, 8081);
        assert.ok(operatorContainer(deployment).ports?.some((containerPort) => containerPort.name === port.targetPort));
      });

      await t.step("the ServiceMonitor scrapes /metrics on the Service's named port", () => {
        const service = one<V1Service>(custom, "Service");
        const monitor = one<
          KubernetesObject & {
            spec: {
              selector: { matchLabels: Record<string, string> };
              namespaceSelector: { matchNames: string[] };
              endpoints: { port: string; path: string; interval: string; honorLabels: boolean }[];
            };
          }
        >(custom, "ServiceMonitor");
        for (const [key, value] of Object.entries(monitor.spec.selector.matchLabels)) {
          assert.equal(service.metadata?.labels?.[key], value, `the Service lacks the selected label ${key}`);
        }
        assert.deepEqual(monitor.spec.namespaceSelector.matchNames, [releaseNamespace]);
        assert.equal(monitor.spec.endpoints.length, 1);
        const [endpoint] = monitor.spec.endpoints;
        assert.equal(endpoint.port, service.spec!.ports![0].name);
        assert.equal(endpoint.path, "/metrics");
        assert.equal(endpoint.interval, "15s");
        assert.equal(endpoint.honorLabels, true, "the series' own namespace label must survive the scrape");
        assert.equal(monitor.metadata?.labels?.release, "prometheus");
      });

      await t.step("the Ingress routes only the webhook path to the Service, over TLS", () => {
        const ingress = one<V1Ingress>(custom, "Ingress");
        const service = one<V1Service>(custom, "Service");
        assert.equal(ingress.spec?.ingressClassName, "nginx");
        assert.deepEqual(ingress.spec?.tls, [{ hosts: ["gro.example.com"], secretName: "gro-example-tls" }]);
        assert.equal(ingress.spec?.rules?.length, 1);
        const [rule] = ingress.spec!.rules!;
        assert.equal(rule.host, "gro.example.com");
        assert.deepEqual(rule.http?.paths, [{
          path: webhookPath,
          pathType: "Exact",
          backend: { service: { name: service.metadata!.name, port: { name: service.spec!.ports![0].name } } },
        }]);
        assert.equal(ingress.metadata?.annotations?.["nginx.ingress.kubernetes.io/proxy-body-size"], "1m");
      });

      await t.step("the dashboard ConfigMap carries the Grafana dashboard for the sidecar", async () => {
        const configMap = one<V1ConfigMap>(custom, "ConfigMap");
        assert.equal(configMap.metadata?.labels?.grafana_dashboard, "1");
        const [json, ...others] = Object.values(configMap.data ?? {});
        assert.deepEqual(others, []);
        assert.deepEqual(JSON.parse(json), JSON.parse(await Deno.readTextFile(dashboardFile)));
      });

      await t.step("the install notes name the webhook URL and the watched namespaces", async () => {
        const result = await helm(
          "install",
          release,
          chartDir,
          "--namespace",
          releaseNamespace,
          "--values",
          valuesFile,
          "--dry-run=client",
          "--kubeconfig",
          cluster.kubeconfigPath,
        );
        assert.ok(result.success, result.stderr);
        const notes = result.stdout.slice(result.stdout.indexOf("NOTES:"));
        assert.match(notes, new RegExp(`https://gro\\.example\\.com${webhookPath}`));
        assert.match(notes, /RunnerGroups in team-a, team-b that match the label selector "tier=ci,team in \(a,b\)"\./);
      });
    } finally {
      await cluster.dispose();
      await Deno.remove(valuesFile);
    }
  },
});
