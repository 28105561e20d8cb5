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

/**
 * Inspects a capture given as a stream of bytes and answers with a stream of JSON lines
 * (UTF-8): one session object per line as its connection ends, then `{"capture": {...}}` —
 * the output of `socksgate inspect --json-lines`. Nothing is kept, and the capture is read as
 * the lines are consumed. Rejects (with the reason) if the first 64 KiB are not a capture; a
 * later failure ends the stream with the line `{"error": "…"}`.
 */
export function inspectLines(
  stream: ReadableStream<Uint8Array>,
  revealSecrets?: boolean,
): Promise<ReadableStream<Uint8Array>>;

/**
 * Inspects a capture given as a stream of bytes and answers with the JSON document (compact
 * UTF-8, byte for byte what `inspect(wholeFile)` returns) as a stream, holding neither the
 * document nor its sessions: the sessions wait deflated in wasm memory until the
 * capture facts that precede them are known. Resolves once the whole input is read; rejects
 * with the reason if it is not a capture.
 */
export function inspectDocument(
  stream: ReadableStream<Uint8Array>,
  revealSecrets?: boolean,
): Promise<ReadableStream<Uint8Array>>;
