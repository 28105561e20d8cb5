// Types of the Node/Deno and workerd entries: the wasm is initialised at import.
export * from "./socksgate_wasm.js";
export { inspectStream, inspectLines, inspectDocument } from "./stream.js";
/** Current size of the wasm linear memory in bytes (it only grows: the high-water mark). */
export function wasmMemoryBytes(): number;
