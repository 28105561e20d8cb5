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
