/**
 * Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it: the leader renews the Lease; another
 * instance takes it over once `renewTime + leaseDurationSeconds` has passed; every write carries the resourceVersion
 * it read, so two candidates never both win. The Lease is read and written as plain JSON through the custom objects
 * API, because the typed client does not write `MicroTime` fields in the form the API server requires.
 */
import type { CustomObjectsApi } from "./api.ts";
import { describeError, logger } from "../log.ts";
import { apiMessage, apiStatus } from "./client.ts";

export interface LeaderElectionOptions {
  custom: CustomObjectsApi;
  namespace: string;
  name: string;
  identity: string;
  leaseDurationMs: number;
  /** How often the leader renews and a candidate retries; a third of the lease duration by default. */
  retryIntervalMs?: number;
  onStartedLeading: () => void;
  /** Called when the leader could not renew in time: it must stop acting at once. */
  onStoppedLeading: () => void;
}

interface LeaseObject {
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec?: {
    holderIdentity?: string;
    leaseDurationSeconds?: number;
    acquireTime?: string;
    renewTime?: string;
    leaseTransitions?: number;
  };
}

const lease = { group: "coordination.k8s.io", version: "v1", plural: "leases" } as const;

/** RFC 3339 with microseconds, as the API server's MicroTime wants it. */
export function microTime(date: Date): string {
  return date.toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

export class LeaderElector {
  readonly #options: LeaderElectionOptions;
  readonly #log = logger("leader-election");
  #leading = false;
  #lastRenew = 0;
  #stopped = false;
  #timer?: ReturnType<typeof setTimeout>;
  #wake?: () => void;
  #loop?: Promise<void>;

  constructor(options: LeaderElectionOptions) {
    this.#options = options;
  }

  get leading(): boolean {
    return this.#leading;
  }

  start(): void {
    this.#loop = this.#tick();
  }

  /** Stops competing; a leader releases the Lease so that a standby takes over at once. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#wake?.();
    await this.#loop;
    if (!this.#leading) return;
    this.#leading = false;
    try {
      const current = await this.#read();
      if (current?.spec?.holderIdentity === this.#options.identity) {
        await this.#write({
          ...current,
          spec: { ...current.spec, holderIdentity: "", leaseDurationSeconds: 1, renewTime: microTime(new Date()) },
        });
        this.#log.info("Released the Lease {namespace}/{name}", this.#where());
      }
    } catch (error) {
      this.#log.warn("Cannot release the Lease: {error}", { error: describeError(error) });
    }
  }

  async #tick(): Promise<void> {
    if (this.#stopped) return;
    const { leaseDurationMs, retryIntervalMs = Math.max(500, Math.floor(leaseDurationMs / 3)) } = this.#options;
    try {
      await this.#tryAcquireOrRenew();
    } catch (error) {
      this.#log.warn("Lease {namespace}/{name}: {error}", { ...this.#where(), error: describeError(error) });
    }
    if (this.#leading && Date.now() - this.#lastRenew > (leaseDurationMs * 2) / 3) {
      // Another instance may take the Lease soon: stop acting before it can.
      this.#leading = false;
      this.#log.error("Could not renew the Lease {namespace}/{name} in time; no longer the leader", this.#where());
      this.#options.onStoppedLeading();
      return;
    }
    if (this.#stopped) return;
    await new Promise<void>((resolve) => {
      this.#wake = resolve;
      this.#timer = setTimeout(resolve, retryIntervalMs);
    });
    return this.#tick();
  }

  async #tryAcquireOrRenew(): Promise<void> {
    const { identity, leaseDurationMs } = this.#options;
    const now = new Date();
    const durationSeconds = Math.ceil(leaseDurationMs / 1000);
    const current = await this.#read();
    if (current === undefined) {
      await this.#options.custom.createNamespacedCustomObject({
        ...lease,
        namespace: this.#options.namespace,
        body: {
          apiVersion: "coordination.k8s.io/v1",
          kind: "Lease",
          metadata: { name: this.#options.name, namespace: this.#options.namespace },
          spec: {
            holderIdentity: identity,
            leaseDurationSeconds: durationSeconds,
            acquireTime: microTime(now),
            renewTime: microTime(now),
            leaseTransitions: 0,
          },
        },
      });
      this.#won(now);
      return;
    }
    const spec = current.spec ?? {};
    const holder = spec.holderIdentity ?? "";
    const renewedAt = spec.renewTime ? Date.parse(spec.renewTime) : 0;
    const expired = now.getTime() > renewedAt + (spec.leaseDurationSeconds ?? 0) * 1000;
    if (holder !== identity && holder !== "" && !expired) {
      if (this.#leading) {
        this.#leading = false;
        this.#options.onStoppedLeading();
      }
      return;
    }
    const taking = holder !== identity;
    await this.#write({
      ...current,
      spec: {
        ...spec,
        holderIdentity: identity,
        leaseDurationSeconds: durationSeconds,
        renewTime: microTime(now),
        ...(taking ? { acquireTime: microTime(now), leaseTransitions: (spec.leaseTransitions ?? 0) + 1 } : {}),
      },
    });
    this.#won(now);
  }

  #won(at: Date): void {
    this.#lastRenew = at.getTime();
    if (this.#leading) return;
    this.#leading = true;
    this.#log.info("Became the leader on Lease {namespace}/{name} as {identity}", {
      ...this.#where(),
      identity: this.#options.identity,
    });
    this.#options.onStartedLeading();
  }

  async #read(): Promise<LeaseObject | undefined> {
    try {
      return await this.#options.custom.getNamespacedCustomObject({
        ...lease,
        namespace: this.#options.namespace,
        name: this.#options.name,
      }) as LeaseObject;
    } catch (error) {
      if (apiStatus(error) === 404) return undefined;
      throw new Error(`Cannot read the Lease: ${apiMessage(error)}`, { cause: error });
    }
  }

  async #write(object: LeaseObject): Promise<void> {
    try {
      await this.#options.custom.replaceNamespacedCustomObject({
        ...lease,
        namespace: this.#options.namespace,
        name: this.#options.name,
        body: { apiVersion: "coordination.k8s.io/v1", kind: "Lease", ...object },
      });
    } catch (error) {
      // 409: another instance wrote first; this round is lost.
      throw new Error(`Cannot write the Lease: ${apiMessage(error)}`, { cause: error });
    }
  }

  #where(): { namespace: string; name: string } {
    return { namespace: this.#options.namespace, name: this.#options.name };
  }
}
