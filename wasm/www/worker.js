// Runs the inspector off the main thread and keeps the result for the detail pane.
// The file is read as a stream (File.stream()) through the chunked Inspector, so the wasm
// memory holds the connections alive at one point of the capture, not the file; a gzip file
// (.pcap.gz, .pcapng.gz: recognised by its first bytes) is decompressed on the way
// (DecompressionStream), a zstd file (.pcap.zst, .pcapng.zst) by the package's ZstdDecoder
// (decompress.js). Progress counts the file's bytes read.
// In:  { type: "inspect", file: File|Blob, reveal: bool }
//      { type: "session", index }          -> one session with its messages
//      { type: "full" }                     -> the whole contract document (for export)
// Out: { type: "progress", done, total },
//      { type: "done", capture (JSON), table (the sessions in columns: table.js), ms, bytes,
//        version, wasmMemory },
//      { type: "session", index, json }, { type: "full", json }, { type: "error", message }
import init, { Inspector, version } from "./pkg/socksgate_wasm.js";
import { decompressed } from "./decompress.js";
import { tableParts, transferables } from "./table.js";

const ready = init();
let current = null; // the last Inspection (sessions kept in wasm memory, compact)
let run = 0;

async function captureStream(file, onBytes) {
  let done = 0;
  const counted = file.stream().pipeThrough(new TransformStream({
    transform(chunk, controller) {
      done += chunk.byteLength;
      onBytes(done);
      controller.enqueue(chunk);
    },
  }));
  return decompressed(file, counted);
}

self.onmessage = async (event) => {
  const m = event.data;
  try {
    await ready;
    if (m.type === "inspect") {
      const mine = ++run;
      if (current) { current.free(); current = null; }
      const total = m.file.size;
      const t0 = performance.now();
      let next = 0;
      const stream = await captureStream(m.file, (done) => {
        // About every MiB, as the batch inspection did.
        if (done >= next || done === total) {
          next = done + (1 << 20);
          self.postMessage({ type: "progress", done, total });
        }
      });
      const inspector = new Inspector(m.reveal);
      try {
        const reader = stream.getReader();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          inspector.pushKeep(value);
        }
        if (mine !== run) return;
        current = inspector.finishInspection();
      } finally {
        inspector.free();
      }
      const ms = performance.now() - t0;
      // The linear memory's size after the run (it only grows): what the capture cost.
      const wasmMemory = (await ready).memory.buffer.byteLength;
      // The sessions in columns, their buffers moved to the page, not copied: with 200,000
      // sessions a JSON summary took seconds to build, copy and parse.
      const table = tableParts(current.table());
      self.postMessage({ type: "done", capture: current.captureJson(), table, ms, bytes: total,
        version: version(), wasmMemory }, transferables(table));
    } else if (m.type === "session") {
      self.postMessage({ type: "session", index: m.index, json: current.sessionJson(m.index) });
    } else if (m.type === "full") {
      self.postMessage({ type: "full", json: current.fullJson() });
    }
  } catch (e) {
    self.postMessage({ type: "error", message: String(e && e.message ? e.message : e) });
  }
};
