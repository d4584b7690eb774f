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
import {
  ApiException,
  CoreV1Api,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type V1Container,
  type V1Pod,
} from "@kubernetes/client-node";
import { request as httpsRequest, type RequestOptions } from "node:https";
import { dirname, join } from "node:path";
import { type LoggedProcess, startLoggedProcess } from "./cluster.ts";
import { tail } from "./process.ts";
import { resolveRunnerLaunch, type RunnerLaunch } from "./pod_launch.ts";

/** The label the operator puts on every runner pod; pods without it are not ours to run. */
export const managedByLabel = "app.kubernetes.io/managed-by";
export const managedByValue = "gitea-runner-operator";
/** The container in a runner pod whose environment configures the runner. */
export const runnerContainerName = "runner";

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

/** A container configuration the stand-in cannot build, reported as the kubelet's CreateContainerConfigError. */
export class ContainerConfigError extends Error {
  override name = "ContainerConfigError";
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
  let watchRestarts = 0;
  let lastSyncError: unknown;
  const wakeSleepers = new Set<() => void>();
  const sleep = (delayMs: number): Promise<void> =>
    new Promise<void>((resolve) => {
      const wake = (): void => {
        wakeSleepers.delete(wake);
        resolve();
      };
      wakeSleepers.add(wake);
      later(delayMs, wake);
    });
  let endWatch: (() => void) | undefined;

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

  const relist = async (): Promise<string> => {
    const list = await core.listPodForAllNamespaces({ fieldSelector });
    const seen = new Set<string>();
    for (const pod of list.items) {
      const uid = pod.metadata?.uid;
      if (!uid) continue;
      seen.add(uid);
      latest.set(uid, pod);
    }
    // Deletions that happened while no watch was open.
    for (const uid of [...latest.keys(), ...records.keys()]) if (!seen.has(uid)) latest.set(uid, undefined);
    for (const uid of new Set([...latest.keys(), ...records.keys()])) enqueue(uid);
    return list.metadata?.resourceVersion ?? "";
  };

