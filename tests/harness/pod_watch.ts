/**
 * The stand-in kubelet's view of its Node's pods: a list, then a watch from its resourceVersion until the server ends
 * it (every `timeoutSeconds`, which doubles as a periodic resync), it fails or it goes silent; then a list again, with
 * backoff after a failure. The kubelet is told of every full list and of every change in between.
 */
import type { CoreV1Api, KubeConfig, V1Pod } from "@kubernetes/client-node";
import { request as httpsRequest, type RequestOptions } from "node:https";

export interface PodWatchOptions {
  kubeConfig: KubeConfig;
  core: CoreV1Api;
  /** Which pods, e.g. `spec.nodeName=<node>`. */
  fieldSelector: string;
  /** How long the apiserver keeps one watch open. */
  timeoutSeconds: number;
  /** How long a watch may go without any event before it is taken as dead and restarted. */
  idleMs: number;
  /** Every pod the selector matches now, after each (re)list and before the watch that follows it. */
  listed(pods: V1Pod[]): void;
  /** A watch event: the pod's latest state, or undefined once it is DELETED. */
  changed(uid: string, pod: V1Pod | undefined): void;
}

export interface PodWatch {
  /** Settles once the first list has been handed to `listed` (or the watch is stopped first). */
  readonly firstList: Promise<void>;
  /** How many times the watch ended with an error and was restarted. */
  readonly restarts: number;
  /** Ends the watch and its retries; settles once the loop has returned. */
  stop(): Promise<void>;
}

/** Lists and watches the pods; the client's Watch stops for good on any error, this loop restarts it with backoff. */
export function watchPods(options: PodWatchOptions): PodWatch {
  const { core, fieldSelector } = options;
  let stopped = false;
  let restarts = 0;
  let endWatch: (() => void) | undefined;
  let wakeSleep: (() => void) | undefined;
  let firstListed: (() => void) | undefined;
  const firstList = new Promise<void>((resolve) => firstListed = resolve);

  const sleep = (delayMs: number): Promise<void> =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(() => wakeSleep?.(), delayMs);
      wakeSleep = (): void => {
        clearTimeout(timer);
        wakeSleep = undefined;
        resolve();
      };
    });

  const relist = async (): Promise<string> => {
    const list = await core.listPodForAllNamespaces({ fieldSelector });
    if (!stopped) options.listed(list.items);
    return list.metadata?.resourceVersion ?? "";
  };

  /** One watch from `resourceVersion` until the server ends it, it fails, it goes silent or `stop()` is called. */
  const watchOnce = (resourceVersion: string): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      let cancel: (() => void) | undefined;
      let settled = false;
      let watchdog: ReturnType<typeof setTimeout> | undefined;
      const end = (error?: unknown): void => {
        if (settled) return;
        settled = true;
        clearTimeout(watchdog);
        endWatch = undefined;
        cancel?.();
        if (error) reject(error);
        else resolve();
      };
      const feedWatchdog = (): void => {
        clearTimeout(watchdog);
        watchdog = setTimeout(() => end(new Error("The pod watch went silent")), options.idleMs);
      };
      endWatch = (): void => end();
      feedWatchdog();
      const onEvent = ({ type, object }: WatchEvent): void => {
        feedWatchdog();
        if (type === "ERROR") {
          end(new Error(`The pod watch failed: ${object.message ?? "unknown error"} (code ${object.code})`));
          return;
        }
        const uid = object.metadata?.uid;
        if (type === "BOOKMARK" || !uid || stopped) return;
        options.changed(uid, type === "DELETED" ? undefined : object);
      };
      const query = new URLSearchParams({
        watch: "true",
        fieldSelector,
        resourceVersion,
        allowWatchBookmarks: "true",
        timeoutSeconds: String(options.timeoutSeconds),
      });
      streamWatch(options.kubeConfig, `/api/v1/pods?${query}`, onEvent).then((watch) => {
        cancel = watch.cancel;
        if (settled) watch.cancel();
        return watch.ended;
      }).then(() => end(), end);
    });

  const loop = (async (): Promise<void> => {
    let failures = 0;
    while (!stopped) {
      try {
        const resourceVersion = await relist();
        firstListed?.();
        failures = 0;
        if (stopped) break;
        await watchOnce(resourceVersion);
      } catch {
        if (stopped) break;
        failures++;
        restarts++;
        await sleep(Math.min(200 * 2 ** failures, 5_000) * (0.5 + Math.random()));
      }
    }
  })();

  return {
    firstList,
    get restarts(): number {
      return restarts;
    },
    stop: async (): Promise<void> => {
      stopped = true;
      firstListed?.();
      endWatch?.();
      wakeSleep?.();
      await loop;
    },
  };
}

interface WatchEvent {
  type: string;
  object: V1Pod & { code?: number; message?: string };
}

/**
 * Opens a watch stream over node:https (HTTP/1.1, no pooling). Not the client's `Watch`: under Deno 2.9.6 its undici
 * stream never reports a connection that kube-apiserver dropped (nor its own abort), so a watch would hang silently
 * across an apiserver restart. Resolves once the response has started; `ended` settles when the stream does.
 */
async function streamWatch(
  kubeConfig: KubeConfig,
  path: string,
  onEvent: (event: WatchEvent) => void,
): Promise<{ cancel: () => void; ended: Promise<void> }> {
  const server = kubeConfig.getCurrentCluster()?.server;
  if (!server) throw new Error("Cannot watch pods: the kubeconfig has no current cluster");
  const requestOptions: RequestOptions = { agent: false, headers: { Accept: "application/json" } };
  await kubeConfig.applyToHTTPSOptions(requestOptions);
  return await new Promise((resolveStarted, rejectStarted) => {
    const request = httpsRequest(`${server}${path}`, requestOptions, (response) => {
      if (response.statusCode !== 200) {
        response.resume();
        rejectStarted(new Error(`Cannot watch pods: HTTP ${response.statusCode} for ${path}`));
        return;
      }
      response.setEncoding("utf8");
      const ended = new Promise<void>((resolve, reject) => {
        let buffered = "";
        response.on("data", (chunk: string) => {
          buffered += chunk;
          let newline: number;
          while ((newline = buffered.indexOf("\n")) >= 0) {
            const line = buffered.slice(0, newline).trim();
            buffered = buffered.slice(newline + 1);
            if (line === "") continue;
            try {
              onEvent(JSON.parse(line) as WatchEvent);
            } catch (error) {
              reject(error);
              request.destroy();
            }
          }
        });
        response.on("error", reject);
        response.on("end", () => resolve());
        response.on("close", () => reject(new Error("The pod watch connection closed")));
      });
      resolveStarted({ cancel: () => request.destroy(), ended });
    });
    request.on("error", rejectStarted);
    request.end();
  });
}
