/**
 * Proves the test harness itself against a real control plane: the stand-in kubelet runs runner pods with their
 * resolved environment, the real Job controller sees them succeed, fail and get garbage-collected, kube-apiserver can
 * be restarted under a running watch, and nothing outlives `dispose()`.
 *
 * Set GRO_HARNESS_DEBUG=1 to copy every process's output to stderr.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { BatchV1Api, CoreV1Api, type V1EnvVar, type V1Job, type V1Pod } from "@kubernetes/client-node";
import { startCluster } from "../harness/cluster.ts";
import { type RunnerKubelet, startRunnerKubelet, toHostLabels } from "../harness/kubelet.ts";
import { eventually, waitLimit } from "../harness/wait.ts";

const namespace = "default";

const echoOutput = Deno.env.get("GRO_HARNESS_DEBUG") === "1";

/**
 * Stands in for the runner: records what it was given (the token only as a hash), then sleeps and exits as the pod's
 * own variables say. On SIGTERM it notes the signal and exits 143, as a well-behaved runner would. It writes `ready` once
 * its trap is set: the pod is Running as soon as the process exists, and a signal before the trap would go unnoted.
 */
const stubRunner = `#!/usr/bin/env bash
echo "stub runner started with: $(env | cut -d= -f1 | sort | tr '\\n' ' ')"
printf '%s' "\${GITEA_RUNNER_REGISTRATION_TOKEN-}" | sha256sum | cut -d' ' -f1 > token.sha256
printf '%s' "\${GITEA_RUNNER_LABELS-}" > labels
trap 'echo "stub runner got SIGTERM"; echo SIGTERM > signal; kill "$sleeper" 2>/dev/null; exit 143' TERM
echo ready > ready
sleep "\${STUB_SLEEP_SECONDS:-0}" & sleeper=$!
wait "$sleeper"
exit "\${STUB_EXIT_CODE:-0}"
`;

/** Waits until the stub runner in `workDir` has set its SIGTERM trap. */
async function stubReady(workDir: string): Promise<void> {
  await eventually("the stub runner to set its trap", async () => {
    try {
      return (await Deno.readTextFile(join(workDir, "ready"))).trim() === "ready";
    } catch {
      return false;
    }
  }, waitLimit);
}

