import assert from "node:assert/strict";
import { ApiException } from "@kubernetes/client-node";
import { apiMessage, apiStatus, decodeSecretData, isNamespaceTerminating, makeClients } from "../../src/kube/client.ts";
import { StaticCredentials } from "../../src/kube/credentials.ts";
import { KubeConfig } from "../../src/kube/kubeconfig.ts";
import { KubernetesApiError } from "../../src/kube/rest.ts";
import { namespaceTerminatingStatus } from "./fixtures.ts";

Deno.test("Secret data is decoded as UTF-8", () => {
  assert.equal(decodeSecretData(btoa(String.fromCharCode(...new TextEncoder().encode("tök€n")))), "tök€n");
});

interface Seen {
  method: string;
  path: string;
  query: Record<string, string>;
  contentType: string | null;
  body: unknown;
}

/** The clients against a local stand-in that records requests and answers with `answer`. */
async function withClients(
  answer: (seen: Seen) => Response,
  run: (clients: ReturnType<typeof makeClients>, seen: Seen[]) => Promise<void>,
): Promise<void> {
  const seen: Seen[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
    const url = new URL(request.url);
    const text = await request.text();
    const entry: Seen = {
      method: request.method,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      contentType: request.headers.get("content-type"),
      body: text === "" ? undefined : JSON.parse(text),
    };
    seen.push(entry);
    return answer(entry);
  });
  const kubeConfig = new KubeConfig(
    `http://127.0.0.1:${server.addr.port}`,
    [],
    new StaticCredentials({ headers: {} }),
    "a test server",
  );
  try {
    await run(makeClients(kubeConfig), seen);
  } finally {
    await server.shutdown();
  }
}

Deno.test("calls go to client-node's paths, with their query parameters; status is written as a merge patch", async () => {
  await withClients(
    (seen) => Response.json(seen.method === "GET" ? { items: [], metadata: {} } : {}),
    async (clients, seen) => {
      await clients.batch.listJobForAllNamespaces({ labelSelector: "a=b,c in (d)" });
      await clients.batch.listNamespacedJob({ namespace: "ci", labelSelector: "a=b" });
      await clients.batch.deleteNamespacedJob({ namespace: "ci", name: "j", propagationPolicy: "Background" });
      await clients.core.listSecretForAllNamespaces({ fieldSelector: "metadata.name=s", labelSelector: "x" });
      await clients.core.listNamespacedSecret({ namespace: "ci", labelSelector: "x" });
      await clients.custom.listClusterCustomObject({
        group: "gitea.bpg.pw",
        version: "v1alpha1",
        plural: "runnergroups",
      });
      await clients.custom.patchNamespacedCustomObjectStatus({
        group: "gitea.bpg.pw",
        version: "v1alpha1",
        namespace: "ci",
        plural: "runnergroups",
        name: "g",
        body: { status: { activeRunners: 1 } },
      });
      await clients.custom.replaceNamespacedCustomObject({
        group: "coordination.k8s.io",
        version: "v1",
        namespace: "ns",
        plural: "leases",
        name: "l",
        body: { spec: {} },
      });
      assert.deepEqual(seen.map(({ method, path, query }) => ({ method, path, query })), [
        { method: "GET", path: "/apis/batch/v1/jobs", query: { labelSelector: "a=b,c in (d)" } },
        { method: "GET", path: "/apis/batch/v1/namespaces/ci/jobs", query: { labelSelector: "a=b" } },
        { method: "DELETE", path: "/apis/batch/v1/namespaces/ci/jobs/j", query: { propagationPolicy: "Background" } },
        { method: "GET", path: "/api/v1/secrets", query: { fieldSelector: "metadata.name=s", labelSelector: "x" } },
        { method: "GET", path: "/api/v1/namespaces/ci/secrets", query: { labelSelector: "x" } },
        { method: "GET", path: "/apis/gitea.bpg.pw/v1alpha1/runnergroups", query: {} },
        { method: "PATCH", path: "/apis/gitea.bpg.pw/v1alpha1/namespaces/ci/runnergroups/g/status", query: {} },
        { method: "PUT", path: "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l", query: {} },
      ]);
      assert.equal(seen[6].contentType, "application/merge-patch+json");
      assert.deepEqual(seen[6].body, { status: { activeRunners: 1 } });
      assert.equal(seen[7].contentType, "application/json");
    },
  );
});

Deno.test("an error answer carries the HTTP status and the API server's Status message", async () => {
  const status = {
    kind: "Status",
    apiVersion: "v1",
    status: "Failure",
    message: 'jobs.batch "j" already exists',
    reason: "AlreadyExists",
    code: 409,
  };
  await withClients(() => Response.json(status, { status: 409 }), async (clients) => {
    const error = await clients.batch.createNamespacedJob({ namespace: "ci", body: { metadata: { name: "j" } } })
      .then(() => undefined, (error: unknown) => error);
    assert.ok(error instanceof KubernetesApiError);
    assert.equal(apiStatus(error), 409);
    assert.equal(apiMessage(error), 'jobs.batch "j" already exists');
    assert.deepEqual(error.body, status);
    assert.match(error.message, /The API server answered 409 to POST \/apis\/batch\/v1\/namespaces\/ci\/jobs: jobs/);
  });
  await withClients(() => new Response("upstream connect error", { status: 503 }), async (clients) => {
    const error = await clients.core.readNamespacedSecret({ namespace: "ci", name: "s" }).catch((e) => e);
    assert.equal(apiStatus(error), 503);
    assert.equal(
      apiMessage(error),
      "The API server answered 503 to GET /api/v1/namespaces/ci/secrets/s: upstream connect error",
    );
  });
});

Deno.test("apiStatus and apiMessage read client-node's ApiException (used by tests) and plain errors too", () => {
  const exception = new ApiException(404, "Not Found", JSON.stringify({ message: 'secrets "s" not found' }), {});
  assert.equal(apiStatus(exception), 404);
  assert.equal(apiMessage(exception), 'secrets "s" not found');
  assert.equal(apiStatus(new Error("connection refused")), undefined);
  assert.equal(apiMessage(new Error("connection refused")), "connection refused");
});

Deno.test("isNamespaceTerminating tells a namespace being deleted from other refusals, through causes", () => {
  const terminating = new KubernetesApiError(
    403,
    namespaceTerminatingStatus,
    "POST",
    "/apis/batch/v1/namespaces/team/jobs",
  );
  assert.equal(isNamespaceTerminating(terminating), true);
  assert.equal(isNamespaceTerminating(new Error("Cannot create runner Job team/ci-7", { cause: terminating })), true);
  // The same answer as text (an ApiException's body).
  assert.equal(
    isNamespaceTerminating(new ApiException(403, "Forbidden", JSON.stringify(namespaceTerminatingStatus), {})),
    true,
  );
  // RBAC says 403 too, without the cause.
  const rbac = { ...namespaceTerminatingStatus, details: { name: "ci-7", group: "batch", kind: "jobs" } };
  assert.equal(isNamespaceTerminating(new KubernetesApiError(403, rbac, "POST", "/")), false);
  // The cause on another status, or no API error at all.
  assert.equal(isNamespaceTerminating(new KubernetesApiError(409, namespaceTerminatingStatus, "POST", "/")), false);
  assert.equal(isNamespaceTerminating(new Error("unable to create new content in namespace team")), false);
  assert.equal(isNamespaceTerminating(undefined), false);
});
