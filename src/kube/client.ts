/** Kubernetes connection: kubeconfig loading and the typed API clients the operator uses. */
import { ApiException, BatchV1Api, CoreV1Api, CustomObjectsApi, KubeConfig } from "@kubernetes/client-node";

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
  if (!kubeConfig.getCurrentCluster()) {
    throw new Error(`Cannot load a kubeconfig${path ? ` from "${path}"` : ""}: no current cluster`);
  }
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
