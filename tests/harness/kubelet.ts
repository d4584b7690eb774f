/**
 * A stand-in kubelet for runner pods only. The test cluster has no container runtime, so this watches the pods bound
 * to the fake Node, and for each runner pod the operator created it runs a local runner binary with the pod's
 * resolved environment and reports the pod's lifecycle through `pods/status`, like a kubelet would: Running while the
 * process lives, then Succeeded or Failed with the exit code, so the real Job controller completes or fails the Job.
 *
 * Every other pod on the Node is left alone (it stays Pending, as it would on a node whose runtime cannot pull it).
 *
 * The sync is level-triggered: watch events only record the pod's latest state and enqueue its uid; `syncPod` reads
 * that state and the local process and does the one next thing (start, report, kill, confirm deletion).
 */
import { CoreV1Api, type KubeConfig, PatchStrategy, setHeaderOptions, type V1Pod } from "@kubernetes/client-node";
import { dirname, join } from "node:path";
import { type LoggedProcess, startLoggedProcess } from "./logged_process.ts";
import { tail } from "./process.ts";
import { resolveRunnerLaunch, type RunnerLaunch } from "./pod_launch.ts";
import {
  ContainerConfigError,
  isConflict,
  isNotFound,
  readOrUndefined,
  resolveRunnerEnv,
  runnerContainerName,
} from "./pod_env.ts";
import { pendingStatus, runningStatus, terminalStatus, unstartedTerminalStatus } from "./pod_status.ts";
import { watchPods } from "./pod_watch.ts";

/** The label the operator puts on every runner pod; pods without it are not ours to run. */
export const managedByLabel = "app.kubernetes.io/managed-by";
export const managedByValue = "gitea-runner-operator";

/** Pod annotation: seconds the stand-in kubelet keeps the pod Pending before it starts the runner. */
export const startDelayAnnotation = "test.gitea-runner-operator/start-delay-seconds";
/**
 * Pod annotation: seconds the stand-in kubelet keeps the pod Running after its runner exited, like a pod whose end takes
 * time (a sidecar, a slow shutdown or volume unmount), before it reports the pod Succeeded or Failed.
 */
export const endDelayAnnotation = "test.gitea-runner-operator/end-delay-seconds";

export interface RunnerKubeletOptions {
  kubeConfig: KubeConfig;
  /** The executable started for each runner pod, with the `runner` container's resolved environment. */
  runnerBinary: string;
  /** Arguments for {@linkcode runnerBinary}; the pod's own command and args name an image's entrypoint. */
  runnerArgs?: string[];
  /** The fake Node's name; only pods bound to it are considered. */
  nodeName: string;
  /** Variables every runner sees in addition to the pod's (`PATH` is passed through by default). */
  extraEnv?: Record<string, string>;
  /** How long a runner gets between SIGTERM and SIGKILL when its pod is deleted. Default 3 s. */
  terminationGraceMs?: number;
  /** Where per-pod logs and working folders go. Default: a new temporary folder, removed by `stop()`. */
  dir?: string;
  /** Copy each runner's output to stderr (prefixed with the pod name) as well as to its log file. */
  echoOutput?: boolean;
  /** How long the apiserver keeps one pod watch open before the stand-in relists and watches again. Default 20 s. */
  watchTimeoutSeconds?: number;
  /** How long a watch may go without any event before it is taken as dead and restarted. Default: 15 s more than
   * {@linkcode watchTimeoutSeconds}. */
  watchIdleMs?: number;
}

/** What the stand-in did with one runner pod; the fields fill in as the pod progresses. */
export interface RunnerPodObservation {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  /** The pod's `gitea.bpg.pw/runnergroup-name` and `gitea.bpg.pw/job-id` labels. */
  readonly runnerGroup?: string;
  readonly forgeJobId?: string;
  /** Names (not values) of the variables the runner was started with. */
  readonly envNames: readonly string[];
  /** `GITEA_RUNNER_LABELS` after mapping every label to the `host` schema. */
  readonly runnerLabels?: string;
  readonly pid: number;
  /** The runner's working directory (its `HOME` too): files it writes land here. */
  readonly workDir: string;
  readonly logPath: string;
  readonly startedAt: Date;
  /** Set once the process has exited. A process ended by a signal reports 128 + the signal number. */
  exitCode?: number;
  finishedAt?: Date;
  /** True when the process was stopped because its pod was deleted. */
  killedOnDeletion: boolean;
}

