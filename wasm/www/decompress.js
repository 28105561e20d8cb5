// Compressed captures, recognised by their first bytes: gzip through the browser's
// DecompressionStream, zstd through the package's ZstdDecoder (wasm; browsers'
// DecompressionStream has no zstd). Used by the worker (inspection) and by the pcap export.
import init, { ZstdDecoder } from "./pkg/socksgate_wasm.js";

const GZIP = [0x1f, 0x8b];
const ZSTD = [0x28, 0xb5, 0x2f, 0xfd];
let ready = null;

/** A TransformStream decompressing zstd chunk by chunk. */
function zstdStream() {
  const decoder = new ZstdDecoder();
  return new TransformStream({
    transform(chunk, controller) {
      const out = decoder.push(chunk);
      if (out.byteLength > 0) controller.enqueue(out);
    },
    flush(controller) {
      try {
        const out = decoder.finish();
        if (out.byteLength > 0) controller.enqueue(out);
      } finally {
        decoder.free();
      }
    },
  });
}

/** `stream` (the bytes of `file`) decompressed if `file` is gzip or zstd, else as it is. */
export async function decompressed(file, stream) {
  const head = new Uint8Array(await file.slice(0, 4).arrayBuffer());
  if (GZIP.every((b, i) => head[i] === b)) return stream.pipeThrough(new DecompressionStream("gzip"));
  if (ZSTD.every((b, i) => head[i] === b)) {
    // The wasm module is instantiated once per thread (the worker has done it already).
    ready ??= init();
    await ready;
    return stream.pipeThrough(zstdStream());
  }
  return stream;
}
