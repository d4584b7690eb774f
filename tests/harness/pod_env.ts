/**
 * How the stand-in kubelet resolves a runner pod's environment, as a kubelet does before it creates the container:
 * what it cannot resolve is a {@linkcode ContainerConfigError}, which the stand-in reports as the kubelet's
 * CreateContainerConfigError and retries.
 */
import { ApiException, type CoreV1Api, type V1Pod } from "@kubernetes/client-node";

/** The container in a runner pod whose environment configures the runner. */
export const runnerContainerName = "runner";

/** The address the stand-in gives every pod and its host (the runners run on this machine). */
export const hostIp = "127.0.0.1";

/** A container configuration the stand-in cannot build, reported as the kubelet's CreateContainerConfigError. */
export class ContainerConfigError extends Error {
  override name = "ContainerConfigError";
}

/**
 * Resolves the `runner` container's environment as a kubelet would: literal values, Secret and ConfigMap keys,
 * a few downward-API fields, and `envFrom`. Missing references fail like the kubelet's CreateContainerConfigError.
 */
export async function resolveRunnerEnv(core: CoreV1Api, pod: V1Pod): Promise<Record<string, string>> {
  const namespace = pod.metadata?.namespace ?? "default";
  const container = pod.spec?.containers.find((candidate) => candidate.name === runnerContainerName);
  if (!container) throw new ContainerConfigError(`The pod has no container named "${runnerContainerName}"`);
  const secrets = new Map<string, Record<string, string> | undefined>();
  const configMaps = new Map<string, Record<string, string> | undefined>();

  const secret = async (name: string): Promise<Record<string, string> | undefined> => {
    if (!secrets.has(name)) {
      const found = await readOrUndefined(() => core.readNamespacedSecret({ name, namespace }));
      const decoded = found && Object.fromEntries(
        Object.entries(found.data ?? {}).map(([key, value]) => [key, decodeBase64(value)]),
      );
      secrets.set(name, decoded && { ...decoded, ...found?.stringData });
    }
    return secrets.get(name);
  };
  const configMap = async (name: string): Promise<Record<string, string> | undefined> => {
    if (!configMaps.has(name)) {
      const found = await readOrUndefined(() => core.readNamespacedConfigMap({ name, namespace }));
      configMaps.set(name, found && (found.data ?? {}));
    }
    return configMaps.get(name);
  };

  const env: Record<string, string> = {};
  for (const source of container.envFrom ?? []) {
    const prefix = source.prefix ?? "";
    const ref = source.secretRef ?? source.configMapRef;
    if (!ref) continue;
    const kind = source.secretRef ? "secret" : "configmap";
    const data = source.secretRef ? await secret(ref.name ?? "") : await configMap(ref.name ?? "");
    if (data === undefined) {
      if (ref.optional) continue;
      throw new ContainerConfigError(`${kind} "${ref.name}" not found`);
    }
    for (const [key, value] of Object.entries(data)) env[prefix + key] = value;
  }
  for (const variable of container.env ?? []) {
    const from = variable.valueFrom;
    if (!from) {
      env[variable.name] = variable.value ?? "";
      continue;
    }
    const keyRef = from.secretKeyRef ?? from.configMapKeyRef;
    if (keyRef) {
      const kind = from.secretKeyRef ? "Secret" : "ConfigMap";
      const data = from.secretKeyRef ? await secret(keyRef.name ?? "") : await configMap(keyRef.name ?? "");
      const value = data?.[keyRef.key];
      if (value !== undefined) env[variable.name] = value;
      else if (!keyRef.optional) {
        throw new ContainerConfigError(
          data === undefined
            ? `${kind.toLowerCase()} "${keyRef.name}" not found`
            : `couldn't find key ${keyRef.key} in ${kind} ${namespace}/${keyRef.name}`,
        );
      }
      continue;
    }
    if (from.fieldRef) {
      env[variable.name] = podField(pod, from.fieldRef.fieldPath);
      continue;
    }
    throw new ContainerConfigError(
      `Cannot resolve variable "${variable.name}": only value, secretKeyRef, ` +
        "configMapKeyRef and fieldRef are supported by the test kubelet",
    );
  }
  return env;
}

function podField(pod: V1Pod, path: string): string {
  const labelMatch = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(path);
  if (labelMatch) return pod.metadata?.[labelMatch[1] as "labels" | "annotations"]?.[labelMatch[2]] ?? "";
  const fields: Record<string, string | undefined> = {
    "metadata.name": pod.metadata?.name,
    "metadata.namespace": pod.metadata?.namespace,
    "metadata.uid": pod.metadata?.uid,
    "spec.nodeName": pod.spec?.nodeName,
    "spec.serviceAccountName": pod.spec?.serviceAccountName,
    "status.podIP": hostIp,
    "status.hostIP": hostIp,
  };
  if (!(path in fields)) throw new ContainerConfigError(`Unsupported fieldRef "${path}" in the test kubelet`);
  return fields[path] ?? "";
}

export async function readOrUndefined<T>(read: () => Promise<T>): Promise<T | undefined> {
  try {
    return await read();
  } catch (error) {
    if (isNotFound(error)) return undefined;
    throw error;
  }
}

function decodeBase64(value: string): string {
  return new TextDecoder().decode(Uint8Array.from(atob(value), (char) => char.charCodeAt(0)));
}

export function isNotFound(error: unknown): boolean {
  return error instanceof ApiException && error.code === 404;
}

export function isConflict(error: unknown): boolean {
  return error instanceof ApiException && error.code === 409;
}
