/** The test cluster's throwaway PKI (made with openssl) and the kubeconfigs of its components and tests. */
import { join } from "node:path";

export interface KeyPair {
  cert: string;
  key: string;
}

export interface Pki {
  ca: string;
  serving: KeyPair;
  admin: KeyPair;
  controllerManager: KeyPair;
  scheduler: KeyPair;
  serviceAccountPrivateKey: string;
  serviceAccountPublicKey: string;
}

/** Every key of the throwaway PKI: new, unencrypted, valid for two days. */
const newKey = ["-newkey", "rsa:2048", "-noenc", "-days", "2"];

/**
 * A throwaway PKI under `dir/pki`: a CA, RSA keys for TLS, and an ECDSA key that only the Go components read. The
 * serving certificate names `serviceIp`, the kubernetes Service's address, as a real cluster's does.
 */
export async function createCertificates(dir: string, serviceIp: string): Promise<Pki> {
  const pki = join(dir, "pki");
  await Deno.mkdir(pki);
  const file = (name: string): string => join(pki, name);
  const ca = file("ca.crt");
  await openssl([
    "req",
    "-x509",
    ...newKey,
    "-keyout",
    file("ca.key"),
    "-out",
    ca,
    "-subj",
    "/CN=harness-ca",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  const issue = (name: string, subject: string, extensions: string[]): Promise<KeyPair> =>
    issueCertificate(pki, ca, name, subject, extensions);
  const client = ["extendedKeyUsage=clientAuth"];
  const serviceAccountPrivateKey = file("service-account.key");
  const serviceAccountPublicKey = file("service-account.pub");
  const [serving, admin, controllerManager, scheduler] = await Promise.all([
    issue("apiserver", "/CN=kube-apiserver", [
      "extendedKeyUsage=serverAuth",
      `subjectAltName=IP:127.0.0.1,DNS:localhost,IP:${serviceIp},DNS:kubernetes,DNS:kubernetes.default,` +
      "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local",
    ]),
    issue("admin", "/O=system:masters/CN=harness-admin", client),
    issue("kube-controller-manager", "/CN=system:kube-controller-manager", client),
    issue("kube-scheduler", "/CN=system:kube-scheduler", client),
    openssl([
      "genpkey",
      "-algorithm",
      "EC",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-out",
      serviceAccountPrivateKey,
    ]).then(() => openssl(["pkey", "-in", serviceAccountPrivateKey, "-pubout", "-out", serviceAccountPublicKey])),
  ]);
  return { ca, serving, admin, controllerManager, scheduler, serviceAccountPrivateKey, serviceAccountPublicKey };
}

/** Issues a certificate signed by the CA in `pki` (`ca.key` beside `ca`), as `<name>.crt` and `<name>.key`. */
export async function issueCertificate(
  pki: string,
  ca: string,
  name: string,
  subject: string,
  extensions: string[],
): Promise<KeyPair> {
  const pair = { cert: join(pki, `${name}.crt`), key: join(pki, `${name}.key`) };
  await openssl([
    "req",
    "-x509",
    "-CA",
    ca,
    "-CAkey",
    join(pki, "ca.key"),
    ...newKey,
    "-keyout",
    pair.key,
    "-out",
    pair.cert,
    "-subj",
    subject,
    "-addext",
    "basicConstraints=critical,CA:FALSE",
    "-addext",
    "keyUsage=critical,digitalSignature,keyEncipherment",
    ...extensions.flatMap((extension) => ["-addext", extension]),
  ]);
  return pair;
}

async function openssl(args: string[]): Promise<void> {
  const output = await new Deno.Command("openssl", { args, stdin: "null" }).output();
  if (!output.success) {
    const stderr = new TextDecoder().decode(output.stderr).trim();
    throw new Error(`Cannot run "openssl ${args.slice(0, 2).join(" ")}": exit code ${output.code}: ${stderr}`);
  }
}

/** Kubeconfig is YAML, and JSON is YAML: no serializer needed. */
export async function writeKubeconfig(path: string, server: string, ca: string, user: KeyPair): Promise<void> {
  const config = {
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "harness", cluster: { server, "certificate-authority": ca } }],
    users: [{ name: "harness", user: { "client-certificate": user.cert, "client-key": user.key } }],
    contexts: [{ name: "harness", context: { cluster: "harness", user: "harness" } }],
    "current-context": "harness",
  };
  await Deno.writeTextFile(path, JSON.stringify(config, null, 2));
}
