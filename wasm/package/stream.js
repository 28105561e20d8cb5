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
  const encoder = new TextEncoder();
  let freed = false;
  const free = () => {
    if (!freed) {
      freed = true;
      inspector.free();
    }
  };
  // Lines from the first bytes, held until the stream is read.
  let pending = "";
  let ended = false;
  try {
    while (inspector.bytesRead < SETTLE_BYTES) {
      const { done, value } = await reader.read();
      if (done) {
        pending += inspector.finishLines();
        ended = true;
        break;
      }
      pending += inspector.pushLines(value);
    }
  } catch (e) {
    free();
    reader.cancel(e).catch(() => {});
    throw e;
  }
  return new ReadableStream({
    async pull(controller) {
      try {
        // One input chunk per pull, skipping chunks that end no session, so the consumer's
        // pace (backpressure) is what drives reading.
        while (pending === "" && !ended) {
          const { done, value } = await reader.read();
          if (done) {
            pending = inspector.finishLines();
            ended = true;
          } else {
            pending = inspector.pushLines(value);
          }
        }
      } catch (e) {
        pending = `${JSON.stringify({ error: String(e?.message ?? e) })}\n`;
        ended = true;
        reader.cancel(e).catch(() => {});
      }
      if (pending !== "") {
        controller.enqueue(encoder.encode(pending));
        pending = "";
      }
      if (ended) {
        free();
        controller.close();
      }
    },
    cancel(reason) {
      free();
      return reader.cancel(reason);
    },
  });
}
