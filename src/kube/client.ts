/** Kubernetes connection: kubeconfig loading and the typed API clients the operator uses. */
import { BatchV1Api, CoreV1Api, CustomObjectsApi } from "./api.ts";
import { KubeConfig, loadKubeConfig } from "./kubeconfig.ts";
import { KubernetesApiError, RestClient } from "./rest.ts";

export { KubeConfig, loadKubeConfig };

export interface KubeClients {
  kubeConfig: KubeConfig;
  core: CoreV1Api;
  batch: BatchV1Api;
  custom: CustomObjectsApi;
}

/** The API clients over one connection pool. */
export function makeClients(kubeConfig: KubeConfig): KubeClients {
  const rest = new RestClient(kubeConfig);
  return { kubeConfig, core: new CoreV1Api(rest), batch: new BatchV1Api(rest), custom: new CustomObjectsApi(rest) };
}

/** Decodes one value of a Secret's `data` (base64 of UTF-8 text). */
export function decodeSecretData(encoded: string): string {
  return new TextDecoder().decode(Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0)));
}

/**
 * The HTTP status of an API error, if it is one: ours ({@linkcode KubernetesApiError}), or one with the same `code`
 * (client-node's `ApiException`, which tests use) or a watch's `statusCode`.
 */
export function apiStatus(error: unknown): number | undefined {
  if (error instanceof KubernetesApiError) return error.code;
  const code = (error as { code?: unknown; statusCode?: unknown })?.code ??
    (error as { statusCode?: unknown })?.statusCode;
  return typeof code === "number" ? code : undefined;
}

/** The API server's `Status` body of an API error, parsed when it came as text; undefined without one. */
function statusBody(error: unknown): { message?: unknown; details?: { causes?: unknown } } | undefined {
  const body = (error as { body?: unknown })?.body;
  if (apiStatus(error) === undefined || body === undefined) return undefined;
  if (typeof body !== "string") return body ?? undefined;
  try {
    return JSON.parse(body) ?? undefined;
  } catch {
    return undefined; // not JSON
  }
}

/** The API server's message of an API error (from its `Status` body), else the error's own message. */
export function apiMessage(error: unknown): string {
  const message = statusBody(error)?.message;
  if (typeof message === "string") return message;
  return error instanceof Error ? error.message : String(error);
}

/**
 * Whether `error`, or an error it was caused by, is the API server refusing to create an object in a namespace that
 * is being deleted: a 403 whose `Status` has a `NamespaceTerminating` cause, as the NamespaceLifecycle admission plugin
 * answers (k8s.io/apiserver v0.35.4 `pkg/admission/plugin/namespace/lifecycle/admission.go`; the cause type is
 * `NamespaceTerminatingCause` in k8s.io/api `core/v1`). Nothing can be created there any more and the namespace's
 * deletion reaches every object in it, so Kubernetes' own controllers stop at it without retrying or reporting it,
 * and client-go's event sink drops such an Event.
 */
export function isNamespaceTerminating(error: unknown): boolean {
  let current = error;
  for (let depth = 0; depth < 8 && current instanceof Error; depth++, current = current.cause) {
    if (apiStatus(current) !== 403) continue;
    // A cause's type is its `reason` in JSON (`StatusCause.Type`, k8s.io/apimachinery v0.35.4 `meta/v1/types.go`).
    const causes = statusBody(current)?.details?.causes;
    if (Array.isArray(causes) && causes.some((cause) => cause?.reason === "NamespaceTerminating")) return true;
  }
  return false;
}
