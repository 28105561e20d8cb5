// workerd / Cloudflare Workers entry: a module worker imports the .wasm as a compiled
// WebAssembly.Module (no fetch, no eval), instantiated synchronously at import.
import module from "./socksgate_wasm_bg.wasm";
import { initSync } from "./socksgate_wasm.js";

const exports = initSync({ module });

export * from "./socksgate_wasm.js";
export { inspectStream, inspectLines, inspectDocument } from "./stream.js";

/** Current size of the wasm linear memory in bytes (it only grows: the high-water mark). */
export function wasmMemoryBytes() {
  return exports.memory.buffer.byteLength;
}
