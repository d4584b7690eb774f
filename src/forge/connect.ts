/** Makes the right client for a forge: detects its kind and version, refuses versions the operator cannot serve. */
import {
  checkSupported,
  detectForge,
  type ForgeClient,
  type ForgeDetector,
  type ForgeVersion,
} from "./forge_client.ts";
import { ForgeHttp, type ForgeHttpOptions } from "./forge_http.ts";
import { ForgejoClient } from "./forgejo_client.ts";
import { GiteaClient } from "./gitea_client.ts";

/** The client for a forge whose kind and version are known. */
export function createForgeClient(forge: ForgeVersion, options: ForgeHttpOptions): ForgeClient {
  return forge.kind === "forgejo" ? new ForgejoClient({ ...options, forge }) : new GiteaClient({ ...options, forge });
}

/** Detects the forge at `options.baseUrl` (through `detector`'s memory when given) and makes its client. */
export async function connectForge(options: ForgeHttpOptions, detector?: ForgeDetector): Promise<ForgeClient> {
  const http = new ForgeHttp(options);
  const forge = checkSupported(await (detector ? detector.detect(http) : detectForge(http)));
  return createForgeClient(forge, options);
}

/**
 * Clients for many groups' forges made with the same settings (timeout, request observer): each takes its group's
 * base URL and token, and detection goes through one `detector`, so a forge is asked once, not once per group.
 */
export class ForgeConnector {
  readonly #shared: Omit<ForgeHttpOptions, "baseUrl" | "token">;
  readonly #detector?: ForgeDetector;

  constructor(shared: Omit<ForgeHttpOptions, "baseUrl" | "token">, detector?: ForgeDetector) {
    this.#shared = shared;
    this.#detector = detector;
  }

  /** Detects the forge at `baseUrl` (or recalls it) and makes its client. */
  connect(baseUrl: string, token: string): Promise<ForgeClient> {
    return connectForge({ ...this.#shared, baseUrl, token }, this.#detector);
  }

  /** The client for a forge whose kind and version are known already. */
  clientFor(forge: ForgeVersion, baseUrl: string, token: string): ForgeClient {
    return createForgeClient(forge, { ...this.#shared, baseUrl, token });
  }
}
