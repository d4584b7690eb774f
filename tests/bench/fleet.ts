/**
 * The idle fleet: 22 RunnerGroups as the load has them, 20 repo-scope (one per repository) and 2 org-scope
 * (one per organization), each its own forge target, with no queued jobs, and one operator at its default poll
 * interval and log level. The idle-cost and memory parts share it.
 */
import { waitForFirstPoll } from "../harness/environment.ts";
import type { OperatorProcess } from "../harness/operator.ts";
import type { BenchContext } from "./context.ts";
import { unschedulable } from "./context.ts";

export interface Fleet {
  namespace: string;
  operator: OperatorProcess;
  /** The operator's process id and HTTP port. */
  pid: number;
  port: number;
  /** Forge targets polled: one per group. */
  targets: number;
  pollIntervalSeconds: number;
}

export const fleetNamespace = "idle";
const orgs = ["idle-a", "idle-b"];
const reposPerOrg = 10;
/** The operator's default `--poll-interval`. */
const pollIntervalSeconds = 10;
/** After the first polls, the start-up work (status writes, first reconciles) dies down before measuring. */
const settleMs = 20_000;

const fleets = new WeakMap<BenchContext, Fleet>();

/** Sets up the fleet and its operator once per benchmark run. */
export async function ensureFleet(ctx: BenchContext): Promise<Fleet> {
  const existing = fleets.get(ctx);
  if (existing) return existing;
  const { gitea, custom } = ctx.env;
  await ctx.createNamespace(fleetNamespace);
  const groups: string[] = [];
  for (const org of orgs) {
    await gitea.createOrg(org);
    for (let index = 1; index <= reposPerOrg; index++) {
      const repo = `r${index}`;
      await gitea.createRepo(org, repo);
      const name = `${org}-${repo}`;
      await ctx.createGroup(fleetNamespace, name, repoSpec(ctx, { scope: "repo", org, repo, labels: [name] }));
      groups.push(name);
    }
    await ctx.createGroup(fleetNamespace, org, repoSpec(ctx, { scope: "org", org, labels: [org] }));
    groups.push(org);
  }
  const operator = await ctx.startOperator("operator-idle", ["--namespaces", fleetNamespace, "--log-level", "info"]);
  const port = await operator.port();
  await Promise.all(groups.map((group) => waitForFirstPoll(custom, fleetNamespace, group)));
  await new Promise((resolve) => setTimeout(resolve, settleMs));
  const pid = operator.pid();
  if (pid === undefined) throw new Error(`Cannot find the operator's process (log: ${operator.logPath})`);
  const fleet: Fleet = { namespace: fleetNamespace, operator, pid, port, targets: groups.length, pollIntervalSeconds };
  fleets.set(ctx, fleet);
  return fleet;
}

function repoSpec(ctx: BenchContext, spec: Record<string, unknown>): Record<string, unknown> {
  return { giteaURL: ctx.giteaUrl, maxActiveRunners: 4, template: { nodeSelector: unschedulable }, ...spec };
}

/** Stops the fleet's operator and deletes its namespace, if the fleet was set up. */
export async function disposeFleet(ctx: BenchContext): Promise<void> {
  const fleet = fleets.get(ctx);
  if (!fleet) return;
  fleets.delete(ctx);
  await ctx.stopOperator(fleet.operator);
  await ctx.deleteNamespace(fleet.namespace);
}
