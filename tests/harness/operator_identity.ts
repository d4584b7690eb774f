/**
 * The operator's own identity in a test cluster: a ServiceAccount bound to the ClusterRole of manifests/base, and a
 * kubeconfig with that account's token, so a test that runs the operator with it proves the role grants every call
 * the operator makes (the admin kubeconfig would hide a missing verb).
 */
import { CoreV1Api, RbacAuthorizationV1Api, type V1ClusterRole } from "@kubernetes/client-node";
import YAML from "yaml";
import { join } from "node:path";
import assert from "node:assert/strict";
import type { Environment } from "./environment.ts";
import type { OperatorProcess } from "./operator.ts";

const roleFile = new URL("../../manifests/base/cluster_role.yaml", import.meta.url);

/** Creates the identity (once per environment) and returns the path of a kubeconfig that acts as it. */
export async function operatorKubeconfig(env: Environment, namespace = "gro-system"): Promise<string> {
  const path = join(env.dir, "operator.kubeconfig");
  try {
    await Deno.stat(path);
    return path;
  } catch {
    // not made yet
  }
  const kubeConfig = env.cluster.kubeConfig;
  const core = kubeConfig.makeApiClient(CoreV1Api);
  const rbac = kubeConfig.makeApiClient(RbacAuthorizationV1Api);
  const name = "gitea-runner-operator";
  await core.createNamespace({ body: { metadata: { name: namespace } } });
  await core.createNamespacedServiceAccount({ namespace, body: { metadata: { name } } });
  const role = YAML.parse(await Deno.readTextFile(roleFile)) as V1ClusterRole;
  await rbac.createClusterRole({ body: role });
  await rbac.createClusterRoleBinding({
    body: {
      metadata: { name },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: role.metadata!.name! },
      subjects: [{ kind: "ServiceAccount", name, namespace }],
    },
  });
  const token = await core.createNamespacedServiceAccountToken({
    name,
    namespace,
    body: { spec: { audiences: [], expirationSeconds: 3 * 3600 } },
  });
  const cluster = kubeConfig.getCurrentCluster()!;
  const config = {
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "harness", cluster: { server: cluster.server, "certificate-authority": cluster.caFile } }],
    users: [{ name: "operator", user: { token: token.status!.token } }],
    contexts: [{ name: "operator", context: { cluster: "harness", user: "operator" } }],
    "current-context": "operator",
  };
  await Deno.writeTextFile(path, JSON.stringify(config, null, 2));
  return path;
}

/**
 * Fails when the operator's log shows its ServiceAccount refused a call: whatever the role lacks shows as an RBAC
 * refusal somewhere, be it only in a log line (events are written in the background). Other 403s, such as a namespace
 * that is being terminated, are not the role's doing.
 */
export async function assertNoRbacRefusal(operator: OperatorProcess): Promise<void> {
  const log = await operator.logTail(100_000);
  const refused = log.split("\n").filter((line) => /system:serviceaccount:\S* cannot /.test(line));
  assert.deepEqual(refused, [], "the operator's ServiceAccount was refused a call");
}
