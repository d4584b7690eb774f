/**
 * A real Kubernetes control plane for integration tests: etcd, kube-apiserver, kube-controller-manager (only the
 * controllers our Jobs need) and kube-scheduler, run as local processes on loopback ports, plus one fake Node the
 * scheduler can bind pods to. There is no kubelet: pods are only "run" by the stand-in in `kubelet.ts`.
 *
 * ```ts
 * const cluster = await startCluster();
 * try {
 *   const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
 *   // ...
 * } finally {
 *   await cluster.dispose();
 * }
 * ```
 */
import {
  CoreV1Api,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type V1Node,
  type V1Taint,
} from "@kubernetes/client-node";
import { request as httpsRequest } from "node:https";
import { join } from "node:path";
import { freeLoopbackPorts, tail } from "./process.ts";
import { ensureTools, type ToolPaths } from "./tools.ts";

/** Binaries the control plane needs; a subset of {@linkcode ToolPaths}. */
export type ControlPlaneBinaries = Pick<
  ToolPaths,
  "etcd" | "kubeApiserver" | "kubeControllerManager" | "kubeScheduler"
>;

export interface ClusterOptions {
  /** Binary paths; defaults to {@linkcode ensureTools}. */
  binaries?: ControlPlaneBinaries;
  /** Name of the fake Node pods are scheduled to. Default `harness-node`. */
  nodeName?: string;
  /** How long to wait for the whole control plane to become usable. Default 90 s. */
  startupTimeoutMs?: number;
  /**
   * Serve HTTP/2. Off by default: @kubernetes/client-node's undici dispatcher negotiates h2, and Deno 2.9.6's
   * node:http2 (nghttp2) crashes the whole process (segfault, or `find_stream_on_goaway_func` assertion) when
   * kube-apiserver shuts down or restarts under an open h2 connection. Turn on to reproduce that.
   */
  http2?: boolean;
  /** Copies every process's output to this process's stderr as well as to its log file. */
  echoOutput?: boolean;
  /** More kube-apiserver flags, appended last (e.g. an audit policy for the benchmark). */
  apiServerArgs?: string[];
}

export interface ClusterHarness {
  /** The temporary folder holding certificates, kubeconfigs, etcd data and the `*.log` files. */
  readonly dir: string;
  /** `https://127.0.0.1:<port>`. */
  readonly server: string;
  /** Admin kubeconfig (client certificate in group `system:masters`). */
  readonly kubeconfigPath: string;
  /** A client configuration loaded from {@linkcode kubeconfigPath}. */
  readonly kubeConfig: KubeConfig;
  /** The fake Node's name. */
  readonly nodeName: string;
  /** How long {@linkcode startCluster} took, for reports. */
  readonly startupMs: number;
  /** Pids of every control-plane process currently running, by component name. */
  pids(): Record<string, number>;
  /** Stops kube-apiserver and starts it again on the same port and storage; resolves once it is ready again. */
  restartApiServer(): Promise<void>;
  /**
   * Stops kube-controller-manager and starts it again running every harness controller but those in `without` (none:
   * all of them again). A controller left out does nothing until the next restart that includes it; on its return it
   * acts on what exists then, as after a controller-manager failover.
   */
  restartControllerManager(without?: readonly string[]): Promise<void>;
  /**
   * Writes a kubeconfig for a client certificate of user `user` in `groups` (e.g. `system:masters`), issued by the
   * cluster's CA, and returns its path: a client the API server (and its audit log) tells apart from the admin.
   */
  issueKubeconfig(user: string, groups?: string[]): Promise<string>;
  /** Kills every process (SIGTERM, then SIGKILL) and removes {@linkcode dir}. Safe to call twice. */
  dispose(): Promise<void>;
}

const serviceClusterIpRange = "10.0.0.0/24";
const firstServiceIp = "10.0.0.1";
const stopGraceMs = 5_000;

/**
 * Controllers run by kube-controller-manager. Deliberately not `node-lifecycle-controller`: there is no kubelet to
 * renew the fake Node's heartbeat, so it would taint the Node unreachable and evict every pod.
 */
