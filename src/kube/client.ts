/** Kubernetes connection: kubeconfig loading and the typed API clients the operator uses. */
import { ApiException, BatchV1Api, CoreV1Api, CustomObjectsApi, KubeConfig } from "@kubernetes/client-node";
import { createHash } from "node:crypto";
import { Agent } from "undici";

export interface KubeClients {
  kubeConfig: KubeConfig;
  core: CoreV1Api;
  batch: BatchV1Api;
  custom: CustomObjectsApi;
}

/**
 * Loads the kubeconfig: the given path, else in-cluster service account when running in a pod, else the default
 * locations (`KUBECONFIG`, `~/.kube/config`).
 */
export function loadKubeConfig(path: string, env: (name: string) => string | undefined): KubeConfig {
  const kubeConfig = new KubeConfig();
  if (path !== "") kubeConfig.loadFromFile(path);
  else if (env("KUBERNETES_SERVICE_HOST")) kubeConfig.loadFromCluster();
  else kubeConfig.loadFromDefault();
  return prepareKubeConfig(kubeConfig, path ? ` from "${path}"` : "");
}

/** Checks a loaded kubeconfig can be used, and makes its clients talk HTTP/1.1 (see {@linkcode useHttp1}). */
export function prepareKubeConfig(kubeConfig: KubeConfig, source = ""): KubeConfig {
  const cluster = kubeConfig.getCurrentCluster();
  if (!cluster) throw new Error(`Cannot load a kubeconfig${source}: no current cluster`);
  // Watches run on Deno's own fetch (see watch.ts), which always verifies the server's certificate.
  if (cluster.skipTLSVerify) {
    throw new Error(
      `Cluster "${cluster.name}" has insecure-skip-tls-verify, which the operator does not support: give its CA ` +
        "(certificate-authority or certificate-authority-data) instead",
    );
  }
  return useHttp1(kubeConfig);
}

type DispatcherOptions = { type: string; connect?: Record<string, unknown> };
type KubeConfigInternals = {
  createDispatcher(cluster: unknown, agentOptions: unknown): unknown;
  createDispatcherOptions(cluster: unknown, agentOptions: unknown): DispatcherOptions;
};

/**
 * Makes the client talk HTTP/1.1 to the API server. Under Deno, an HTTP/2 connection that the API server closes (on a
 * restart or upgrade) crashes the whole process inside the HTTP/2 layer (seen in tests/integration against a real
 * kube-apiserver); HTTP/1.1 fails as an ordinary request error that the informers and work queue retry.
 * Proxy and SOCKS settings keep the client's own dispatcher.
 */
export function useHttp1(kubeConfig: KubeConfig): KubeConfig {
  const internals = kubeConfig as unknown as KubeConfigInternals;
  const original = internals.createDispatcher.bind(kubeConfig);
  // The client asks for a dispatcher on every request; one Agent per distinct TLS setup keeps connections alive and
  // reused instead of opening (and leaving idle) a new one each time.
  const agents = new Map<string, Agent>();
  internals.createDispatcher = (cluster, agentOptions) => {
    const options = internals.createDispatcherOptions(cluster, agentOptions);
    if (options.type !== "agent") return original(cluster, agentOptions);
    const key = createHash("sha256").update(JSON.stringify(options.connect ?? {})).digest("hex");
    let agent = agents.get(key);
    if (!agent) {
      agent = new Agent({ connect: options.connect, allowH2: false });
      agents.set(key, agent);
    }
    return agent;
  };
  return kubeConfig;
}

export function makeClients(kubeConfig: KubeConfig): KubeClients {
  return {
    kubeConfig,
    core: kubeConfig.makeApiClient(CoreV1Api),
    batch: kubeConfig.makeApiClient(BatchV1Api),
    custom: kubeConfig.makeApiClient(CustomObjectsApi),
  };
}

/** Decodes one value of a Secret's `data` (base64 of UTF-8 text). */
export function decodeSecretData(encoded: string): string {
  return new TextDecoder().decode(Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0)));
}

/** The HTTP status of an API error, if it is one. */
export function apiStatus(error: unknown): number | undefined {
  if (error instanceof ApiException) return error.code;
  const code = (error as { code?: unknown; statusCode?: unknown })?.code ??
    (error as { statusCode?: unknown })?.statusCode;
  return typeof code === "number" ? code : undefined;
}

/** The API server's message of an API error, else the error's own message. */
export function apiMessage(error: unknown): string {
  if (error instanceof ApiException) {
    try {
      const body = typeof error.body === "string" ? JSON.parse(error.body) : error.body;
      if (body && typeof body.message === "string") return body.message;
    } catch {
      // not JSON; fall through
    }
  }
  return error instanceof Error ? error.message : String(error);
}
