import assert from "node:assert/strict";
import {
  GroupMemories,
  newEvictions,
  noteFinishingRunners,
  noteIdleRunners,
  noteWarmPool,
  validateOnce,
} from "../../src/runner_group/group_memory.ts";
import type { RunnerJobRecord } from "../../src/runner_group/planner.ts";
import type { RunnerGroup } from "../../src/runner_group/schema.ts";

const evicted = (uid: string) => ({ name: `job-${uid}`, uid, message: "The node was low on memory" });

Deno.test("a group's memory starts empty, is shared by its reconciles and is forgotten whole", () => {
  const memories = new GroupMemories();
  assert.equal(memories.peek("ns/a"), undefined);
  const memory = memories.of("ns/a");
  memory.apiToken = "token";
  memory.idleSince.set("a-1", 5);
  assert.equal(memories.of("ns/a"), memory);
  assert.equal(memories.peek("ns/b"), undefined, "peeking creates nothing");
  memories.forget("ns/a");
  assert.equal(memories.peek("ns/a"), undefined);
  const fresh = memories.of("ns/a");
  assert.equal(fresh.apiToken, undefined);
  assert.equal(fresh.idleSince.size, 0);
  assert.deepEqual(fresh.orphans, { sweptAt: 0, firstSeen: new Map() });
});

Deno.test("the warm pool remembers when it last got smaller, not when it grew or stayed", () => {
  const memory = new GroupMemories().of("ns/a");
  assert.equal(noteWarmPool(memory, 3, 1_000), undefined, "the first size is no shrink");
  assert.equal(noteWarmPool(memory, 5, 2_000), undefined);
  assert.equal(noteWarmPool(memory, 2, 3_000), 3_000);
  assert.equal(noteWarmPool(memory, 2, 4_000), 3_000, "the same size keeps the shrink time");
  assert.equal(noteWarmPool(memory, 4, 5_000), 3_000, "growing keeps it too");
  assert.equal(noteWarmPool(memory, 1, 6_000), 6_000);
});

Deno.test("idle times are kept only for runners idle now; one idle again starts over", () => {
  const memory = new GroupMemories().of("ns/a");
  noteIdleRunners(memory, ["a-1", "a-2"], 1_000);
  noteIdleRunners(memory, ["a-1", "a-2", "a-3"], 2_000);
  assert.deepEqual([...memory.idleSince], [["a-1", 1_000], ["a-2", 1_000], ["a-3", 2_000]]);
  noteIdleRunners(memory, ["a-2", "a-3"], 3_000);
  noteIdleRunners(memory, ["a-1", "a-2", "a-3"], 4_000);
  assert.deepEqual(Object.fromEntries(memory.idleSince), { "a-1": 4_000, "a-2": 1_000, "a-3": 2_000 });
});

Deno.test("each eviction is new once; one that left the cache and comes back is new again", () => {
  const memory = new GroupMemories().of("ns/a");
  assert.deepEqual(newEvictions(memory, [evicted("1"), evicted("2")]).map((e) => e.uid), ["1", "2"]);
  assert.deepEqual(newEvictions(memory, [evicted("1"), evicted("2"), evicted("3")]).map((e) => e.uid), ["3"]);
  assert.deepEqual(newEvictions(memory, [evicted("3")]), []);
  assert.deepEqual(newEvictions(memory, [evicted("1"), evicted("3")]).map((e) => e.uid), ["1"]);
});

Deno.test("the spec is validated once per generation of the same group", () => {
  const memory = new GroupMemories().of("ns/a");
  const group = (generation: number, uid = "uid-1", maxActiveRunners: unknown = 2): RunnerGroup =>
    ({
      apiVersion: "gitea.bpg.pw/v1alpha1",
      kind: "RunnerGroup",
      metadata: { name: "a", namespace: "ns", uid, generation },
      spec: {
        scope: "repo",
        org: "o",
        repo: "r",
        giteaURL: "http://gitea",
        labels: ["x"],
        maxActiveRunners,
        registrationToken: { name: "t", key: "k" },
        authToken: { name: "t", key: "a" },
      },
    }) as unknown as RunnerGroup;
  const first = validateOnce(memory, group(1));
  assert.equal(first.ok, true);
  // The same generation is not parsed again: a different spec under it gets the remembered verdict.
  assert.equal(validateOnce(memory, group(1, "uid-1", "many")), first);
  const invalid = validateOnce(memory, group(2, "uid-1", "many"));
  assert.equal(invalid.ok, false);
  // A group deleted and created again under the same name has a new uid: validated afresh.
  assert.equal(validateOnce(memory, group(2, "uid-2")).ok, true);
});

Deno.test("a runner seen running a job and then not is finishing, until it exits or holdMs has passed", () => {
  const memory = new GroupMemories().of("ns/a");
  const hold = 60_000;
  // The active runner Jobs, and one that finished (its pod ended): that one is never finishing.
  const runnerJobs = (active: string[]): RunnerJobRecord[] => [
    ...active.map((name) => ({ name, attempt: 0, state: "active" as const })),
    { name: "a-0", attempt: 0, state: "succeeded", finishedAt: 500 },
  ];
  const note = (active: string[], busy: string[], at: number) =>
    [...noteFinishingRunners(memory, runnerJobs(active), new Set(busy), at, hold)].sort();
  // Never seen busy (a fresh runner, or one whose job was taken by another runner): not finishing.
  assert.deepEqual(note(["a-1", "a-2"], [], 1_000), []);
  // a-1 runs its job: busy, not finishing.
  assert.deepEqual(note(["a-1", "a-2"], ["a-1"], 2_000), []);
  // Its job ended and it has not exited yet: finishing; a-2 was never busy.
  assert.deepEqual(note(["a-1", "a-2"], [], 3_000), ["a-1"]);
  assert.deepEqual(note(["a-1", "a-2"], [], 2_000 + hold - 1), ["a-1"]);
  // Still there holdMs after it was last seen busy: counted idle again, so that a hung runner is still removed.
  assert.deepEqual(note(["a-1", "a-2"], [], 2_000 + hold), []);
  // A runner that left the cache is forgotten: its name seen again (a new Job) starts afresh.
  note(["a-2"], [], 70_000);
  assert.equal(memory.lastBusy.has("a-1"), false);
  assert.deepEqual(note(["a-1", "a-2"], [], 71_000), []);
  // A runner whose Job has ended is not remembered, even while a stale answer still shows it running.
  assert.deepEqual(note(["a-1"], ["a-0"], 72_000), []);
  assert.equal(memory.lastBusy.has("a-0"), false);
});