Deno.test({
  name: "the test cluster runs runner Jobs through the stand-in kubelet",
  // The Kubernetes client keeps pooled HTTP connections open past the test; the harness's own processes are
  // checked explicitly at the end instead.
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const cluster = await startCluster({ echoOutput });
    const scratch = await Deno.makeTempDir({ prefix: "gro-harness-test-" });
    const stub = join(scratch, "stub-runner.sh");
    await Deno.writeTextFile(stub, stubRunner, { mode: 0o755 });
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    const batch = cluster.kubeConfig.makeApiClient(BatchV1Api);
    const token = crypto.randomUUID();
    await core.createNamespacedSecret({
      namespace,
      body: { metadata: { name: "runner-registration" }, stringData: { token } },
    });
    const harnessPids: number[] = Object.values(cluster.pids());
    let kubelet: RunnerKubelet | undefined;
    try {
      kubelet = await startRunnerKubelet({
        kubeConfig: cluster.kubeConfig,
        runnerBinary: stub,
        nodeName: cluster.nodeName,
        echoOutput,
        // Short watches, so that the idle step below sees the watch end and restart several times.
        watchTimeoutSeconds: 2,
        watchIdleMs: 1_500,
      });
      const runner = kubelet;

      await t.step(`the control plane started (in ${(cluster.startupMs / 1000).toFixed(1)}s)`, async () => {
        const node = await core.readNode({ name: cluster.nodeName });
        assert.equal(node.status?.conditions?.find((c) => c.type === "Ready")?.status, "True");
        assert.deepEqual(node.spec?.taints ?? [], []);
        assert.deepEqual(Object.keys(cluster.pids()).sort(), [
          "etcd",
          "kube-apiserver",
          "kube-controller-manager",
          "kube-scheduler",
        ]);
      });

      await t.step("a runner Job gets the Secret's token and completes", async () => {
        await batch.createNamespacedJob({
          namespace,
          body: runnerJob("runner-ok", [
            { name: "GITEA_INSTANCE_URL", value: "http://127.0.0.1:3000" },
            {
              name: "GITEA_RUNNER_REGISTRATION_TOKEN",
              valueFrom: { secretKeyRef: { name: "runner-registration", key: "token" } },
            },
            { name: "GITEA_RUNNER_LABELS", value: "ubuntu-latest:docker://node:20,self-hosted" },
            { name: "GITEA_RUNNER_EPHEMERAL", value: "true" },
          ]),
        });
        const job = await eventually(
          "Job runner-ok is Complete",
          () => jobWithCondition(batch, "runner-ok", "Complete"),
          waitLimit,
        );
        assert.equal(job.status?.succeeded, 1);
        const pod = await onlyPod(core, "runner-ok");
        assert.equal(pod.status?.phase, "Succeeded");
        const started = runner.observation(namespace, pod.metadata?.name ?? "");
        assert.ok(started, "the stand-in started no runner for the Job's pod");
        assert.equal(started.exitCode, 0);
        assert.equal(started.forgeJobId, "runner-ok");
        assert.deepEqual(started.envNames, [
          "GITEA_INSTANCE_URL",
          "GITEA_RUNNER_EPHEMERAL",
          "GITEA_RUNNER_LABELS",
          "GITEA_RUNNER_REGISTRATION_TOKEN",
        ]);
        const seenHash = (await Deno.readTextFile(join(started.workDir, "token.sha256"))).trim();
        assert.equal(seenHash, await sha256(token), "the runner did not get the Secret's token");
        assert.equal(await Deno.readTextFile(join(started.workDir, "labels")), "ubuntu-latest:host,self-hosted:host");
      });

      await t.step("a runner exiting 1 fails a Job with backoffLimit 0", async () => {
        await batch.createNamespacedJob({
          namespace,
          body: runnerJob("runner-fails", [{ name: "STUB_EXIT_CODE", value: "1" }]),
        });
        const job = await eventually(
          "Job runner-fails is Failed",
          () => jobWithCondition(batch, "runner-fails", "Failed"),
          waitLimit,
        );
        assert.equal(job.status?.conditions?.find((c) => c.type === "Failed")?.reason, "BackoffLimitExceeded");
        const pod = await onlyPod(core, "runner-fails");
        assert.equal(pod.status?.phase, "Failed");
        assert.equal(pod.status?.containerStatuses?.[0].state?.terminated?.exitCode, 1);
        assert.equal(runner.started.filter((s) => s.forgeJobId === "runner-fails").length, 1, "the Job was retried");
      });

      await t.step("deleting a Job in the background kills its runner and removes its pod", async () => {
        await batch.createNamespacedJob({
          namespace,
          body: runnerJob("runner-deleted", [{ name: "STUB_SLEEP_SECONDS", value: "300" }]),
        });
        const pod = await eventually("the runner-deleted pod is Running", async () => {
          const found = await onlyPod(core, "runner-deleted").catch(() => undefined);
          return found?.status?.phase === "Running" ? found : undefined;
        }, waitLimit);
        const started = runner.observation(namespace, pod.metadata?.name ?? "");
        assert.ok(started && started.exitCode === undefined, "the runner is not running");
        assert.ok(processExists(started.pid));
        await stubReady(started.workDir);
        await batch.deleteNamespacedJob({ name: "runner-deleted", namespace, propagationPolicy: "Background" });
        await eventually("the runner-deleted pod is gone", async () => {
          const pods = await core.listNamespacedPod({ namespace, labelSelector: "job-name=runner-deleted" });
          return pods.items.length === 0 ? true : undefined;
        }, waitLimit);
        assert.equal(started.killedOnDeletion, true);
        assert.equal(started.exitCode, 143);
        assert.equal(processExists(started.pid), false);
        assert.equal((await Deno.readTextFile(join(started.workDir, "signal"))).trim(), "SIGTERM");
      });

      await t.step(
        "an idle runner survives watch restarts, and its pod fails when it is killed from outside",
        async (t) => {
          await batch.createNamespacedJob({
            namespace,
            body: runnerJob("runner-idle", [{ name: "STUB_SLEEP_SECONDS", value: "120" }]),
          });
          const pod = await eventually("the runner-idle pod is Running", async () => {
            const found = await onlyPod(core, "runner-idle").catch(() => undefined);
            return found?.status?.phase === "Running" ? found : undefined;
          }, waitLimit);
          const podName = pod.metadata?.name ?? "";
          const started = runner.observation(namespace, podName);
          assert.ok(started && started.exitCode === undefined, "the runner is not running");
          await stubReady(started.workDir);

          await t.step(
            "no pod event for longer than the watch timeout and idle limit: the runner keeps running",
            async () => {
              const restartsBefore = runner.watchRestarts;
              const idleUntil = Date.now() + 8_000;
              while (Date.now() < idleUntil) {
                assert.ok(processExists(started.pid), "the idle runner process was stopped");
                assert.equal(started.exitCode, undefined, "the idle runner process exited");
                await new Promise((resolve) => setTimeout(resolve, 250));
              }
              assert.ok(runner.watchRestarts > restartsBefore, "the idle watch was never restarted");
              assert.equal(started.killedOnDeletion, false);
              const after = await core.readNamespacedPod({ name: podName, namespace });
              assert.equal(after.metadata?.deletionTimestamp, undefined);
              assert.equal(after.status?.phase, "Running");
              assert.equal(await jobWithCondition(batch, "runner-idle", "Failed"), undefined);
            },
          );

          await t.step("the runner is killed from outside: the pod fails with 143 and so does the Job", async () => {
            const kill = await new Deno.Command("kill", { args: ["-TERM", String(started.pid)] }).output();
            assert.ok(kill.success, "kill -TERM failed");
            const failed = await eventually("the runner-idle pod is Failed", async () => {
              const found = await core.readNamespacedPod({ name: podName, namespace });
              return found.status?.phase === "Failed" ? found : undefined;
            }, waitLimit);
            assert.equal(failed.status?.containerStatuses?.[0].state?.terminated?.exitCode, 143);
            await eventually(
              "Job runner-idle is Failed",
              () => jobWithCondition(batch, "runner-idle", "Failed"),
              waitLimit,
            );
            assert.equal(started.exitCode, 143);
            assert.equal(started.killedOnDeletion, false);
            assert.equal((await Deno.readTextFile(join(started.workDir, "signal"))).trim(), "SIGTERM");
          });
        },
      );

      await t.step("a runner pod whose Secret key is missing waits with CreateContainerConfigError", async () => {
        await batch.createNamespacedJob({
          namespace,
          body: runnerJob("runner-no-secret", [
            {
              name: "GITEA_RUNNER_REGISTRATION_TOKEN",
              valueFrom: { secretKeyRef: { name: "runner-registration", key: "missing" } },
            },
          ]),
        });
        const pod = await eventually("the runner-no-secret pod reports its config error", async () => {
          const found = await onlyPod(core, "runner-no-secret").catch(() => undefined);
          const waiting = found?.status?.containerStatuses?.[0].state?.waiting;
          return waiting?.reason === "CreateContainerConfigError" ? found : undefined;
        }, waitLimit);
        assert.equal(pod.status?.phase, "Pending");
        assert.match(
          pod.status?.containerStatuses?.[0].state?.waiting?.message ?? "",
          /couldn't find key missing in Secret default\/runner-registration/,
        );
        assert.equal(runner.started.some((s) => s.forgeJobId === "runner-no-secret"), false);
        await batch.deleteNamespacedJob({ name: "runner-no-secret", namespace, propagationPolicy: "Background" });
        await eventually("the runner-no-secret pod is gone", async () => {
          const pods = await core.listNamespacedPod({ namespace, labelSelector: "job-name=runner-no-secret" });
          return pods.items.length === 0 ? true : undefined;
        }, waitLimit);
      });

      await t.step("pods that are not runner pods are left Pending", async () => {
        await core.createNamespacedPod({
          namespace,
          body: { metadata: { name: "not-a-runner" }, spec: { containers: [{ name: "runner", image: "busybox" }] } },
        });
        await eventually(
          "the stand-in saw not-a-runner",
          () => runner.ignoredPods.has("default/not-a-runner") || undefined,
          waitLimit,
        );
        const pod = await core.readNamespacedPod({ name: "not-a-runner", namespace });
        assert.equal(pod.spec?.nodeName, cluster.nodeName);
        assert.equal(pod.status?.phase, "Pending");
        assert.equal(runner.observation(namespace, "not-a-runner"), undefined);
        // No kubelet confirms a graceful deletion of a pod it does not run.
        await core.deleteNamespacedPod({ name: "not-a-runner", namespace, gracePeriodSeconds: 0 });
      });

      await t.step("kube-apiserver restarts and the stand-in's watch recovers", async () => {
        const restartsBefore = runner.watchRestarts;
        const oldPid = cluster.pids()["kube-apiserver"];
        await cluster.restartApiServer();
        const newPid = cluster.pids()["kube-apiserver"];
        assert.notEqual(newPid, oldPid);
        harnessPids.push(newPid);
        await core.readNamespace({ name: namespace });
        await batch.createNamespacedJob({ namespace, body: runnerJob("runner-after-restart", []) });
        // The controllers' and the stand-in's watches back off while the API server is down: allow for a late retry.
        await eventually(
          "Job runner-after-restart is Complete",
          () => jobWithCondition(batch, "runner-after-restart", "Complete"),
          { timeoutMs: 90_000 },
        );
        assert.ok(runner.watchRestarts > restartsBefore, "the pod watch was never interrupted");
      });

      harnessPids.push(...runner.started.map((s) => s.pid));
    } finally {
      await kubelet?.stop();
      await cluster.dispose();
      await Deno.remove(scratch, { recursive: true });
    }

    await t.step("dispose leaves no process and no folder behind", async () => {
      const survivors = harnessPids.filter(processExists);
      assert.deepEqual(survivors, [], `processes still running: ${survivors.join(", ")}`);
      await assert.rejects(Deno.stat(cluster.dir), Deno.errors.NotFound);
    });
  },
});

