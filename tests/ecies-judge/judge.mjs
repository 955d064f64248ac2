// The eciesjs side of Morpheus's sealed-secret round trip (tests/tests/secrets.rs).
//
//   node judge.mjs open <secret key hex>   stdin: sealed:v1:<base64>   stdout: plaintext
//   node judge.mjs seal <public key hex>   stdin: plaintext            stdout: sealed:v1:<base64>
//
// eciesjs's default configuration is the one Morpheus seals with: secp256k1, an
// uncompressed ephemeral key, AES-256-GCM with a 16-byte nonce. It is left as it is, so
// a change of either side's defaults shows up here as a failed round trip.
import { decrypt, encrypt, ECIES_CONFIG } from "eciesjs";

const PREFIX = "sealed:v1:";

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks);
}

function fail(message) {
  process.stderr.write(`judge: ${message}\n`);
  process.exit(2);
}

const [mode, keyHex] = process.argv.slice(2);
if (!keyHex || (mode !== "open" && mode !== "seal")) {
  fail("usage: judge.mjs open <secret key hex> | seal <public key hex>");
}
if (
  ECIES_CONFIG.ellipticCurve !== "secp256k1" ||
  ECIES_CONFIG.isEphemeralKeyCompressed ||
  ECIES_CONFIG.symmetricAlgorithm !== "aes-256-gcm" ||
  ECIES_CONFIG.symmetricNonceLength !== 16
) {
  fail("eciesjs's default configuration is not the one Morpheus uses");
}

const input = await readStdin();
if (mode === "open") {
  const text = input.toString("utf8").trim();
  if (!text.startsWith(PREFIX)) fail(`input does not start with ${PREFIX}`);
  const sealed = Buffer.from(text.slice(PREFIX.length), "base64");
  process.stdout.write(Buffer.from(decrypt(keyHex, sealed)));
} else {
  const sealed = Buffer.from(encrypt(keyHex, input));
  process.stdout.write(PREFIX + sealed.toString("base64") + "\n");
}
