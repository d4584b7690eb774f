/**
 * Benchmark: where the operator's memory goes. Prints a table and writes the figures as JSON.
 *
 *   deno task bench:memory [--runs 7] [--operator-runs 5] [--jobs 1000] [--steps 2] [--out dist/bench/memory.json]
 *                          [--no-cluster]
 *
 * 1. Module loading: resident memory (VmRSS) of a fresh Deno process, and of one that loaded the operator's modules
 *    (`main.ts` and what it imports) and built its Kubernetes clients from a kubeconfig; median over `--runs`
 *    processes each (`memory_probe.ts`).
 * 2. Per object: heap per cached runner Job as the API server returns it (with `managedFields`) and as the Job
 *    informer keeps it, from Jobs the real API server returned.
 * 3. The operator process, as `deno task run` starts it, against the real local control plane and Gitea with 22
 *    RunnerGroups (20 repository-scope, 2 organization-scope): resident memory idle, then after each `--jobs` more
 *    runner Jobs are cached (created suspended, so that no pods run; labelled and owned as the operator's own, built by
 *    its own builder). Resident memory is sampled every 500 ms for 15 s once the operator has seen every Job (the
 *    owning group's status counts them) and 20 s have passed; the sample median is a run's figure. Growth per 1,000
 *    Jobs is the slope from idle to the last step. `--operator-runs` fresh operator processes, in one environment (the
 *    Jobs are deleted between runs); the table shows medians over runs.
 */
import { parseArgs } from "node:util";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { KubeConfig, type V1Job } from "@kubernetes/client-node";
import { createRunnerGroup, getRunnerGroup, startEnvironment } from "../harness/environment.ts";
import { eventually } from "../harness/wait.ts";
import { type OperatorProcess, startOperator } from "../harness/operator.ts";
import { buildRunnerJob, defaultRunnerImage } from "../../src/runner_group/runner_job.ts";
import { parseRunnerGroupSpec } from "../../src/runner_group/schema.ts";
import { effectiveRunnerLabels } from "../../src/forge/labels.ts";
import { forgeKey } from "../../src/runner_group/ownership.ts";

const here = dirname(fileURLToPath(import.meta.url));
const encoder = new TextEncoder();
const say = (line: string): void => void Deno.stdout.writeSync(encoder.encode(`${line}\n`));
const MiB = 1024 * 1024;

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    runs: { type: "string", default: "7" },
    jobs: { type: "string", default: "1000" },
    steps: { type: "string", default: "2" },
    "operator-runs": { type: "string", default: "5" },
    out: { type: "string", default: "dist/bench/memory.json" },
    "no-cluster": { type: "boolean", default: false },
  },
});
const positiveInteger = (name: string, text: string): number => {
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 1) throw new Error(`--${name} must be a positive integer, not "${text}"`);
  return value;
};
const runs = positiveInteger("runs", flags.runs);
const jobsPerStep = positiveInteger("jobs", flags.jobs);
const stepCount = positiveInteger("steps", flags.steps);
const operatorRuns = positiveInteger("operator-runs", flags["operator-runs"]);
const mib = (value: number): string => `${value.toFixed(1)} MiB`;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** Runs the probe once in a fresh process and returns its JSON line. */
async function probe(...args: string[]): Promise<Record<string, number>> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--v8-flags=--expose-gc", join(here, "memory_probe.ts"), ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout).trim();
  if (!output.success) {
    throw new Error(`The memory probe ${args[0]} failed: ${new TextDecoder().decode(output.stderr).slice(-2000)}`);
  }
  return JSON.parse(text.split("\n").at(-1)!);
}

/** A kubeconfig as the operator gets it outside a cluster: a server, its CA and a token. */
async function sampleKubeconfig(dir: string): Promise<string> {
  const path = join(dir, "kubeconfig.yaml");
  await Deno.writeTextFile(
    path,
    JSON.stringify({
      apiVersion: "v1",
      kind: "Config",
      clusters: [{
        name: "c",
        cluster: { server: "https://127.0.0.1:6443", "certificate-authority-data": btoa("ca") },
      }],
      users: [{ name: "u", user: { token: "bench-token" } }],
      contexts: [{ name: "x", context: { cluster: "c", user: "u" } }],
      "current-context": "x",
    }),
  );
  return path;
}

