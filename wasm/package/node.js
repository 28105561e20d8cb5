// Node (20+) and Deno entry: the wasm is read from beside this file and instantiated
// synchronously at import, so every export is ready to call.
import { readFileSync } from "node:fs";
import { initSync } from "./socksgate_wasm.js";

const exports = initSync({ module: readFileSync(new URL("./socksgate_wasm_bg.wasm", import.meta.url)) });

export * from "./socksgate_wasm.js";
export { inspectStream, inspectLines, inspectDocument } from "./stream.js";

/** Current size of the wasm linear memory in bytes (it only grows: the high-water mark). */
export function wasmMemoryBytes() {
  return exports.memory.buffer.byteLength;
}
