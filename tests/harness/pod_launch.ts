/**
 * How the stand-in kubelet starts a runner pod's runner beyond its environment: the Forgejo runner's arguments, with
 * `$(VAR)` expanded from the container's environment as a kubelet does, and the container's Secret volumes as files
 * under a root folder that the test runner reads `file:` paths from (TEST_RUNNER_ROOT), as if they were mounted.
 */
import type { CoreV1Api, V1Container, V1Pod } from "@kubernetes/client-node";
import { ContainerConfigError } from "./pod_env.ts";

export interface RunnerLaunch {
  /** Arguments for the runner binary; undefined keeps the stand-in's default. */
  args?: string[];
  /** Files to place under the root folder: path (the mount path plus the key's path) and content. */
  files: { path: string; content: string }[];
}

/** Expands `$(VAR)` from `env` (an unknown variable stays as written, `$$` escapes), as Kubernetes does in args. */
export function expandKubernetesVariables(text: string, env: Record<string, string>): string {
  return text.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (match, name?: string) => {
    if (match === "$$") return "$";
    return name !== undefined && name in env ? env[name] : match;
  });
}

/** What the runner container asks for: `forgejo-runner one-job ...` arguments and Secret volume files. */
export async function resolveRunnerLaunch(
  core: CoreV1Api,
  pod: V1Pod,
  container: V1Container,
  env: Record<string, string>,
): Promise<RunnerLaunch> {
  const namespace = pod.metadata?.namespace ?? "default";
  const args = container.args?.[0] === "one-job"
    ? container.args.map((arg) => expandKubernetesVariables(arg, env))
    : undefined;
  const files: RunnerLaunch["files"] = [];
  for (const mount of container.volumeMounts ?? []) {
    const volume = pod.spec?.volumes?.find((candidate) => candidate.name === mount.name);
    const secretName = volume?.secret?.secretName;
    if (!secretName) continue;
    let data: Record<string, string>;
    try {
      const secret = await core.readNamespacedSecret({ namespace, name: secretName });
      data = Object.fromEntries(
        Object.entries(secret.data ?? {}).map(([key, value]) => [
          key,
          new TextDecoder().decode(
            Uint8Array.from(atob(value), (char) => char.charCodeAt(0)),
          ),
        ]),
      );
    } catch {
      // A kubelet keeps such a pod in ContainerCreating (FailedMount) and tries again.
      throw new ContainerConfigError(
        `MountVolume.SetUp failed for volume "${mount.name}": secret "${secretName}" not found`,
      );
    }
    const items = volume.secret!.items ?? Object.keys(data).map((key) => ({ key, path: key }));
    for (const item of items) {
      if (data[item.key] === undefined) {
        throw new ContainerConfigError(`couldn't find key ${item.key} in Secret ${namespace}/${secretName}`);
      }
      files.push({ path: `${mount.mountPath.replace(/\/+$/, "")}/${item.path}`, content: data[item.key] });
    }
  }
  return { ...(args ? { args } : {}), files };
}