const controllers = [
  "job-controller",
  // Marks the pods of a deleted Node Failed with a DisruptionTarget condition and removes them, as in any cluster.
  "pod-garbage-collector-controller",
  "garbage-collector-controller",
  "ttl-after-finished-controller",
  "serviceaccount-controller",
  "serviceaccount-token-controller",
  "namespace-controller",
  "root-ca-certificate-publisher-controller",
];

/**
 * Admission plugins named explicitly (they add to the apiserver's defaults), so that a test relying on one does not
 * depend on a default; TaintNodesByCondition is disabled (see {@linkcode createFakeNode}).
 */
const admissionPlugins = [
  "NamespaceLifecycle",
  "LimitRanger",
  "ServiceAccount",
  "DefaultTolerationSeconds",
  "Priority",
  "PodSecurity",
  "ResourceQuota",
  "MutatingAdmissionWebhook",
  "ValidatingAdmissionPolicy",
  "ValidatingAdmissionWebhook",
];

/** Starts a control plane and resolves once pods can be created and scheduled. */
export async function startCluster(options: ClusterOptions = {}): Promise<ClusterHarness> {
  const startedAt = performance.now();
  const nodeName = options.nodeName ?? "harness-node";
  const deadline = Date.now() + (options.startupTimeoutMs ?? 90_000);
  const binaries = options.binaries ?? await ensureTools();
  const dir = await Deno.makeTempDir({ prefix: "gro-cluster-" });
  liveDirs.add(dir);
  const processes = new Map<string, LoggedProcess>();
  const echo = options.echoOutput ?? false;
  let disposed = false;

  const dispose = async (): Promise<void> => {
    if (disposed) return;
    disposed = true;
    // Dependents first, so that they do not log a burst of errors about a vanished apiserver.
    const order = ["kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"];
    for (const name of order) await processes.get(name)?.stop(stopGraceMs);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    liveDirs.delete(dir);
  };

  try {
    const pki = await createCertificates(dir);
    const [etcdClientPort, etcdPeerPort, apiserverPort] = freeLoopbackPorts(3);
    const server = `https://127.0.0.1:${apiserverPort}`;
    const kubeconfigPath = join(dir, "admin.kubeconfig");
    await writeKubeconfig(kubeconfigPath, server, pki.ca, pki.admin);
    const controllerManagerKubeconfig = join(dir, "kube-controller-manager.kubeconfig");
    await writeKubeconfig(controllerManagerKubeconfig, server, pki.ca, pki.controllerManager);
    const schedulerKubeconfig = join(dir, "kube-scheduler.kubeconfig");
    await writeKubeconfig(schedulerKubeconfig, server, pki.ca, pki.scheduler);
    const adminTls: TlsFiles = {
      ca: await Deno.readTextFile(pki.ca),
      cert: await Deno.readTextFile(pki.admin.cert),
      key: await Deno.readTextFile(pki.admin.key),
    };

    const start = (name: string, command: string, args: string[]): LoggedProcess => {
      const process = startLoggedProcess({ name, command, args, logPath: join(dir, `${name}.log`), echo });
      processes.set(name, process);
      return process;
    };
    const failure = (what: string, cause?: unknown): Error => {
      const tails = [...processes.values()].map((process) => process.describe()).join("\n");
      return new Error(`Cannot start the test cluster in ${dir}: ${what}\n${tails}`, { cause });
    };

    const etcdUrl = `http://127.0.0.1:${etcdClientPort}`;
    const etcd = start("etcd", binaries.etcd, [
      "--name=harness",
      `--data-dir=${join(dir, "etcd")}`,
      `--listen-client-urls=${etcdUrl}`,
      `--advertise-client-urls=${etcdUrl}`,
      `--listen-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
      `--initial-cluster=harness=http://127.0.0.1:${etcdPeerPort}`,
      // Test data is disposable: trade durability for speed.
      "--unsafe-no-fsync",
      "--quota-backend-bytes=2147483648",
      "--log-level=warn",
    ]);
    await waitUntil("etcd is healthy", deadline, etcd, async () => {
      const response = await fetch(`${etcdUrl}/health`);
      const body = await response.text();
      return response.ok && body.includes('"true"');
    }).catch((error) => {
      throw failure("etcd did not become healthy", error);
    });

    const apiserverArgs = [
      `--etcd-servers=${etcdUrl}`,
      "--bind-address=127.0.0.1",
      "--advertise-address=127.0.0.1",
      `--secure-port=${apiserverPort}`,
      `--cert-dir=${join(dir, "apiserver-certs")}`,
      `--tls-cert-file=${pki.serving.cert}`,
      `--tls-private-key-file=${pki.serving.key}`,
      `--client-ca-file=${pki.ca}`,
      "--authorization-mode=RBAC",
      `--service-account-issuer=https://kubernetes.default.svc.cluster.local`,
      `--service-account-key-file=${pki.serviceAccountPublicKey}`,
      `--service-account-signing-key-file=${pki.serviceAccountPrivateKey}`,
      `--service-cluster-ip-range=${serviceClusterIpRange}`,
      `--enable-admission-plugins=${admissionPlugins.join(",")}`,
      "--disable-admission-plugins=TaintNodesByCondition",
      "--allow-privileged=true",
      // 127.0.0.1 is not a valid Endpoints address; nothing here needs the in-cluster `kubernetes` endpoints.
      "--endpoint-reconciler-type=none",
      // Faster startup: no flow-control bootstrap, no profiling handlers.
      "--enable-priority-and-fairness=false",
      "--profiling=false",
      "--shutdown-delay-duration=0s",
      ...options.http2 ? [] : ["--disable-http2-serving=true"],
      "--v=0",
      ...options.apiServerArgs ?? [],
    ];
    const readyz = (): Promise<boolean> => isReady(`${server}/readyz`, adminTls);
    const startApiServer = async (): Promise<void> => {
      const apiserver = start("kube-apiserver", binaries.kubeApiserver, apiserverArgs);
      await waitUntil("kube-apiserver is ready", deadline, apiserver, readyz);
    };
    await startApiServer().catch((error) => {
      throw failure("kube-apiserver did not become ready", error);
    });

    const startControllerManager = (without: readonly string[]): LoggedProcess =>
      start("kube-controller-manager", binaries.kubeControllerManager, [
        `--kubeconfig=${controllerManagerKubeconfig}`,
        "--leader-elect=false",
        `--controllers=${controllers.filter((controller) => !without.includes(controller)).join(",")}`,
        `--service-account-private-key-file=${pki.serviceAccountPrivateKey}`,
        `--root-ca-file=${pki.ca}`,
        "--use-service-account-credentials=true",
        "--secure-port=0",
        "--v=0",
      ]);
    startControllerManager([]);
    start("kube-scheduler", binaries.kubeScheduler, [
      `--kubeconfig=${schedulerKubeconfig}`,
      "--leader-elect=false",
      "--secure-port=0",
      "--v=0",
    ]);

    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(kubeconfigPath);
    const core = kubeConfig.makeApiClient(CoreV1Api);
    await createFakeNode(core, nodeName).catch((error) => {
      throw failure(`cannot create the fake Node "${nodeName}"`, error);
    });
    const watched = [...processes.values()];
    await waitUntil("the default ServiceAccount exists", deadline, watched, async () => {
      await core.readNamespacedServiceAccount({ name: "default", namespace: "default" });
      return true;
    }).catch((error) => {
      throw failure("the default ServiceAccount was not created", error);
    });
    await waitUntilSchedulable(core, nodeName, deadline, watched).catch((error) => {
      throw failure(`no pod was scheduled to the fake Node "${nodeName}"`, error);
    });

    const harness: ClusterHarness = {
      dir,
      server,
      kubeconfigPath,
      kubeConfig,
      nodeName,
      startupMs: Math.round(performance.now() - startedAt),
      pids: () => Object.fromEntries([...processes].filter(([, p]) => !p.exited).map(([name, p]) => [name, p.pid])),
      restartApiServer: async (): Promise<void> => {
        if (disposed) throw new Error("Cannot restart kube-apiserver: the cluster is disposed");
        await processes.get("kube-apiserver")?.stop(stopGraceMs);
        const restartDeadline = Date.now() + 60_000;
        const apiserver = start("kube-apiserver", binaries.kubeApiserver, apiserverArgs);
        await waitUntil("kube-apiserver is ready after a restart", restartDeadline, apiserver, readyz);
      },
      restartControllerManager: async (without: readonly string[] = []): Promise<void> => {
        if (disposed) throw new Error("Cannot restart kube-controller-manager: the cluster is disposed");
        const unknown = without.filter((controller) => !controllers.includes(controller));
        if (unknown.length > 0) throw new Error(`The harness runs no controller named ${unknown.join(", ")}`);
        await processes.get("kube-controller-manager")?.stop(stopGraceMs);
        startControllerManager(without);
      },
      issueKubeconfig: async (user: string, groups: string[] = []): Promise<string> => {
        const subject = [...groups.map((group) => `/O=${group}`), `/CN=${user}`].join("");
        const pair = await issueCertificate(join(dir, "pki"), pki.ca, `user-${user}`, subject, [
          "extendedKeyUsage=clientAuth",
        ]);
        const path = join(dir, `${user}.kubeconfig`);
        await writeKubeconfig(path, server, pki.ca, pair);
        return path;
      },
      dispose,
    };
    return harness;
  } catch (error) {
    await dispose();
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Fake node

/**
 * Creates a Node that kube-scheduler considers Ready and roomy. Its status goes through the `status` subresource
 * (status is dropped on create). No taints but those given: TaintNodesByCondition admission is disabled because its
 * `not-ready` taint is normally lifted by the node-lifecycle controller, which does not run here. Tests add a second
 * Node with it (and a stand-in kubelet for it) to take a Node away from under a runner.
 */
export async function createFakeNode(
  core: CoreV1Api,
  name: string,
  options: { taints?: V1Taint[] } = {},
): Promise<void> {
  const capacity = { cpu: "64", memory: "256Gi", pods: "500", "ephemeral-storage": "1Ti" };
  const node: V1Node = {
    metadata: {
      name,
      labels: { "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64" },
    },
    spec: options.taints ? { taints: options.taints } : {},
  };
  await core.createNode({ body: node });
  const now = new Date();
  const condition = (type: string, status: string, reason: string): object => ({
    type,
    status,
    reason,
    message: "set by the test harness",
    lastHeartbeatTime: now,
    lastTransitionTime: now,
  });
  const status = {
    status: {
      capacity,
      allocatable: capacity,
      conditions: [
        condition("Ready", "True", "KubeletReady"),
        condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
        condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
        condition("PIDPressure", "False", "KubeletHasSufficientPID"),
      ],
      addresses: [{ type: "InternalIP", address: "127.0.0.1" }, { type: "Hostname", address: name }],
      nodeInfo: {
        architecture: "amd64",
        operatingSystem: "linux",
        kubeletVersion: "v1.35.4",
        kubeProxyVersion: "",
        containerRuntimeVersion: "harness://0",
        kernelVersion: "",
        osImage: "harness",
        bootID: "",
        machineID: "",
        systemUUID: "",
      },
    },
  };
  await core.patchNodeStatus(
    { name, body: status },
    setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
  );
}

/** Proves the scheduler is up and binds to the fake Node by scheduling a throwaway pod. */
async function waitUntilSchedulable(
  core: CoreV1Api,
  nodeName: string,
  deadline: number,
  processes: LoggedProcess[],
): Promise<void> {
  const namespace = "default";
  const name = "harness-schedulable-probe";
  await waitUntil("a probe pod can be created", deadline, processes, async () => {
    await core.createNamespacedPod({
      namespace,
      body: {
        metadata: { name },
        spec: {
          containers: [{ name: "probe", image: "harness.invalid/probe" }],
          // Not a runner pod; a toleration-free pod proves the Node has no blocking taints.
          automountServiceAccountToken: false,
        },
      },
    });
    return true;
  });
  await waitUntil("the probe pod is scheduled", deadline, processes, async () => {
    const pod = await core.readNamespacedPod({ name, namespace });
    return pod.spec?.nodeName === nodeName;
  });
  // An unstarted pod is deleted at once; no kubelet needs to confirm it.
  await core.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 0 });
}

