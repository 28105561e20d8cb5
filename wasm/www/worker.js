// Runs the inspector off the main thread. Message in: { file: File|Blob, reveal: bool }.
// Messages out: { type: "progress", done, total } … then { type: "done", json, ms } or
// { type: "error", message }.
import init, { inspectWithProgress, version } from "./pkg/socksgate_wasm.js";

const ready = init();

self.onmessage = async (event) => {
  const { file, reveal } = event.data;
  try {
    await ready;
    const bytes = new Uint8Array(await file.arrayBuffer());
    const t0 = performance.now();
    const json = inspectWithProgress(bytes, reveal, (done, total) => {
      self.postMessage({ type: "progress", done, total });
    });
    const ms = performance.now() - t0;
    self.postMessage({ type: "done", json, ms, bytes: bytes.length, version: version() });
  } catch (e) {
    self.postMessage({ type: "error", message: String(e && e.message ? e.message : e) });
  }
};
