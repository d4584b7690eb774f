/**
 * The shared secret of push mode's webhooks, read from the Secret that `--webhook-secret` names
 * (`namespace/name:key`). The manager reads it again at each resync, so a rotated secret is picked up without a
 * restart. The value is registered with the log redactor and never logged.
 */
import type { CoreV1Api } from "../kube/api.ts";
import { decodeSecretData } from "../kube/client.ts";
import { describeError, logger, registerSecret } from "../log.ts";

export class WebhookSecret {
  readonly #log = logger("webhook");
  #value?: string;

  /** `reference` is `namespace/name:key`, checked by the configuration; empty when push mode is off. */
  constructor(readonly reference: string, readonly core: CoreV1Api) {}

  /** The secret, or undefined while none is configured or it cannot be read (webhooks are then refused). */
  get value(): string | undefined {
    return this.#value;
  }

  /** Reads the Secret; on failure, logs why and refuses webhooks until a later read succeeds. */
  async load(): Promise<void> {
    if (this.reference === "") return;
    const [namespace, rest] = this.reference.split("/");
    const [name, key] = rest.split(":");
    try {
      const secret = await this.core.readNamespacedSecret({ namespace, name });
      const encoded = secret.data?.[key];
      if (encoded === undefined) throw new Error(`Secret ${namespace}/${name} has no key "${key}"`);
      const value = decodeSecretData(encoded).trim();
      registerSecret(value);
      this.#value = value;
    } catch (error) {
      this.#log.warn("Cannot read the webhook secret {secret}; webhooks are refused: {error}", {
        secret: this.reference,
        error: describeError(error),
      });
      this.#value = undefined;
    }
  }
}