// ---------------------------------------------------------------------------------------------------------------
// Certificates and kubeconfigs

interface KeyPair {
  cert: string;
  key: string;
}

interface Pki {
  ca: string;
  serving: KeyPair;
  admin: KeyPair;
  controllerManager: KeyPair;
  scheduler: KeyPair;
  serviceAccountPrivateKey: string;
  serviceAccountPublicKey: string;
}

/** Every key of the throwaway PKI: new, unencrypted, valid for two days. */
const newKey = ["-newkey", "rsa:2048", "-noenc", "-days", "2"];

/** A throwaway PKI: a CA, RSA keys for TLS, and an ECDSA key that only the Go components read. */
async function createCertificates(dir: string): Promise<Pki> {
  const pki = join(dir, "pki");
  await Deno.mkdir(pki);
  const file = (name: string): string => join(pki, name);
  const ca = file("ca.crt");
  await openssl([
    "req",
    "-x509",
    ...newKey,
    "-keyout",
    file("ca.key"),
    "-out",
    ca,
    "-subj",
    "/CN=harness-ca",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  const issue = (name: string, subject: string, extensions: string[]): Promise<KeyPair> =>
    issueCertificate(pki, ca, name, subject, extensions);
  const client = ["extendedKeyUsage=clientAuth"];
  const serviceAccountPrivateKey = file("service-account.key");
  const serviceAccountPublicKey = file("service-account.pub");
  const [serving, admin, controllerManager, scheduler] = await Promise.all([
    issue("apiserver", "/CN=kube-apiserver", [
      "extendedKeyUsage=serverAuth",
      `subjectAltName=IP:127.0.0.1,DNS:localhost,IP:${firstServiceIp},DNS:kubernetes,DNS:kubernetes.default,` +
      "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local",
    ]),
    issue("admin", "/O=system:masters/CN=harness-admin", client),
    issue("kube-controller-manager", "/CN=system:kube-controller-manager", client),
    issue("kube-scheduler", "/CN=system:kube-scheduler", client),
    openssl([
      "genpkey",
      "-algorithm",
      "EC",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-out",
      serviceAccountPrivateKey,
    ]).then(() => openssl(["pkey", "-in", serviceAccountPrivateKey, "-pubout", "-out", serviceAccountPublicKey])),
  ]);
  return { ca, serving, admin, controllerManager, scheduler, serviceAccountPrivateKey, serviceAccountPublicKey };
}

/** Issues a certificate signed by the CA in `pki` (`ca.key` beside `ca`), as `<name>.crt` and `<name>.key`. */
async function issueCertificate(
  pki: string,
  ca: string,
  name: string,
  subject: string,
  extensions: string[],
): Promise<KeyPair> {
  const pair = { cert: join(pki, `${name}.crt`), key: join(pki, `${name}.key`) };
  await openssl([
    "req",
    "-x509",
    "-CA",
    ca,
    "-CAkey",
    join(pki, "ca.key"),
    ...newKey,
    "-keyout",
    pair.key,
    "-out",
    pair.cert,
    "-subj",
    subject,
    "-addext",
    "basicConstraints=critical,CA:FALSE",
    "-addext",
    "keyUsage=critical,digitalSignature,keyEncipherment",
    ...extensions.flatMap((extension) => ["-addext", extension]),
  ]);
  return pair;
}

async function openssl(args: string[]): Promise<void> {
  const output = await new Deno.Command("openssl", { args, stdin: "null" }).output();
  if (!output.success) {
    const stderr = new TextDecoder().decode(output.stderr).trim();
    throw new Error(`Cannot run "openssl ${args.slice(0, 2).join(" ")}": exit code ${output.code}: ${stderr}`);
  }
}

/** Kubeconfig is YAML, and JSON is YAML: no serializer needed. */
async function writeKubeconfig(path: string, server: string, ca: string, user: KeyPair): Promise<void> {
  const config = {
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "harness", cluster: { server, "certificate-authority": ca } }],
    users: [{ name: "harness", user: { "client-certificate": user.cert, "client-key": user.key } }],
    contexts: [{ name: "harness", context: { cluster: "harness", user: "harness" } }],
    "current-context": "harness",
  };
  await Deno.writeTextFile(path, JSON.stringify(config, null, 2));
}