  /**
   * One watch from `resourceVersion` until the server ends it, it fails, it goes silent or `stop()` is called.
   */
  const watchOnce = (resourceVersion: string): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      let cancel: (() => void) | undefined;
      let settled = false;
      let watchdog: ReturnType<typeof setTimeout> | undefined;
      const end = (error?: unknown): void => {
        if (settled) return;
        settled = true;
        clearTimeout(watchdog);
        endWatch = undefined;
        cancel?.();
        if (error) reject(error);
        else resolve();
      };
      const feedWatchdog = (): void => {
        clearTimeout(watchdog);
        watchdog = setTimeout(() => end(new Error("The pod watch went silent")), watchIdleMs);
      };
      endWatch = (): void => end();
      feedWatchdog();
      const onEvent = ({ type, object }: WatchEvent): void => {
        feedWatchdog();
        if (type === "ERROR") {
          end(new Error(`The pod watch failed: ${object.message ?? "unknown error"} (code ${object.code})`));
          return;
        }
        const uid = object.metadata?.uid;
        if (type === "BOOKMARK" || !uid) return;
        latest.set(uid, type === "DELETED" ? undefined : object);
        enqueue(uid);
      };
      // The server ends the watch after timeoutSeconds; the loop then relists, which doubles as a periodic resync.
      const query = new URLSearchParams({
        watch: "true",
        fieldSelector,
        resourceVersion,
        allowWatchBookmarks: "true",
        timeoutSeconds: String(watchTimeoutSeconds),
      });
      streamWatch(options.kubeConfig, `/api/v1/pods?${query}`, onEvent).then((watch) => {
        cancel = watch.cancel;
        if (settled) watch.cancel();
        return watch.ended;
      }).then(() => end(), end);
    });

  // The client's Watch stops for good on any error; this loop restarts it (relist, then watch) with backoff.
  let firstList: (() => void) | undefined;
  const firstListDone = new Promise<void>((resolve) => firstList = resolve);
  const watchLoop = (async (): Promise<void> => {
    let failures = 0;
    while (!stopped) {
      try {
        const resourceVersion = await relist();
        firstList?.();
        failures = 0;
        await watchOnce(resourceVersion);
      } catch {
        if (stopped) break;
        failures++;
        watchRestarts++;
        const delayMs = Math.min(200 * 2 ** failures, 5_000) * (0.5 + Math.random());
        await sleep(delayMs);
      }
    }
  })();

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    firstList?.();
    endWatch?.();
    for (const timer of timers) clearTimeout(timer);
    timers.clear();
    for (const wake of [...wakeSleepers]) wake();
    await Promise.allSettled([...records.values()].map((pod) => pod.process?.stop(graceMs)));
    await watchLoop;
    await Promise.allSettled([...inFlight]);
    if (ownsDir) await Deno.remove(dir, { recursive: true }).catch(() => {});
  };

  await firstListDone;
  return {
    dir,
    started,
    observation: (namespace, name) => started.findLast((pod) => pod.namespace === namespace && pod.name === name),
    ignoredPods,
    configErrors,
    get watchRestarts(): number {
      return watchRestarts;
    },
    get lastSyncError(): unknown {
      return lastSyncError;
    },
    stop,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Watch

interface WatchEvent {
  type: string;
  object: V1Pod & { code?: number; message?: string };
}

/**
 * Opens a watch stream over node:https (HTTP/1.1, no pooling). Not the client's `Watch`: under Deno 2.9.6 its undici
 * stream never reports a connection that kube-apiserver dropped (nor its own abort), so a watch would hang silently
 * across an apiserver restart. Resolves once the response has started; `ended` settles when the stream does.
 */
async function streamWatch(
  kubeConfig: KubeConfig,
  path: string,
  onEvent: (event: WatchEvent) => void,
): Promise<{ cancel: () => void; ended: Promise<void> }> {
  const server = kubeConfig.getCurrentCluster()?.server;
  if (!server) throw new Error("Cannot watch pods: the kubeconfig has no current cluster");
  const requestOptions: RequestOptions = { agent: false, headers: { Accept: "application/json" } };
  await kubeConfig.applyToHTTPSOptions(requestOptions);
  return await new Promise((resolveStarted, rejectStarted) => {
    const request = httpsRequest(`${server}${path}`, requestOptions, (response) => {
      if (response.statusCode !== 200) {
        response.resume();
        rejectStarted(new Error(`Cannot watch pods: HTTP ${response.statusCode} for ${path}`));
        return;
      }
      response.setEncoding("utf8");
      const ended = new Promise<void>((resolve, reject) => {
        let buffered = "";
        response.on("data", (chunk: string) => {
          buffered += chunk;
          let newline: number;
          while ((newline = buffered.indexOf("\n")) >= 0) {
            const line = buffered.slice(0, newline).trim();
            buffered = buffered.slice(newline + 1);
            if (line === "") continue;
            try {
              onEvent(JSON.parse(line) as WatchEvent);
            } catch (error) {
              reject(error);
              request.destroy();
            }
          }
        });
        response.on("error", reject);
        response.on("end", () => resolve());
        response.on("close", () => reject(new Error("The pod watch connection closed")));
      });
      resolveStarted({ cancel: () => request.destroy(), ended });
    });
    request.on("error", rejectStarted);
    request.end();
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Environment

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

async function readOrUndefined<T>(read: () => Promise<T>): Promise<T | undefined> {
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

function isNotFound(error: unknown): boolean {
  return error instanceof ApiException && error.code === 404;
}

function isConflict(error: unknown): boolean {
  return error instanceof ApiException && error.code === 409;
}

// ---------------------------------------------------------------------------------------------------------------
// Pod status, as a kubelet reports it

const hostIp = "127.0.0.1";

function condition(type: string, status: boolean, reason?: string): Record<string, unknown> {
  return { type, status: status ? "True" : "False", lastTransitionTime: new Date().toISOString(), reason };
}

/** The pod conditions a kubelet owns (Kubernetes v1.35 pkg/kubelet/types/pod_status.go PodConditionsByKubelet). */
const kubeletConditions = new Set([
  "PodScheduled",
  "Ready",
  "Initialized",
  "ContainersReady",
  "PodResizeInProgress",
  "PodResizePending",
  "PodReadyToStartContainers",
]);

/**
 * The kubelet's conditions followed by those others set, such as `DisruptionTarget` (the Eviction API, the pod
 * garbage collector): a kubelet keeps them (generateAPIPodStatus in v1.35 pkg/kubelet/kubelet_pods.go), and the
 * status is written with a merge patch, which replaces the whole list.
 */
function withOthersConditions(pod: V1Pod, own: Record<string, unknown>[]): unknown[] {
  return [...own, ...(pod.status?.conditions ?? []).filter((c) => !kubeletConditions.has(c.type))];
}

function addresses(pod: V1Pod): Record<string, unknown> {
  return {
    hostIP: hostIp,
    hostIPs: [{ ip: hostIp }],
    podIP: hostIp,
    podIPs: [{ ip: hostIp }],
    startTime: pod.status?.startTime ?? new Date().toISOString(),
  };
}

function containers(pod: V1Pod): V1Container[] {
  return pod.spec?.containers ?? [];
}

function containerId(record: PodRecord, container: V1Container): string {
  return `harness://${record.uid}/${container.name}`;
}

function pendingStatus(pod: V1Pod, message: string): Record<string, unknown> {
  return {
    phase: "Pending",
    ...addresses(pod),
    conditions: withOthersConditions(pod, [
      condition("PodScheduled", true),
      condition("PodReadyToStartContainers", true),
      condition("Initialized", true),
      condition("ContainersReady", false, "ContainersNotReady"),
      condition("Ready", false, "ContainersNotReady"),
    ]),
    containerStatuses: containers(pod).map((container) => ({
      name: container.name,
      image: container.image ?? "",
      imageID: "",
      ready: false,
      started: false,
      restartCount: 0,
      state: {
        waiting: container.name === runnerContainerName
          ? { reason: "CreateContainerConfigError", message }
          : { reason: "ContainerCreating" },
      },
    })),
  };
}

function runningStatus(pod: V1Pod, record: PodRecord): Record<string, unknown> {
  const startedAt = (record.observation?.startedAt ?? new Date()).toISOString();
  return {
    phase: "Running",
    ...addresses(pod),
    conditions: withOthersConditions(pod, [
      condition("PodScheduled", true),
      condition("PodReadyToStartContainers", true),
      condition("Initialized", true),
      condition("ContainersReady", true),
      condition("Ready", true),
    ]),
    containerStatuses: containers(pod).map((container) => ({
      name: container.name,
      image: container.image ?? "",
      imageID: "",
      containerID: containerId(record, container),
      ready: true,
      started: true,
      restartCount: 0,
      state: { running: { startedAt } },
    })),
  };
}

function terminalStatus(pod: V1Pod, record: PodRecord): Record<string, unknown> {
  const observation = record.observation;
  const exitCode = observation?.exitCode ?? 137;
  const startedAt = (observation?.startedAt ?? new Date()).toISOString();
  const finishedAt = (observation?.finishedAt ?? new Date()).toISOString();
  return {
    phase: exitCode === 0 ? "Succeeded" : "Failed",
    ...addresses(pod),
    conditions: withOthersConditions(pod, [
      condition("PodScheduled", true),
      condition("PodReadyToStartContainers", false),
      condition("Initialized", true, "PodCompleted"),
      condition("ContainersReady", false, "PodCompleted"),
      condition("Ready", false, "PodCompleted"),
    ]),
    containerStatuses: containers(pod).map((container) => {
      // Only the runner really ran; the other containers are reported as having finished cleanly with it.
      const code = container.name === runnerContainerName ? exitCode : 0;
      return {
        name: container.name,
        image: container.image ?? "",
        imageID: "",
        containerID: containerId(record, container),
        ready: false,
        started: false,
        restartCount: 0,
        state: {
          terminated: {
            exitCode: code,
            reason: code === 0 ? "Completed" : "Error",
            startedAt,
            finishedAt,
            containerID: containerId(record, container),
          },
        },
      };
    }),
  };
}

/** A deleted pod whose runner never started: Failed, its containers as they were (never initialized). */
function unstartedTerminalStatus(pod: V1Pod): Record<string, unknown> {
  return {
    phase: "Failed",
    ...addresses(pod),
    conditions: withOthersConditions(pod, [
      condition("PodScheduled", true),
      condition("PodReadyToStartContainers", false),
      condition("Initialized", true),
      condition("ContainersReady", false, "PodCompleted"),
      condition("Ready", false, "PodCompleted"),
    ]),
  };
}
