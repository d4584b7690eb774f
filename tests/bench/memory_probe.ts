/**
 * The child process of `memory.ts`: measures one thing in a fresh Deno process and prints it as one JSON line. It has
 * no static imports, so that what it measures is only what it loads on purpose.
 *
 *   deno run --allow-all --v8-flags=--expose-gc tests/bench/memory_probe.ts bare
 *   deno run --allow-all --v8-flags=--expose-gc tests/bench/memory_probe.ts operator <kubeconfig>
 *   deno run --allow-all --v8-flags=--expose-gc tests/bench/memory_probe.ts objects <job-list.json> <count>
 *
 * - `bare`: Deno itself.
 * - `operator`: the operator's modules (everything `main.ts` imports) and its Kubernetes clients built from the
 *   kubeconfig, as `main.ts run` does before it connects.
 * - `objects`: heap per cached runner Job, as the API server returns them (parsed from JSON like a watch event) and as
 *   the Job informer keeps them (after its transform), `count` objects each.
 */

type Gc = () => void;
const gc = (globalThis as { gc?: Gc }).gc;
if (!gc) throw new Error("Run the probe with --v8-flags=--expose-gc");

const MiB = 1024 * 1024;

/** Resident memory as the kernel counts it (VmRSS), in bytes. */
function residentBytes(): number {
  const line = Deno.readTextFileSync("/proc/self/status").split("\n").find((l) => l.startsWith("VmRSS:"));
  if (!line) throw new Error("No VmRSS in /proc/self/status");
  return Number(line.replace(/\D+/g, "")) * 1024;
}

/** Collects garbage until the heap stops shrinking, then lets the runtime settle. */
async function settle(): Promise<void> {
  let before = Infinity;
  for (let round = 0; round < 5; round++) {
    gc!();
    await new Promise((resolve) => setTimeout(resolve, 50));
    const used = Deno.memoryUsage().heapUsed;
    if (used >= before) break;
    before = used;
  }
}

const print = (value: unknown): void =>
  void Deno.stdout.writeSync(new TextEncoder().encode(`${JSON.stringify(value)}\n`));
const [mode, ...args] = Deno.args;
const root = new URL("../../", import.meta.url);

switch (mode) {
  case "bare": {
    await settle();
    print({ rssMiB: residentBytes() / MiB, heapUsedMiB: Deno.memoryUsage().heapUsed / MiB });
    break;
  }
  case "operator": {
    const [kubeconfig] = args;
    await import(new URL("main.ts", root).href);
    const client = await import(new URL("src/kube/client.ts", root).href);
    const clients = client.makeClients(await client.loadKubeConfig(kubeconfig, () => undefined));
    await settle();
    print({
      rssMiB: residentBytes() / MiB,
      heapUsedMiB: Deno.memoryUsage().heapUsed / MiB,
      clients: Object.keys(clients).length,
    });
    break;
  }
  case "objects": {
    const [path, countText] = args;
    const count = Number(countText);
    const list = JSON.parse(Deno.readTextFileSync(path)) as { items: unknown[] };
    if (list.items.length === 0) throw new Error(`${path} holds no objects`);
    const texts = list.items.map((item) => JSON.stringify(item));
    const runnerJob = await import(new URL("src/runner_group/runner_job.ts", root).href);
    const informer = await import(new URL("src/kube/informer.ts", root).href);
    // Before the informer had a transform, it kept objects as they came.
    const transform: ((object: unknown) => unknown) | undefined = runnerJob.pruneRunnerJob;
    const strip: ((object: unknown) => unknown) | undefined = informer.dropManagedFields;
    const measure = async (keep: (object: unknown) => unknown): Promise<number> => {
      await settle();
      const before = Deno.memoryUsage().heapUsed;
      const kept: unknown[] = [];
      for (let i = 0; i < count; i++) kept.push(keep(JSON.parse(texts[i % texts.length])));
      await settle();
      const bytes = (Deno.memoryUsage().heapUsed - before) / count;
      if (kept.length !== count) throw new Error("unreachable: the objects must stay alive until measured");
      return bytes;
    };
    const raw = await measure((object) => object);
    const withoutManagedFields = strip ? await measure(strip) : undefined;
    const pruned = transform ? await measure(transform) : undefined;
    print({
      jsonBytes: texts.reduce((sum, text) => sum + text.length, 0) / texts.length,
      heapBytesRaw: raw,
      heapBytesWithoutManagedFields: withoutManagedFields,
      heapBytesPruned: pruned,
    });
    break;
  }
  default:
    throw new Error(`Unknown probe "${mode}": use bare, operator or objects`);
}
