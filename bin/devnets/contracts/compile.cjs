// Compiles every *.sol here with the solc pinned by package-lock.json (solcjs) from
// standard JSON input with fixed settings, and writes <out>/<Name>.json holding the
// contract's ABI and creation bytecode, formatted deterministically (2-space JSON,
// trailing newline). Run through scripts/contracts, which also checks the committed
// artifacts. Usage: node compile.cjs <out-dir>
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const outDir = process.argv[2];
if (!outDir) {
  console.error("usage: node compile.cjs <out-dir>");
  process.exit(2);
}
const sources = {};
for (const file of fs.readdirSync(__dirname).filter((f) => f.endsWith(".sol")).sort()) {
  sources[file] = { content: fs.readFileSync(path.join(__dirname, file), "utf8") };
}
// Fixed settings: the artifacts depend on nothing but the sources and the solc version.
// Cancun is what Base runs; no metadata hash, so a comment edit does not change bytecode.
const input = {
  language: "Solidity",
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    metadata: { bytecodeHash: "none", appendCBOR: false },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const message of output.errors || []) console.error(message.formattedMessage.trim());
if (errors.length > 0) process.exit(1);

fs.mkdirSync(outDir, { recursive: true });
for (const file of Object.keys(sources)) {
  const name = path.basename(file, ".sol");
  const contract = output.contracts[file][name];
  if (!contract) {
    console.error(`${file} does not define a contract named ${name}`);
    process.exit(1);
  }
  const artifact = {
    contractName: name,
    sourceName: file,
    compiler: `solc ${solc.version()}`,
    abi: contract.abi,
    bytecode: "0x" + contract.evm.bytecode.object,
  };
  fs.writeFileSync(path.join(outDir, `${name}.json`), JSON.stringify(artifact, null, 2) + "\n");
}