// ---------------------------------------------------------------------------------------------------------------
// Waiting

interface TlsFiles {
  ca: string;
  cert: string;
  key: string;
}

/**
 * GETs a health endpoint with a client certificate, over one short-lived HTTP/1.1 connection (`agent: false`), so
 * that nothing pooled survives an apiserver restart.
 */
function isReady(url: string, tls: TlsFiles): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const request = httpsRequest(url, { ...tls, agent: false, timeout: 2_000 }, (response) => {
      response.resume();
      response.on("end", () => resolve(response.statusCode === 200));
      response.on("error", reject);
    });
    request.on("timeout", () => request.destroy(new Error(`No answer from ${url} within 2s`)));
    request.on("error", reject);
    request.end();
  });
}

/**
 * Polls `check` until it returns true. Fails early when one of `processes` exits, and at `deadline` with the last
 * error seen, so a startup failure names its cause.
 */
export async function waitUntil(
  what: string,
  deadline: number,
  processes: LoggedProcess | LoggedProcess[],
  check: () => Promise<boolean>,
): Promise<void> {
  const watched = Array.isArray(processes) ? processes : [processes];
  let lastError: unknown;
  let delayMs = 50;
  while (true) {
    const dead = watched.find((process) => process.exited);
    if (dead) throw new Error(`Gave up waiting until ${what}: ${dead.name} exited`);
    try {
      if (await check()) return;
      lastError = undefined;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      const reason = lastError instanceof Error ? `: ${lastError.message}` : "";
      throw new Error(`Timed out waiting until ${what}${reason}`, { cause: lastError });
    }
    await new Promise((resolve) => setTimeout(resolve, delayMs));
    delayMs = Math.min(delayMs * 2, 500);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Processes

export interface LoggedProcessOptions {
  name: string;
  command: string;
  args?: string[];
  logPath: string;
  cwd?: string;
  /** When set, the child sees only these variables. */
  env?: Record<string, string>;
  /** Also copy the output to this process's stderr, each line prefixed with the name. */
  echo?: boolean;
}

/**
 * A child process whose stdout and stderr go to a log file, registered for cleanup if the test process dies. It runs
 * in its own session, so signals reach everything it started (like a container's processes), and its leftovers are
 * killed when it exits.
 */
export interface LoggedProcess {
  readonly name: string;
  readonly pid: number;
  readonly logPath: string;
  readonly exited: boolean;
  /** Resolves when the process has exited and its output is flushed to the log file. */
  readonly status: Promise<Deno.CommandStatus>;
  /** Sends SIGTERM, then SIGKILL after `graceMs`; resolves with the exit status. */
  stop(graceMs: number): Promise<Deno.CommandStatus>;
  /** The name, state and the log's last lines, for error messages. */
  describe(): string;
}

/** How long output may keep flowing after a process exits (from a child that escaped its process group). */
const outputDrainMs = 1_000;

/** Starts a child process that logs to a file. */
export function startLoggedProcess(options: LoggedProcessOptions): LoggedProcess {
  const log = Deno.openSync(options.logPath, { create: true, append: true });
  const { setpriv, setsid } = wrappers();
  // setpriv: if this process dies without running its unload handler (SIGKILL, a crash), the kernel kills the child.
  // That is safe because Deno spawns from the main thread, which lives as long as the process. setsid: a new process
  // group, so that one signal reaches the child's own children too.
  const prefix = [...setpriv ? ["setpriv", "--pdeathsig", "KILL", "--"] : [], ...setsid ? ["setsid"] : []];
  const argv = [...prefix, options.command, ...options.args ?? []];
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      cwd: options.cwd,
      env: options.env,
      clearEnv: options.env !== undefined,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    log.close();
    throw new Error(`Cannot start ${options.name} (${options.command})`, { cause: error });
  }
  const signalAll = (name: Deno.Signal): void => {
    try {
      // setsid without a fork keeps the pid, which is now also the process group id.
      if (setsid) Deno.kill(-child.pid, name);
      else child.kill(name);
    } catch {
      // Already gone.
    }
  };
  const killNow = (): void => signalAll("SIGKILL");
  liveProcesses.add(killNow);
  installLeakGuards();

  const echoPrefix = options.echo ? new TextEncoder().encode(`[${options.name}] `) : undefined;
  const readers = [child.stdout.getReader(), child.stderr.getReader()];
  const pump = async (reader: ReadableStreamDefaultReader<Uint8Array>): Promise<void> => {
    try {
      while (true) {
        const { done, value } = await reader.read();
        if (done) return;
        await writeAll(log, value);
        if (echoPrefix) {
          await writeAll(Deno.stderr, echoPrefix);
          await writeAll(Deno.stderr, value);
        }
      }
    } catch {
      // Cancelled after the drain timeout.
    }
  };
  const pumps = Promise.all(readers.map(pump));
  let exited = false;
  const status = child.status.then(async (result) => {
    exited = true;
    signalAll("SIGKILL");
    let drainTimer: ReturnType<typeof setTimeout> | undefined;
    const drained = new Promise<void>((resolve) => drainTimer = setTimeout(resolve, outputDrainMs));
    await Promise.race([pumps, drained]);
    clearTimeout(drainTimer);
    await Promise.all(readers.map((reader) => reader.cancel().catch(() => {})));
    await pumps;
    log.close();
    liveProcesses.delete(killNow);
    removeLeakGuardsIfIdle();
    return result;
  });
  return {
    name: options.name,
    pid: child.pid,
    logPath: options.logPath,
    get exited(): boolean {
      return exited;
    },
    status,
    stop: async (graceMs: number): Promise<Deno.CommandStatus> => {
      if (exited) return status;
      signalAll("SIGTERM");
      const timer = setTimeout(() => signalAll("SIGKILL"), graceMs);
      try {
        return await status;
      } finally {
        clearTimeout(timer);
      }
    },
    describe: (): string => {
      const state = exited ? "exited" : `running as pid ${child.pid}`;
      return `--- ${options.name} (${state}), last lines of ${options.logPath}:\n${tail(options.logPath, 15)}`;
    },
  };
}

let availableWrappers: { setpriv: boolean; setsid: boolean } | undefined;

/** Which util-linux wrappers exist here; without them processes still run, with weaker cleanup. */
function wrappers(): { setpriv: boolean; setsid: boolean } {
  const works = (command: string): boolean => {
    try {
      return new Deno.Command(command, { args: ["--version"], stdout: "null", stderr: "null" }).outputSync().success;
    } catch {
      return false;
    }
  };
  availableWrappers ??= { setpriv: works("setpriv"), setsid: works("setsid") };
  return availableWrappers;
}

async function writeAll(writer: { write(p: Uint8Array): Promise<number> }, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await writer.write(bytes.subarray(offset));
}

// ---------------------------------------------------------------------------------------------------------------
// Leak guards: a test run that is interrupted or crashes must not leave an apiserver or runner behind.

const liveProcesses = new Set<() => void>();
/** Temporary folders to remove if the test process is interrupted. */
const liveDirs = new Set<string>();
let guardsInstalled = false;
let signalGuards = true;

/**
 * For programs that stop the harness themselves on SIGINT/SIGTERM (the sandbox): the harness then leaves those
 * signals alone. Its children still die with this process (pdeathsig), and `unload` still cleans up.
 */
export function leaveSignalsToCaller(): void {
  signalGuards = false;
  if (guardsInstalled) {
    Deno.removeSignalListener("SIGINT", onInterrupt);
    Deno.removeSignalListener("SIGTERM", onTerminate);
  }
}

function killAllNow(): void {
  for (const kill of liveProcesses) kill();
}

function cleanUpNow(): void {
  killAllNow();
  for (const dir of liveDirs) {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch {
      // Best effort: a process may still be writing into it.
    }
  }
}

function onInterrupt(): void {
  cleanUpNow();
  Deno.exit(130);
}

function onTerminate(): void {
  cleanUpNow();
  Deno.exit(143);
}

function installLeakGuards(): void {
  if (guardsInstalled) return;
  guardsInstalled = true;
  globalThis.addEventListener("unload", cleanUpNow);
  if (!signalGuards) return;
  Deno.addSignalListener("SIGINT", onInterrupt);
  Deno.addSignalListener("SIGTERM", onTerminate);
}

function removeLeakGuardsIfIdle(): void {
  if (!guardsInstalled || liveProcesses.size > 0) return;
  guardsInstalled = false;
  globalThis.removeEventListener("unload", cleanUpNow);
  if (!signalGuards) return;
  Deno.removeSignalListener("SIGINT", onInterrupt);
  Deno.removeSignalListener("SIGTERM", onTerminate);
}
