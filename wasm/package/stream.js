// Inspects a capture given as a ReadableStream of bytes (a streamed request body,
// File.stream(), a fetch response) chunk by chunk: the wasm memory holds the connections
// alive at one point of the capture, never the whole file. Needs an initialised module (the
// node/workerd entries are; on the web, `await init()` first).
import { Inspector } from "./socksgate_wasm.js";

/**
 * @param {ReadableStream<Uint8Array>} stream the capture (pcap/pcapng)
 * @param {boolean} [revealSecrets] include RFC 1929 passwords
 * @param {(session: Record<string, unknown>) => void} [onSession] called for each session as its connection ends
 * @returns {Promise<{ capture: Record<string, unknown>, sessions: Record<string, unknown>[] }>}
 *   the JSON document, sessions in order of first packet
 */
export async function inspectStream(stream, revealSecrets = false, onSession = undefined) {
  const inspector = new Inspector(revealSecrets);
  const sessions = [];
  try {
    const reader = stream.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      for (const session of JSON.parse(inspector.push(value))) {
        sessions.push(session);
        onSession?.(session);
      }
    }
    const report = JSON.parse(inspector.finish());
    for (const session of report.sessions) onSession?.(session);
    report.sessions = sessions.concat(report.sessions).sort((a, b) => a.first_frame - b.first_frame);
    return report;
  } finally {
    inspector.free();
  }
}

/** Bytes inspected before `inspectLines` settles: enough for any capture header to be judged. */
const SETTLE_BYTES = 64 * 1024;

/**
 * Lines `inspectLines` may have ready before the consumer takes them. With the default queue
 * (one chunk) reading stopped each time a chunk of lines waited to be sent, so the capture
 * was read in turns with the answer; a small queue lets both go on at once (workerd, the
 * 209.8 MB payload capture: 25.3 s before, see wasm/README.md "Speed") and still bounds what
 * is held.
 */
const LINES_QUEUE_BYTES = 1 << 20;

/**
 * Inspects a capture given as a ReadableStream of bytes and answers with a ReadableStream of
 * JSON lines (UTF-8): one session object per line as its connection ends, then the last line
 * `{"capture": {...}}` — the output of `socksgate inspect --json-lines`. Nothing is kept:
 * memory follows the connections alive in the capture, and the capture is read only as fast
 * as the lines are consumed (the returned stream pulls).
 *
 * Resolves once the first 64 KiB (or the whole input, if shorter) are inspected, so that a
 * non-capture rejects here with the reason; a later failure (a capture cut short or corrupt
 * past its start) ends the stream with the line `{"error": "…"}`.
 *
 * @param {ReadableStream<Uint8Array>} stream the capture (pcap/pcapng)
 * @param {boolean} [revealSecrets] include RFC 1929 passwords
 * @returns {Promise<ReadableStream<Uint8Array>>}
 */
export async function inspectLines(stream, revealSecrets = false) {
  const inspector = new Inspector(revealSecrets);
  const reader = stream.getReader();
  let freed = false;
  const free = () => {
    if (!freed) {
      freed = true;
      inspector.free();
    }
  };
  // Lines (UTF-8, straight from wasm memory: no JS string on the way) from the first bytes,
  // held until the stream is read.
  let pending = [];
  let ended = false;
  const keep = (bytes) => {
    if (bytes.length > 0) pending.push(bytes);
  };
  try {
    while (inspector.bytesRead < SETTLE_BYTES) {
      const { done, value } = await reader.read();
      if (done) {
        keep(inspector.finishLinesBytes());
        ended = true;
        break;
      }
      keep(inspector.pushLinesBytes(value));
    }
  } catch (e) {
    free();
    reader.cancel(e).catch(() => {});
    throw e;
  }
  return new ReadableStream({
    async pull(controller) {
      try {
        // Input chunks until some lines are ready; pull is called again while the queue holds
        // less than LINES_QUEUE_BYTES, so the consumer's pace (backpressure) still bounds reading.
        while (pending.length === 0 && !ended) {
          const { done, value } = await reader.read();
          if (done) {
            keep(inspector.finishLinesBytes());
            ended = true;
          } else {
            keep(inspector.pushLinesBytes(value));
          }
        }
      } catch (e) {
        pending.push(new TextEncoder().encode(`${JSON.stringify({ error: String(e?.message ?? e) })}\n`));
        ended = true;
        reader.cancel(e).catch(() => {});
      }
      for (const bytes of pending) controller.enqueue(bytes);
      pending = [];
      if (ended) {
        free();
        controller.close();
      }
    },
    cancel(reason) {
      free();
      return reader.cancel(reason);
    },
  }, new ByteLengthQueuingStrategy({ highWaterMark: LINES_QUEUE_BYTES }));
}

/**
 * Largest piece of the document's sessions handed to the answer at a time. Smaller pieces
 * left workerd less garbage to collect late (60,000 handshake-only connections, peak RSS:
 * 16 KiB ~175 MiB, 64 KiB ~190 MiB, 256 KiB ~200 MiB).
 */
const DOCUMENT_PIECE_BYTES = 16 * 1024;

/**
 * Inspects a capture given as a ReadableStream of bytes and answers with the JSON document
 * (compact UTF-8, byte for byte `inspect(wholeFile)`) as a ReadableStream — without ever
 * holding the document or its sessions as objects. The document's `capture` facts come first
 * but are known only at the end of input, so the `sessions` array is kept, as the sessions
 * settle in first-packet order, deflated in wasm memory (`pushDocumentKept`: no part of it
 * crosses into JS while the input is read); at the end the stream gives the head, the
 * sessions inflated in pieces of at most 16 KiB as the answer is read (backpressure), and
 * the rest. Memory: the wasm side holds the live connections (as for `inspectLines`) and the
 * compressed sessions (a few percent of the document).
 *
 * Resolves once the whole input is read (rejects with the reason if it is not a capture or
 * fails on the way, so an HTTP answer can still carry an error status).
 *
 * @param {ReadableStream<Uint8Array>} stream the capture (pcap/pcapng)
 * @param {boolean} [revealSecrets] include RFC 1929 passwords
 * @returns {Promise<ReadableStream<Uint8Array>>}
 */
export async function inspectDocument(stream, revealSecrets = false) {
  const inspector = new Inspector(revealSecrets);
  const reader = stream.getReader();
  let freed = false;
  const free = () => {
    if (!freed) {
      freed = true;
      inspector.free();
    }
  };
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      inspector.pushDocumentKept(value);
    }
    inspector.finishDocumentKept();
  } catch (e) {
    free();
    reader.cancel(e).catch(() => {});
    throw e;
  }
  return new ReadableStream({
    pull(controller) {
      try {
        const piece = inspector.readDocument(DOCUMENT_PIECE_BYTES);
        if (piece.length > 0) {
          controller.enqueue(piece);
          return;
        }
      } catch (e) {
        free();
        controller.error(e);
        return;
      }
      free();
      controller.close();
    },
    cancel() {
      free();
    },
  }, new ByteLengthQueuingStrategy({ highWaterMark: LINES_QUEUE_BYTES }));
}
