/**
 * Paths of the test binaries built by `tests/tools/build.sh`. The build is run once per test process; a warm cache
 * makes it a no-op, so every test file may call {@linkcode ensureTools}.
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export interface ToolPaths {
  etcd: string;
  kubeApiserver: string;
  kubeControllerManager: string;
  kubeScheduler: string;
  gitea: string;
  /** Gitea's source tree (templates, options), used as its static root. */
  giteaSourceDir: string;
  testRunner: string;
  helm: string;
  kustomize: string;
  /** prometheus-operator's ServiceMonitor CustomResourceDefinition (YAML), for the Helm chart's ServiceMonitor. */
  serviceMonitorCrd: string;
}

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
let built: Promise<ToolPaths> | undefined;

/** Builds (or finds cached) test binaries and returns their paths. */
export function ensureTools(): Promise<ToolPaths> {
  built ??= buildTools();
  return built;
}

async function buildTools(): Promise<ToolPaths> {
  const script = join(repoRoot, "tests", "tools", "build.sh");
  const output = await new Deno.Command("bash", { args: [script, "--print-paths"], stderr: "inherit" }).output();
  if (!output.success) throw new Error(`Cannot build the test tools: ${script} exited with ${output.code}`);
  const paths: Record<string, string> = {};
  for (const line of new TextDecoder().decode(output.stdout).split("\n")) {
    const match = /^([a-z-]+)=(.+)$/.exec(line.trim());
    if (match) paths[match[1]] = match[2];
  }
  const need = (name: string): string => {
    const value = paths[name];
    if (!value) throw new Error(`The tools build printed no path for "${name}"`);
    return value;
  };
  return {
    etcd: join(need("etcd"), "etcd"),
    kubeApiserver: join(need("kubernetes"), "kube-apiserver"),
    kubeControllerManager: join(need("kubernetes"), "kube-controller-manager"),
    kubeScheduler: join(need("kubernetes"), "kube-scheduler"),
    gitea: join(need("gitea"), "gitea"),
    giteaSourceDir: join(need("gitea"), "src"),
    testRunner: join(need("test-runner"), "test-runner"),
    helm: join(need("helm"), "helm"),
    kustomize: join(need("kustomize"), "kustomize"),
    serviceMonitorCrd: join(need("prometheus-operator-crds"), "monitoring.coreos.com_servicemonitors.yaml"),
  };
}