export interface RunnerKubelet {
  /** Per-pod logs and working folders. */
  readonly dir: string;
  /** Every runner process started, in start order. */
  readonly started: readonly RunnerPodObservation[];
  /** The last observation for a pod name (pod names are unique per namespace at any one time). */
  observation(namespace: string, name: string): RunnerPodObservation | undefined;
  /** `namespace/name` of pods on the Node that are not runner pods, which the stand-in leaves Pending. */
  readonly ignoredPods: ReadonlySet<string>;
  /** `namespace/name` -> the last container configuration error (e.g. a missing Secret key) reported for a pod. */
  readonly configErrors: ReadonlyMap<string, string>;
  /** How many times the pod watch ended with an error and was restarted. */
  readonly watchRestarts: number;
  /** The last error a pod sync failed with (it is retried); for diagnosing a test that times out. */
  readonly lastSyncError: unknown;
  /** Stops watching and kills every runner process (SIGTERM, then SIGKILL). */
  stop(): Promise<void>;
}

/** The last `lines` lines of the logs of the `count` runners started last, for the detail of a failed wait. */
export function recentRunnerLogs(kubelet: Pick<RunnerKubelet, "started">, count = 3, lines = 10): string {
  return kubelet.started.slice(-count)
    .map((runner) => `--- runner ${runner.namespace}/${runner.name} ---\n${tail(runner.logPath, lines)}`)
    .join("\n");
}

/** Maps runner labels to the host schema: `ubuntu-latest:docker://node:20` -> `ubuntu-latest:host`. */
export function toHostLabels(labels: string): string {
  return labels.split(",").map((label) => label.trim()).filter((label) => label !== "").map((label) => {
    const name = label.split(":", 1)[0];
    return `${name}:host`;
  }).join(",");
}

interface PodRecord {
  readonly uid: string;
  readonly namespace: string;
  readonly name: string;
  process?: LoggedProcess;
  observation?: RunnerPodObservation;
  runningReported: boolean;
  terminalReported: boolean;
  configErrorReported?: string;
}

const fieldManager = "harness-kubelet";
const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

