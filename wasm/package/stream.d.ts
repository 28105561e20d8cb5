/**
 * Inspects a capture given as a stream of bytes, chunk by chunk. Resolves to the JSON
 * document `{ capture, sessions }` (sessions in order of first packet); rejects with an Error
 * whose message says why the bytes are not a capture.
 */
export function inspectStream(
  stream: ReadableStream<Uint8Array>,
  revealSecrets?: boolean,
  onSession?: (session: Record<string, unknown>) => void,
): Promise<{ capture: Record<string, unknown>; sessions: Record<string, unknown>[] }>;