/** Resident memory of a process in bytes, from /proc. */
function residentBytesOf(pid: number): number {
  const line = Deno.readTextFileSync(`/proc/${pid}/status`).split("\n").find((l) => l.startsWith("VmRSS:"));
  if (!line) throw new Error(`No VmRSS for process ${pid}`);
  return Number(line.replace(/\D+/g, "")) * 1024;
}

/** CPU seconds (user and system) a process has used, from /proc (clock ticks of 1/100 s on Linux). */
function cpuSecondsOf(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** The operator's Deno process: the one whose command line runs main.ts against this cluster's kubeconfig. */
function findOperatorPid(kubeconfigPath: string): number {
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    let command: string[];
    try {
      command = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`).split("\0");
    } catch {
      continue;
    }
    if (
      command[0] === Deno.execPath() && command.some((arg) => arg.endsWith("main.ts")) &&
      command.includes(kubeconfigPath)
    ) {
      return Number(entry.name);
    }
  }
  throw new Error(`No operator process for ${kubeconfigPath}`);
}

/** Samples a process's resident memory every 500 ms for `ms`; returns MiB samples. */
async function sampleResident(pid: number, ms: number): Promise<number[]> {
  const samples: number[] = [];
  for (const end = Date.now() + ms; Date.now() < end;) {
    samples.push(residentBytesOf(pid) / MiB);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  return samples;
}

const results: Record<string, unknown> = { machine: { cores: navigator.hardwareConcurrency, deno: Deno.version.deno } };
const rows: [string, string][] = [];
const tmp = await Deno.makeTempDir({ prefix: "gro-bench-memory-" });
try {
  // 1. Module loading.
  const kubeconfig = await sampleKubeconfig(tmp);
  const bare: number[] = [];
  const loaded: number[] = [];
  for (let run = 0; run < runs; run++) {
    bare.push((await probe("bare")).rssMiB);
    loaded.push((await probe("operator", kubeconfig)).rssMiB);
  }
  results.moduleLoading = {
    runs,
    bareDenoMiB: { median: median(bare), samples: bare },
    operatorModulesMiB: { median: median(loaded), samples: loaded },
  };
  rows.push(["Deno alone (RSS, median of " + runs + ")", `${median(bare).toFixed(1)} MiB`]);
  rows.push(["operator modules + clients loaded (RSS, median)", `${median(loaded).toFixed(1)} MiB`]);

  if (!flags["no-cluster"]) await measureOperator();
} finally {
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
}

const width = Math.max(...rows.map(([what]) => what.length));
say("");
say(`${"what".padEnd(width)} | figure`);
say(`${"-".repeat(width)} | ------`);
for (const [what, figure] of rows) say(`${what.padEnd(width)} | ${figure}`);
await Deno.mkdir(dirname(flags.out), { recursive: true });
await Deno.writeTextFile(flags.out, JSON.stringify(results, null, 2) + "\n");
say(`\nWritten to ${flags.out}`);
Deno.exit(0);

async function measureOperator(): Promise<void> {
  const env = await startEnvironment();
  let operator: OperatorProcess | undefined;
  try {
    const { gitea, core, custom, batch } = env;
    const namespace = "bench-memory";
    await core.createNamespace({ body: { metadata: { name: namespace } } });
    await core.createNamespacedSecret({
      namespace,
      body: { metadata: { name: "tokens" }, stringData: { api: gitea.adminToken } },
    });
    const giteaURL = gitea.url.replace(/\/$/, "");
    const groups: { name: string; spec: Record<string, unknown> }[] = [];
    for (const org of ["alpha", "beta"]) {
      await gitea.createOrg(org);
      groups.push({ name: `${org}-org`, spec: { scope: "org", org } });
      for (let n = 1; n <= 10; n++) {
        await gitea.createRepo(org, `repo${n}`);
        groups.push({ name: `${org}-repo${n}`, spec: { scope: "repo", org, repo: `repo${n}` } });
      }
    }
    const created = [];
    for (const group of groups) {
      created.push(
        await createRunnerGroup(custom, namespace, group.name, {
          ...group.spec,
          giteaURL,
          labels: [`${group.name}-linux`],
          maxActiveRunners: 10,
          authToken: { name: "tokens", key: "api" },
        }),
      );
    }

    // The cached Jobs belong to one group, so that its status says when the operator has seen them all.
    const owner = created[1];
    const spec = parseRunnerGroupSpec(owner.spec);
    if (!spec.success) throw new Error(`The bench group's spec is invalid: ${spec.error.message}`);
    const labels = effectiveRunnerLabels(spec.data.labels ?? [], spec.data.defaultLabels ?? true);
    const runnerJob = (id: number): V1Job => {
      const job = buildRunnerJob({
        group: { name: owner.metadata.name, namespace, uid: owner.metadata.uid, spec: spec.data },
        forge: forgeKey(giteaURL),
        labels,
        for: {
          job: {
            id,
            runId: id,
            name: `build (${id})`,
            runsOn: [`${owner.metadata.name}-linux`],
            owner: "alpha",
            repo: "repo1",
            createdAt: new Date().toISOString(),
            htmlUrl: `${giteaURL}/alpha/repo1/actions/runs/${id}/jobs/0`,
          },
          attempt: 0,
        },
        defaultImage: defaultRunnerImage,
        registrationToken: { name: "tokens", key: "registration" },
      });
      // No pods: only the Job objects are measured.
      job.spec!.suspend = true;
      return job;
    };
    const activeRunnersAre = (count: number): Promise<boolean> =>
      eventually(`the operator to count ${count} runner Jobs`, async () => {
        const status = (await getRunnerGroup(custom, namespace, owner.metadata.name)).status;
        return status?.activeRunners === count;
      }, { timeoutMs: 300_000, detail: () => operator?.logTail() ?? "" });
    const settleAndSample = async (pid: number): Promise<number> => {
      await new Promise((resolve) => setTimeout(resolve, 20_000));
      return median(await sampleResident(pid, 15_000));
    };

    const idle: number[] = [];
    const stepsByRun: number[][] = [];
    const growth: number[] = [];
    const cpu: number[] = [];
    let nextId = 1_000_000;
    for (let run = 1; run <= operatorRuns; run++) {
      operator = await startOperator({
        kubeconfigPath: env.cluster.kubeconfigPath,
        dir: env.dir,
        name: `operator-memory-${run}`,
        // Runner Jobs made here run no job: they must not be removed as idle while being measured (a run takes minutes).
        args: ["--log-level", "info", "--idle-runner-grace", "3600s"],
      });
      const port = await operator.port();
      await eventually("the operator ready", async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).ok, {
        timeoutMs: 60_000,
      });
      if (run === 1) {
        await eventually("every group polled once", async () => {
          for (const group of groups) {
            const status = (await getRunnerGroup(custom, namespace, group.name)).status;
            if (!status?.conditions?.some((c) => c.type === "ForgeReachable" && c.status === "True")) return false;
          }
          return true;
        }, { timeoutMs: 180_000, detail: () => operator!.logTail() });
      }
      const pid = findOperatorPid(env.cluster.kubeconfigPath);
      idle.push(await settleAndSample(pid));
      const steps: number[] = [];
      for (let step = 1; step <= stepCount; step++) {
        const ids = Array.from({ length: jobsPerStep }, () => nextId++);
        for (let i = 0; i < ids.length; i += 20) {
          await Promise.all(
            ids.slice(i, i + 20).map((id) => batch.createNamespacedJob({ namespace, body: runnerJob(id) })),
          );
        }
        await activeRunnersAre(step * jobsPerStep);
        steps.push(await settleAndSample(pid));
      }
      stepsByRun.push(steps);
      growth.push(((steps.at(-1)! - idle.at(-1)!) / (stepCount * jobsPerStep)) * 1000);
      cpu.push(cpuSecondsOf(pid));
      say(
        `run ${run}: idle ${idle.at(-1)!.toFixed(1)} MiB, ` +
          steps.map((mib, index) => `${(index + 1) * jobsPerStep} Jobs ${mib.toFixed(1)} MiB`).join(", "),
      );

      if (run === operatorRuns) {
        // Per object, from what the API server returned for these Jobs.
        const listPath = join(tmp, "jobs.json");
        const list = await fetchRawList(env.cluster.kubeconfigPath, `/apis/batch/v1/namespaces/${namespace}/jobs`);
        await Deno.writeTextFile(listPath, list);
        results.perObject = await probe("objects", listPath, String(jobsPerStep));
      }
      await batch.deleteCollectionNamespacedJob({ namespace, propagationPolicy: "Background" });
      await activeRunnersAre(0);
      await operator.stop("SIGTERM");
      operator = undefined;
    }

    rows.push([`operator idle, ${groups.length} groups (RSS, median of ${operatorRuns} runs)`, mib(median(idle))]);
    for (let step = 1; step <= stepCount; step++) {
      const atStep = stepsByRun.map((steps) => steps[step - 1]);
      rows.push([`operator with ${step * jobsPerStep} cached runner Jobs (RSS, median)`, mib(median(atStep))]);
    }
    rows.push(["growth per 1,000 cached runner Jobs (median)", mib(median(growth))]);
    rows.push(["operator CPU seconds per run (median)", `${median(cpu).toFixed(1)} s`]);
    const objects = results.perObject as Record<string, number | undefined>;
    const kib = (bytes: number | undefined): string => `${((bytes ?? NaN) / 1024).toFixed(1)} KiB`;
    rows.push(["runner Job as JSON from the API server", kib(objects.jsonBytes)]);
    rows.push(["runner Job in the heap, as returned", kib(objects.heapBytesRaw)]);
    if (objects.heapBytesWithoutManagedFields !== undefined) {
      rows.push(["runner Job in the heap, without managedFields", kib(objects.heapBytesWithoutManagedFields)]);
    }
    if (objects.heapBytesPruned !== undefined) {
      rows.push(["runner Job in the heap, as the informer keeps it", kib(objects.heapBytesPruned)]);
    }
    results.operator = {
      groups: groups.length,
      runs: operatorRuns,
      idleMiB: { median: median(idle), samples: idle },
      cachedJobsMiB: stepsByRun.map((steps) =>
        steps.map((value, index) => ({ jobs: (index + 1) * jobsPerStep, value }))
      ),
      growthPerThousandJobsMiB: { median: median(growth), samples: growth },
      cpuSecondsPerRun: { median: median(cpu), samples: cpu },
    };
  } finally {
    if (operator?.running()) await operator.stop("SIGTERM");
    await env.dispose();
  }
}

/** The API server's own JSON for a list, read with the kubeconfig's client certificate (independent of src/kube). */
async function fetchRawList(kubeconfigPath: string, path: string): Promise<string> {
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(kubeconfigPath);
  const options: { ca?: string | Uint8Array; cert?: string | Uint8Array; key?: string | Uint8Array } = {};
  await kubeConfig.applyToHTTPSOptions(options as Parameters<KubeConfig["applyToHTTPSOptions"]>[0]);
  const text = (value: string | Uint8Array | undefined): string =>
    typeof value === "string" ? value : new TextDecoder().decode(value);
  const client = Deno.createHttpClient({
    caCerts: [text(options.ca)],
    cert: text(options.cert),
    key: text(options.key),
  });
  try {
    const response = await fetch(`${kubeConfig.getCurrentCluster()!.server}${path}`, { client });
    if (!response.ok) throw new Error(`GET ${path} answered ${response.status}`);
    return await response.text();
  } finally {
    client.close();
  }
}
