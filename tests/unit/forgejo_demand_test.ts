/** A demand poller against the Forgejo-shaped server: detection once, and the labels a Forgejo 11 needs. */
import assert from "node:assert/strict";
import { DemandPollers, type ForgeTarget } from "../../src/forge/demand_poller.ts";
import { startForgejoServer } from "../harness/forgejo_server.ts";

const until = async (condition: () => boolean, timeoutMs = 5000): Promise<void> => {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("Timed out waiting for a condition");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
};

Deno.test("a Forgejo 11 target shared by two groups is asked once per poll, with the union of their labels", async () => {
  const server = startForgejoServer("11.0.0");
  const admin = server.addUser("root", { admin: true });
  const acme = server.addOrg("acme", [admin]);
  const app = server.addRepo(acme, "app");
  const linux = server.queueJob(app, { name: "build", runsOn: ["linux"] });
  const gpu = server.queueJob(app, { name: "train", runsOn: ["gpu"] });
  server.queueJob(app, { name: "other", runsOn: ["windows"] });
  const notified: string[][] = [];
  const pollers = new DemandPollers({ intervalMs: 100, timeoutMs: 1000, onChange: (keys) => notified.push(keys) });
  try {
    const target: ForgeTarget = { baseUrl: server.url, endpoint: { scope: "org", org: "acme" }, token: admin.token };
    const key = pollers.subscribe("ci/linux", { ...target, labels: ["linux"] });
    assert.equal(pollers.subscribe("ci/gpu", { ...target, labels: ["gpu", "linux"] }), key);
    await until(() => (pollers.snapshot(key)?.jobs.length ?? 0) === 2);
    const snapshot = pollers.snapshot(key)!;
    assert.deepEqual(snapshot.jobs.map((job) => job.id), [linux.id, gpu.id]);
    assert.equal(snapshot.forge?.kind, "forgejo");
    assert.equal(snapshot.version, "11.0.0+gitea-1.22.0");

    const jobRequests = (): string[] => server.requests.filter((request) => request.includes("/runners/jobs"));
    await new Promise((resolve) => setTimeout(resolve, 350));
    assert.ok(jobRequests().every((request) => request.endsWith("?labels=gpu%2Clinux")), jobRequests().join("\n"));
    const polls = jobRequests().length;
    assert.ok(polls >= 3 && polls <= 6, `${polls} polls in about 450 ms at a 100 ms interval`);
    assert.equal(server.requests.filter((request) => request.endsWith("/version")).length, 1, "detected once");

    // A job taken by a runner leaves the queue and is reported as running; its end is a change too.
    linux.status = "running";
    linux.taskId = 1;
    await until(() => pollers.snapshot(key)?.runningJobIds?.has(linux.id) === true);
    const seen = notified.length;
    server.finishJob(linux, "success");
    await until(() => pollers.snapshot(key)?.runningJobIds?.size === 0);
    await until(() => notified.length > seen);

    pollers.unsubscribe("ci/gpu");
    const before = jobRequests().length;
    await until(() => jobRequests().length > before + 1);
    assert.ok(jobRequests().at(-1)!.endsWith("?labels=linux"), "a group's labels leave with it");
  } finally {
    await pollers.stop();
    await server.stop();
  }
});
