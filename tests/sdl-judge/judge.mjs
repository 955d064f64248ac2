// The judge of Morpheus's SDL synthesis: Akash's own SDK (`@akashnetwork/chain-sdk`,
// pinned in package-lock.json) reads each SDL YAML file named on the command line and
// prints one JSON line per file:
//   {"file", "manifestSortedJSON", "manifestVersion" (hex), "groups"}
// or {"file", "error"} when the SDK rejects the SDL.
// workflows/tests/sdl_sdk.rs runs it and compares Rust's answers with these.
import { readFileSync } from "node:fs";
import { SDL } from "@akashnetwork/chain-sdk";

// groups() holds resource values as bytes (the chain's ResourceValue.val is the ASCII
// decimal); they are printed as that decimal string so that the output is plain JSON.
function bytesAsText(value) {
  if (value instanceof Uint8Array) return new TextDecoder().decode(value);
  if (Array.isArray(value)) return value.map(bytesAsText);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, bytesAsText(v)]));
  }
  return value;
}

for (const file of process.argv.slice(2)) {
  try {
    const sdl = SDL.fromString(readFileSync(file, "utf8"), "beta3");
    const version = await sdl.manifestVersion();
    console.log(JSON.stringify({
      file,
      manifestSortedJSON: sdl.manifestSortedJSON(),
      manifestVersion: Buffer.from(version).toString("hex"),
      groups: bytesAsText(sdl.groups()),
    }));
  } catch (error) {
    console.log(JSON.stringify({ file, error: String(error && error.message || error) }));
  }
}
