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
