// The judge of Morpheus's Akash message encoding: Akash's own SDK
// (`@akashnetwork/chain-sdk`, pinned in package-lock.json) decodes protobuf bytes that
// the `cosmos` executor wrote, with the SDK's generated codecs, and prints what it read.
//
// Input: one JSON object per line on stdin, either
//   {"type_url": "/akash.deployment.v1beta4.MsgCreateDeployment", "value_b64": "…"}
// (one message, as packed in an Any) or
//   {"tx_b64": "…"}
// (a signed TxRaw: its body's messages are decoded by their type URLs).
// Output: one JSON line per input line, in order:
//   {"type_url", "message": <the codec's toJSON>, "reencoded_b64": <the SDK's own
//    encoding of what it decoded>}
//   {"tx": {"messages": [<as above>], "memo", "timeout_height", "auth_info", "signatures"}}
// or {"error": "…"} when the SDK cannot read the input (unknown type URL, bad bytes).
// executors/tests/akash_messages.rs runs it and compares the fields with what it encoded.
import { readFileSync } from "node:fs";
import * as akashV1beta4 from "@akashnetwork/chain-sdk/private-types/akash.v1beta4";
import * as akashV1beta5 from "@akashnetwork/chain-sdk/private-types/akash.v1beta5";
import * as cosmosV1beta1 from "@akashnetwork/chain-sdk/private-types/cosmos.v1beta1";

// Every codec of these packages, by the type URL a message is packed under.
const codecs = new Map();
for (const module of [akashV1beta4, akashV1beta5, cosmosV1beta1]) {
  for (const codec of Object.values(module)) {
    if (codec && typeof codec.$type === "string" && typeof codec.decode === "function") {
      codecs.set(`/${codec.$type}`, codec);
    }
  }
}

const base64 = (bytes) => Buffer.from(bytes).toString("base64");

function decodeMessage(typeUrl, bytes) {
  const codec = codecs.get(typeUrl);
  if (!codec) throw new Error(`the SDK has no codec for ${typeUrl}`);
  const decoded = codec.decode(bytes);
  return {
    type_url: typeUrl,
    message: codec.toJSON(decoded),
    reencoded_b64: base64(codec.encode(decoded).finish()),
  };
}

function decodeTx(bytes) {
  const raw = cosmosV1beta1.TxRaw.decode(bytes);
  const body = cosmosV1beta1.TxBody.decode(raw.bodyBytes);
  const authInfo = cosmosV1beta1.AuthInfo.decode(raw.authInfoBytes);
  return {
    messages: body.messages.map((any) => decodeMessage(any.typeUrl, any.value)),
    memo: body.memo,
    timeout_height: String(body.timeoutHeight),
    auth_info: cosmosV1beta1.AuthInfo.toJSON(authInfo),
    signatures: raw.signatures.map(base64),
  };
}

const lines = readFileSync(0, "utf8").split("\n").filter((line) => line.trim() !== "");
for (const line of lines) {
  try {
    const input = JSON.parse(line);
    if (typeof input.tx_b64 === "string") {
      console.log(JSON.stringify({ tx: decodeTx(Buffer.from(input.tx_b64, "base64")) }));
    } else if (typeof input.type_url === "string" && typeof input.value_b64 === "string") {
      console.log(JSON.stringify(decodeMessage(input.type_url, Buffer.from(input.value_b64, "base64"))));
    } else {
      throw new Error('expected {"type_url", "value_b64"} or {"tx_b64"}');
    }
  } catch (error) {
    console.log(JSON.stringify({ error: String((error && error.message) || error) }));
  }
}
