/**
 * What every part of the benchmark shares: one local environment (control plane, Gitea, stand-in kubelet), the
 * operator's own client identity (so the API server's audit log tells its requests apart), the forge observer, and
 * helpers to set up namespaces and groups, start the operator and clean up between parts.
 */
import { PatchStrategy, setHeaderOptions, type V1Job } from "@kubernetes/client-node";
import { join } from "node:path";
import { createRunnerGroup, type Environment, startEnvironment, waitForFirstPoll } from "../harness/environment.ts";
import type { RunnerScope } from "../harness/gitea.ts";
import { type OperatorProcess, startOperator } from "../harness/operator.ts";
import { eventually } from "../harness/wait.ts";
import { usage } from "../../src/config.ts";
import { buildRunnerJob } from "../../src/runner_group/runner_job.ts";
import { parseRunnerGroupSpec } from "../../src/runner_group/schema.ts";
import { ForgeObserver } from "./forge_observer.ts";
import { auditPolicy } from "./probes.ts";

/** The operator's client certificate user; its requests are the only ones in the audit log. */
export const operatorUser = "gro-bench-operator";
export const webhookSecret = "bench-webhook-secret-0123456789";

/**
 * A node selector no node has: runner pods are created by the Job controller but never scheduled, so a burst of
 * hundreds of runner Jobs costs no runner processes (the stand-in kubelet only runs pods bound to its node).
 */
export const unschedulable = { "bench.gitea-runner-operator/never": "true" };

export interface BenchOptions {
  /** Runner Job creates in flight, for the raw create rate (and the operator, once it has the flag). */
  createConcurrency: number;
  say: (line: string) => void;
}

export class BenchContext {
  readonly operators = new Set<OperatorProcess>();

  private constructor(
    readonly env: Environment,
    readonly dir: string,
    readonly operatorKubeconfig: string,
    readonly auditLogPath: string,
    readonly forge: ForgeObserver,
    readonly options: BenchOptions,
  ) {}

  static async start(dir: string, options: BenchOptions): Promise<BenchContext> {
    const policyPath = join(dir, "audit-policy.json");
    const auditLogPath = join(dir, "audit.log");
    await Deno.writeTextFile(policyPath, auditPolicy(operatorUser));
    const env = await startEnvironment({
      giteaSettings: { webhook: { ALLOWED_HOST_LIST: "loopback" } },
      apiServerArgs: [`--audit-policy-file=${policyPath}`, `--audit-log-path=${auditLogPath}`],
    });
    try {
      const kubeconfig = await env.cluster.issueKubeconfig(operatorUser, ["system:masters"]);
      const forge = ForgeObserver.start(env.gitea.url);
      return new BenchContext(env, dir, kubeconfig, auditLogPath, forge, options);
    } catch (error) {
      await env.dispose();
      throw error;
    }
  }

  get say(): (line: string) => void {
    return this.options.say;
  }

  /** Gitea's own base URL, without the trailing slash. */
  get giteaUrl(): string {
    return this.env.gitea.url.replace(/\/$/, "");
  }

  /** Whether the operator under test takes `--create-concurrency` (the flag arrives with the concurrent creator). */
  get operatorHasCreateConcurrency(): boolean {
    return usage().includes("--create-concurrency");
  }

  /** Starts the operator as `name` with the bench identity; JSON logs at debug level unless `args` say otherwise. */
  async startOperator(name: string, args: string[]): Promise<OperatorProcess> {
    const concurrency = this.operatorHasCreateConcurrency
      ? ["--create-concurrency", String(this.options.createConcurrency)]
      : [];
    const operator = await startOperator({
      kubeconfigPath: this.operatorKubeconfig,
      dir: this.env.dir,
      name,
      args: [...concurrency, ...args],
    });
    this.operators.add(operator);
    return operator;
  }

  async stopOperator(operator: OperatorProcess): Promise<void> {
    this.operators.delete(operator);
    if (operator.running()) await operator.stop("SIGTERM");
  }

  /**
   * A namespace with the Secret `tokens`: the admin's API token, a registration token (global unless `scope` says
   * otherwise) and the webhook secret.
   */
  async createNamespace(namespace: string, scope: RunnerScope = { kind: "global" }): Promise<void> {
    const { core, gitea } = this.env;
    await core.createNamespace({ body: { metadata: { name: namespace } } });
    await core.createNamespacedSecret({
      namespace,
      body: {
        metadata: { name: "tokens" },
        stringData: {
          api: gitea.adminToken,
          registration: await gitea.registrationToken(scope),
          webhook: webhookSecret,
        },
      },
    });
  }

