/**
 * Paths of the test binaries built by `tests/tools/build.sh`. The build is run once per test process; a warm cache
 * makes it a no-op, so every test file may call {@linkcode ensureTools}.
 *
 * Several Gitea versions are built (the forge contract tests run against each); everything else uses one, the
 * newest, or the one `GRO_GITEA_VERSION` names (`1.26.0`).
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** One built Gitea version. */
export interface GiteaBuild {
  /** "1.27.3" */
  version: string;
  gitea: string;
  /** Gitea's source tree (templates, options), used as its static root. */
  giteaSourceDir: string;
}

export interface ToolPaths {
  etcd: string;
  kubeApiserver: string;
  kubeControllerManager: string;
  kubeScheduler: string;
  /** The default Gitea's binary: `GRO_GITEA_VERSION`'s, else the newest built. */
  gitea: string;
  /** The default Gitea's source tree. */
  giteaSourceDir: string;
  /** The default Gitea's version. */
  giteaVersion: string;
  /** Every built Gitea, oldest first. */
  giteaBuilds: GiteaBuild[];
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
  const giteaBuilds: GiteaBuild[] = [];
  for (const line of new TextDecoder().decode(output.stdout).split("\n")) {
    const gitea = /^gitea-v(\d+\.\d+\.\d+)=(.+)$/.exec(line.trim());
    if (gitea) {
      giteaBuilds.push({ version: gitea[1], gitea: join(gitea[2], "gitea"), giteaSourceDir: join(gitea[2], "src") });
      continue;
    }
    const match = /^([a-z-]+)=(.+)$/.exec(line.trim());
    if (match) paths[match[1]] = match[2];
  }
  if (giteaBuilds.length === 0) throw new Error("The tools build printed no Gitea version");
  giteaBuilds.sort((a, b) => compareVersions(a.version, b.version));
  const giteaDefault = selectGiteaBuild(giteaBuilds, Deno.env.get("GRO_GITEA_VERSION") || undefined);
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
    gitea: giteaDefault.gitea,
    giteaSourceDir: giteaDefault.giteaSourceDir,
    giteaVersion: giteaDefault.version,
    giteaBuilds,
    testRunner: join(need("test-runner"), "test-runner"),
    helm: join(need("helm"), "helm"),
    kustomize: join(need("kustomize"), "kustomize"),
    serviceMonitorCrd: join(need("prometheus-operator-crds"), "monitoring.coreos.com_servicemonitors.yaml"),
  };
}

/** Orders "1.26.0" before "1.27.3" before "1.27.10". */
function compareVersions(a: string, b: string): number {
  const [left, right] = [a.split(".").map(Number), b.split(".").map(Number)];
  for (let i = 0; i < Math.max(left.length, right.length); i++) {
    const difference = (left[i] ?? 0) - (right[i] ?? 0);
    if (difference !== 0) return difference;
  }
  return 0;
}

/** The build of `version` ("1.26.0" or "v1.26.0"), or the newest when none is asked for. */
export function selectGiteaBuild(builds: GiteaBuild[], version?: string): GiteaBuild {
  if (version === undefined) return builds[builds.length - 1];
  const build = builds.find((candidate) => candidate.version === version.replace(/^v/, ""));
  if (!build) {
    throw new Error(
      `Gitea "${version}" is not built: tests/tools/build.sh builds ${builds.map((b) => b.version).join(", ")} ` +
        "(set GITEA_VERSIONS to build others)",
    );
  }
  return build;
}
