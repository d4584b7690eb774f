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
import { CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import { request as httpsRequest } from "node:https";
import { join } from "node:path";
import { freeLoopbackPorts } from "./process.ts";
import { ensureTools, type ToolPaths } from "./tools.ts";
import { createFakeNode, waitUntilSchedulable } from "./fake_node.ts";
import { liveDirs, type LoggedProcess, startLoggedProcess, waitUntil } from "./logged_process.ts";
import { createCertificates, issueCertificate, writeKubeconfig } from "./pki.ts";

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
    const pki = await createCertificates(dir, firstServiceIp);
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
// Readiness

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