  /** Creates a RunnerGroup with the bench's token references; returns its uid. */
  async createGroup(namespace: string, name: string, spec: Record<string, unknown>): Promise<string> {
    const group = await createRunnerGroup(this.env.custom, namespace, name, {
      defaultLabels: false,
      registrationToken: { name: "tokens", key: "registration" },
      authToken: { name: "tokens", key: "api" },
      ...spec,
    });
    return group.metadata.uid;
  }

  /**
   * For the parts with real runners: organization `org` with repository `app` in Gitea, namespace `org` with the
   * repository's registration token, group `app` running jobs labelled `org`, and an operator for that namespace,
   * once it has polled. Returns the operator and its HTTP port.
   */
  async startRepositoryGroup(
    org: string,
    spec: Record<string, unknown>,
    args: string[],
  ): Promise<{ operator: OperatorProcess; port: number }> {
    const { gitea, custom } = this.env;
    await gitea.createOrg(org);
    await gitea.createRepo(org, "app");
    await this.createNamespace(org, { kind: "repo", owner: org, repo: "app" });
    await this.createGroup(org, "app", {
      scope: "repo",
      org,
      repo: "app",
      giteaURL: this.giteaUrl,
      labels: [org],
      ...spec,
    });
    const operator = await this.startOperator(`operator-${org}`, ["--namespaces", org, ...args]);
    const port = await operator.port();
    await waitForFirstPoll(custom, org, "app");
    return { operator, port };
  }

  /** A repository webhook for workflow_job events to the operator listening on `port`. */
  async addWebhook(owner: string, repo: string, port: number): Promise<void> {
    await this.env.gitea.api("POST", `repos/${owner}/${repo}/hooks`, {
      type: "gitea",
      active: true,
      events: ["workflow_job"],
      config: { url: `http://127.0.0.1:${port}/webhooks/gitea`, content_type: "json", secret: webhookSecret },
    });
  }

  /** Deletes a namespace and waits until it is gone, so that the next part starts on a quiet control plane. */
  async deleteNamespace(namespace: string): Promise<void> {
    // The namespace's operator is mostly stopped by now, so its finalizer would hold the groups, and the namespace, for
    // ever: drop it, as the README says to do when the operator is gone. (The live burst part's operator still runs;
    // it finds the groups gone before it finalizes them, as when a finalizer is removed by hand.)
    const groups = await this.env.custom.listNamespacedCustomObject({
      group: "gitea.bpg.pw",
      version: "v1alpha1",
      namespace,
      plural: "runnergroups",
    }).catch(() => ({ items: [] })) as { items: { metadata: { name: string } }[] };
    for (const group of groups.items) {
      await this.env.custom.patchNamespacedCustomObject(
        {
          group: "gitea.bpg.pw",
          version: "v1alpha1",
          namespace,
          plural: "runnergroups",
          name: group.metadata.name,
          body: { metadata: { finalizers: null } },
        },
        setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
      ).catch(() => {});
    }
    await this.env.core.deleteNamespace({ name: namespace }).catch(() => {});
    await eventually(`namespace ${namespace} to be deleted`, async () => {
      try {
        await this.env.core.readNamespace({ name: namespace });
        return false;
      } catch {
        return true;
      }
    }, { timeoutMs: 300_000, intervalMs: 1_000 });
  }

  async dispose(): Promise<void> {
    for (const operator of [...this.operators]) await this.stopOperator(operator);
    await this.forge.stop().catch(() => {});
    await this.env.dispose();
  }
}

/**
 * A Job shaped exactly like a runner Job of group `groupName` (built by the operator's own builder, owned by that
 * group), for forge job `jobId`, whose pod is never scheduled.
 */
export function runnerShapedJob(
  group: { name: string; namespace: string; uid: string; giteaUrl: string },
  jobId: number,
): V1Job {
  const spec = parseRunnerGroupSpec({
    scope: "repo",
    org: "bench",
    repo: "bench",
    giteaURL: group.giteaUrl,
    labels: ["bench"],
    defaultLabels: false,
    maxActiveRunners: 10_000,
    registrationToken: { name: "tokens", key: "registration" },
    authToken: { name: "tokens", key: "api" },
    template: { nodeSelector: unschedulable },
  });
  if (!spec.success) throw new Error(`Cannot build a runner-shaped Job: ${spec.error.message}`);
  return buildRunnerJob({
    group: { name: group.name, namespace: group.namespace, uid: group.uid, spec: spec.data },
    forge: group.giteaUrl,
    labels: [{ name: "bench", schema: "host", arg: "" }],
    for: {
      job: {
        id: jobId,
        runId: jobId,
        name: `job ${jobId}`,
        runsOn: ["bench"],
        owner: "bench",
        repo: "bench",
        createdAt: new Date().toISOString(),
        htmlUrl: "",
      },
      attempt: 0,
    },
    defaultImage: "docker.gitea.com/act_runner:0.2.13-dind-rootless",
    registrationToken: { name: "tokens", key: "registration" },
  });
}