Deno.test("runner labels are mapped to the host schema", () => {
  assert.equal(toHostLabels("ubuntu-latest:docker://node:20"), "ubuntu-latest:host");
  assert.equal(toHostLabels("a:docker://x:1, b:host ,c,,"), "a:host,b:host,c:host");
  assert.equal(toHostLabels(""), "");
});

function runnerJob(name: string, env: V1EnvVar[]): V1Job {
  const labels = {
    "app.kubernetes.io/managed-by": "gitea-runner-operator",
    "app.kubernetes.io/component": "runner",
    "gitea.bpg.pw/runnergroup-name": "harness",
    "gitea.bpg.pw/job-id": name,
  };
  return {
    metadata: { name, labels },
    spec: {
      backoffLimit: 0,
      template: {
        metadata: { labels },
        spec: {
          restartPolicy: "Never",
          containers: [{ name: "runner", image: "docker.io/gitea/act_runner:0.2.13", env }],
        },
      },
    },
  };
}

async function jobWithCondition(batch: BatchV1Api, name: string, type: string): Promise<V1Job | undefined> {
  const job = await batch.readNamespacedJob({ name, namespace });
  return job.status?.conditions?.some((c) => c.type === type && c.status === "True") ? job : undefined;
}

async function onlyPod(core: CoreV1Api, jobName: string): Promise<V1Pod> {
  const pods = await core.listNamespacedPod({ namespace, labelSelector: `job-name=${jobName}` });
  assert.equal(pods.items.length, 1, `expected one pod for Job ${jobName}, found ${pods.items.length}`);
  return pods.items[0];
}

function processExists(pid: number): boolean {
  try {
    // A reaped process has no /proc entry; a zombie would still count as leaked.
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

async function sha256(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (byte) => byte.toString(16).padStart(2, "0")).join("");
}
