// Runs the inspector off the main thread and keeps the result for the detail pane.
// In:  { type: "inspect", file: File|Blob, reveal: bool }
//      { type: "session", index }          -> one session with its messages
//      { type: "full" }                     -> the whole contract document (for export)
// Out: { type: "progress", done, total }, { type: "done", json, ms, bytes, version },
//      { type: "session", index, json }, { type: "full", json }, { type: "error", message }
import init, { Inspection, version } from "./pkg/socksgate_wasm.js";

const ready = init();
let current = null;

self.onmessage = async (event) => {
  const m = event.data;
  try {
    await ready;
    if (m.type === "inspect") {
      if (current) { current.free(); current = null; }
      const bytes = new Uint8Array(await m.file.arrayBuffer());
      const t0 = performance.now();
      current = new Inspection(bytes, m.reveal, (done, total) => {
        self.postMessage({ type: "progress", done, total });
      });
      const ms = performance.now() - t0;
      self.postMessage({ type: "done", json: current.summaryJson(), ms, bytes: bytes.length, version: version() });
    } else if (m.type === "session") {
      self.postMessage({ type: "session", index: m.index, json: current.sessionJson(m.index) });
    } else if (m.type === "full") {
      self.postMessage({ type: "full", json: current.fullJson() });
    }
  } catch (e) {
    self.postMessage({ type: "error", message: String(e && e.message ? e.message : e) });
  }
};