/** Starts watching the Node's pods; resolves once the first list has been processed. */
export async function startRunnerKubelet(options: RunnerKubeletOptions): Promise<RunnerKubelet> {
  const core = options.kubeConfig.makeApiClient(CoreV1Api);
  const ownsDir = options.dir === undefined;
  const dir = options.dir ?? await Deno.makeTempDir({ prefix: "gro-kubelet-" });
  const graceMs = options.terminationGraceMs ?? 3_000;
  const fieldSelector = `spec.nodeName=${options.nodeName}`;
  const watchTimeoutSeconds = options.watchTimeoutSeconds ?? 20;
  const watchIdleMs = options.watchIdleMs ?? (watchTimeoutSeconds + 15) * 1000;

  const latest = new Map<string, V1Pod | undefined>();
  const records = new Map<string, PodRecord>();
  const started: RunnerPodObservation[] = [];
  const ignoredPods = new Set<string>();
  const configErrors = new Map<string, string>();
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const busy = new Set<string>();
  const dirty = new Set<string>();
  const inFlight = new Set<Promise<void>>();
  let stopped = false;
  let lastSyncError: unknown;

  const later = (delayMs: number, action: () => void): void => {
    const timer = setTimeout(() => {
      timers.delete(timer);
      if (!stopped) action();
    }, delayMs);
    timers.add(timer);
  };

  // A tiny work queue: one sync per uid at a time; an event during a sync makes it run once more.
  const enqueue = (uid: string): void => {
    if (stopped) return;
    if (busy.has(uid)) {
      dirty.add(uid);
      return;
    }
    busy.add(uid);
    const run = (async (): Promise<void> => {
      let failures = 0;
      do {
        dirty.delete(uid);
        try {
          await syncPod(uid);
          failures = 0;
        } catch (error) {
          if (stopped) break;
          failures++;
          // Retried while the apiserver is away (e.g. during a restart); the next event or timer tries again.
          const delayMs = Math.min(100 * 2 ** failures, 3_000);
          later(delayMs * (0.5 + Math.random()), () => enqueue(uid));
          lastSyncError = error;
          break;
        }
      } while (dirty.has(uid) && !stopped);
      busy.delete(uid);
    })();
    inFlight.add(run);
    run.finally(() => inFlight.delete(run));
  };

  const writeStatus = async (pod: PodRecord, status: Record<string, unknown>): Promise<boolean> => {
    try {
      await core.patchNamespacedPodStatus(
        { name: pod.name, namespace: pod.namespace, body: { status }, fieldManager },
        mergePatch,
      );
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  };

  const syncPod = async (uid: string): Promise<void> => {
    let pod = latest.get(uid);
    const existing = records.get(uid);
    if (pod === undefined && existing) {
      // A pod missing from a relist or reported DELETED is only taken as gone once the apiserver confirms it: killing
      // the runner of a pod that still exists (nobody set a deletionTimestamp) would leave it Running forever, since
      // the stand-in forgets a pod it believes gone and so never reports the runner's exit.
      const found = await readOrUndefined(() =>
        core.readNamespacedPod({ name: existing.name, namespace: existing.namespace })
      );
      if (found?.metadata?.uid === uid) {
        pod = latest.get(uid) ?? found;
        latest.set(uid, pod);
      } else pod = latest.get(uid);
    }
    if (pod === undefined) {
      // Gone from the API (forcibly deleted, or deletion confirmed): nothing may keep running for it.
      if (existing?.process && !existing.process.exited) {
        markKilled(existing);
        await existing.process.stop(graceMs);
      }
      records.delete(uid);
      latest.delete(uid);
      return;
    }
    const namespace = pod.metadata?.namespace ?? "default";
    const name = pod.metadata?.name ?? "";
    const key = `${namespace}/${name}`;
    if (pod.metadata?.labels?.[managedByLabel] !== managedByValue) {
      ignoredPods.add(key);
      return;
    }
    const current = existing ?? { uid, namespace, name, runningReported: false, terminalReported: false };
    records.set(uid, current);
    const deleting = pod.metadata?.deletionTimestamp !== undefined;
    const process = current.process;

    if (deleting) {
      if (process) {
        if (!process.exited) markKilled(current);
        // Also waits for the exit code of a runner that has just exited (see below).
        await process.stop(graceMs);
      }
      if (!current.terminalReported && pod.status?.phase !== "Succeeded" && pod.status?.phase !== "Failed") {
        // A failed write is retried like any sync error: the Job controller needs the pod's terminal phase (a Job
        // with a pod failure policy waits for it). A pod that never started ends Failed, as the kubelet's
        // TerminatePod makes every terminated pod terminal (Kubernetes v1.35 pkg/kubelet/status/status_manager.go).
        await writeStatus(current, process ? terminalStatus(pod, current) : unstartedTerminalStatus(pod));
        current.terminalReported = true;
      }
      // What a kubelet does once the containers are gone: confirm the deletion.
      // With a body, the apiserver ignores query options: the grace period must be in the body.
      await core.deleteNamespacedPod({ name, namespace, body: { gracePeriodSeconds: 0, preconditions: { uid } } })
        .catch((error) => {
          if (!isNotFound(error) && !isConflict(error)) throw error;
        });
      return;
    }

    if (!process) {
      if (pod.status?.phase === "Succeeded" || pod.status?.phase === "Failed") return;
      // A pod annotated with a start delay stays Pending that long, like one whose image is still being pulled.
      const delaySeconds = Number(pod.metadata?.annotations?.[startDelayAnnotation] ?? "0");
      const startAt = new Date(pod.metadata?.creationTimestamp ?? 0).getTime() + delaySeconds * 1000;
      if (delaySeconds > 0 && Date.now() < startAt) {
        later(startAt - Date.now(), () => enqueue(uid));
        return;
      }
      let env: Record<string, string>;
      let launch: RunnerLaunch;
      try {
        env = await resolveRunnerEnv(core, pod);
        const container = pod.spec!.containers.find((candidate) => candidate.name === runnerContainerName)!;
        launch = await resolveRunnerLaunch(core, pod, container, env);
      } catch (error) {
        if (!(error instanceof ContainerConfigError)) throw error;
        // Like a kubelet: the pod stays Pending with the reason on the container, and the start is retried.
        configErrors.set(key, error.message);
        if (current.configErrorReported !== error.message) {
          await writeStatus(current, pendingStatus(pod, error.message));
          current.configErrorReported = error.message;
        }
        later(1_000, () => enqueue(uid));
        return;
      }
      configErrors.delete(key);
      startRunner(pod, current, env, launch);
    }

    // The exit code, not `exited`: a process is `exited` as soon as it ends, but its code is recorded only once its
    // output is drained, and a pod event in between would otherwise report a runner that exited 1 as killed (137).
    if (current.observation?.exitCode !== undefined) {
      const endDelaySeconds = Number(pod.metadata?.annotations?.[endDelayAnnotation] ?? "0");
      const endAt = (current.observation.finishedAt?.getTime() ?? 0) + endDelaySeconds * 1000;
      if (!current.terminalReported && endDelaySeconds > 0 && Date.now() < endAt) {
        if (!current.runningReported) {
          await writeStatus(current, runningStatus(pod, current));
          current.runningReported = true;
        }
        later(endAt - Date.now(), () => enqueue(uid));
        return;
      }
      if (!current.terminalReported) {
        await writeStatus(current, terminalStatus(pod, current));
        current.terminalReported = true;
      }
    } else if (!current.runningReported) {
      await writeStatus(current, runningStatus(pod, current));
      current.runningReported = true;
    }
  };

  const markKilled = (pod: PodRecord): void => {
    if (pod.observation) pod.observation.killedOnDeletion = true;
  };

  const startRunner = (pod: V1Pod, current: PodRecord, env: Record<string, string>, launch: RunnerLaunch): void => {
    const slug = `${current.namespace}_${current.name}_${current.uid.slice(0, 8)}`;
    const workDir = join(dir, slug);
    Deno.mkdirSync(workDir, { recursive: true });
    // Secret volumes as files under a root of the pod's own, where the test runner reads `file:` paths.
    const root = join(workDir, "root");
    for (const file of launch.files) {
      Deno.mkdirSync(dirname(join(root, file.path)), { recursive: true });
      Deno.writeTextFileSync(join(root, file.path), file.content);
    }
    const labels = env.GITEA_RUNNER_LABELS === undefined ? undefined : toHostLabels(env.GITEA_RUNNER_LABELS);
    const processEnv: Record<string, string> = {
      PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
      ...options.extraEnv,
      ...env,
      HOME: workDir,
      ...(labels === undefined ? {} : { GITEA_RUNNER_LABELS: labels }),
      ...(env.FORGEJO_RUNNER_LABELS === undefined
        ? {}
        : { FORGEJO_RUNNER_LABELS: toHostLabels(env.FORGEJO_RUNNER_LABELS) }),
      ...(launch.files.length > 0 ? { TEST_RUNNER_ROOT: root } : {}),
    };
    const process = startLoggedProcess({
      name: current.name,
      command: options.runnerBinary,
      // A Forgejo runner is configured by its arguments (forgejo-runner one-job ...), which the test runner takes too.
      args: launch.args?.map((arg, index, all) => all[index - 1] === "--label" ? toHostLabels(arg) : arg) ??
        options.runnerArgs,
      cwd: workDir,
      env: processEnv,
      logPath: join(dir, `${slug}.log`),
      echo: options.echoOutput,
    });
    const observation: RunnerPodObservation = {
      namespace: current.namespace,
      name: current.name,
      uid: current.uid,
      runnerGroup: pod.metadata?.labels?.["gitea.bpg.pw/runnergroup-name"],
      forgeJobId: pod.metadata?.labels?.["gitea.bpg.pw/job-id"],
      envNames: Object.keys(env).sort(),
      runnerLabels: labels,
      pid: process.pid,
      workDir,
      logPath: process.logPath,
      startedAt: new Date(),
      killedOnDeletion: false,
    };
    current.process = process;
    current.observation = observation;
    started.push(observation);
    process.status.then((status) => {
      observation.exitCode = status.code;
      observation.finishedAt = new Date();
      enqueue(current.uid);
    });
  };

  const podWatch = watchPods({
    kubeConfig: options.kubeConfig,
    core,
    fieldSelector,
    timeoutSeconds: watchTimeoutSeconds,
    idleMs: watchIdleMs,
    listed: (pods) => {
      const seen = new Set<string>();
      for (const pod of pods) {
        const uid = pod.metadata?.uid;
        if (!uid) continue;
        seen.add(uid);
        latest.set(uid, pod);
      }
      // Deletions that happened while no watch was open.
      for (const uid of [...latest.keys(), ...records.keys()]) if (!seen.has(uid)) latest.set(uid, undefined);
      for (const uid of new Set([...latest.keys(), ...records.keys()])) enqueue(uid);
    },
    changed: (uid, pod) => {
      latest.set(uid, pod);
      enqueue(uid);
    },
  });

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    const watchStopped = podWatch.stop();
    for (const timer of timers) clearTimeout(timer);
    timers.clear();
    await Promise.allSettled([...records.values()].map((pod) => pod.process?.stop(graceMs)));
    await watchStopped;
    await Promise.allSettled([...inFlight]);
    if (ownsDir) await Deno.remove(dir, { recursive: true }).catch(() => {});
  };

  await podWatch.firstList;
  return {
    dir,
    started,
    observation: (namespace, name) => started.findLast((pod) => pod.namespace === namespace && pod.name === name),
    ignoredPods,
    configErrors,
    get watchRestarts(): number {
      return podWatch.restarts;
    },
    get lastSyncError(): unknown {
      return lastSyncError;
    },
    stop,
  };
}
