/** Fixtures shared by the unit tests (not a test file itself). */
import type { QueuedJob } from "../../src/forge/gitea_client.ts";
import type { RunnerGroupSpec } from "../../src/runner_group/schema.ts";

/** Queued job `id` of acme/app, runs-on `linux`, queued on 2026-01-01; `overrides` changes any field. */
export const queuedJob = (id: number, overrides: Partial<QueuedJob> = {}): QueuedJob => ({
  id,
  runId: 1,
  name: `job-${id}`,
  runsOn: ["linux"],
  owner: "acme",
  repo: "app",
  createdAt: "2026-01-01T00:00:00Z",
  htmlUrl: "",
  ...overrides,
});

/** A repo-scope spec for acme/app on gitea.example.com, at most 2 runners, its API token in Secret `tokens`. */
export const repoSpec: RunnerGroupSpec = {
  scope: "repo",
  org: "acme",
  repo: "app",
  giteaURL: "https://gitea.example.com",
  maxActiveRunners: 2,
  authToken: { name: "tokens", key: "api" },
} as RunnerGroupSpec;

/** The Status the NamespaceLifecycle admission plugin answers (k8s.io/apiserver v0.35.4), as JSON on the wire. */
export const namespaceTerminatingStatus = {
  kind: "Status",
  apiVersion: "v1",
  status: "Failure",
  message:
    'jobs.batch "ci-7" is forbidden: unable to create new content in namespace team because it is being terminated',
  reason: "Forbidden",
  details: {
    name: "ci-7",
    group: "batch",
    kind: "jobs",
    causes: [{
      reason: "NamespaceTerminating",
      message: "namespace team is being terminated",
      field: "metadata.namespace",
    }],
  },
  code: 403,
};
