/** What the end-to-end tests ask of the cluster and Gitea, read independently of the operator's code. */
import type { V1Job } from "@kubernetes/client-node";
import { type Environment, isFinished } from "./environment.ts";

/** The label the operator puts on each runner Job with its group's name. */
export const groupNameLabel = "gitea.bpg.pw/runnergroup-name";

/** The runner Jobs of a namespace, or of one group in it. */
export async function runnerJobsOf(env: Environment, namespace: string, group?: string): Promise<V1Job[]> {
  const list = await env.batch.listNamespacedJob({
    namespace,
    ...(group ? { labelSelector: `${groupNameLabel}=${group}` } : {}),
  });
  return list.items;
}

/** A Job neither finished nor being deleted. */
export const isActiveJob = (job: V1Job): boolean => !job.metadata?.deletionTimestamp && !isFinished(job);

/** The names of every runner registered in Gitea, sorted. */
export async function registrationNames(env: Environment): Promise<string[]> {
  return (await env.gitea.listRunners()).map((runner) => runner.name).sort();
}

/** The reasons of the Events about one group. */
export async function eventReasons(env: Environment, namespace: string, group: string): Promise<string[]> {
  const events = await env.core.listNamespacedEvent({ namespace });
  return events.items.filter((event) => event.involvedObject.name === group).map((event) => event.reason ?? "");
}
