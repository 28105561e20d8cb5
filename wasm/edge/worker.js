// Edge example: a module worker (workerd, Cloudflare Workers) that takes a pcap/pcapng
// capture as the streamed body of a POST and answers with the inspector's sessions.
// The body is inspected chunk by chunk as it arrives.
//
//   curl -X POST -T capture.pcap http://127.0.0.1:8787/                 the JSON document
//   curl -X POST -T capture.pcap 'http://127.0.0.1:8787/?format=jsonl'  JSON lines, streamed
//   curl -X POST -T capture.pcap -H 'accept: application/x-ndjson' http://127.0.0.1:8787/
//   (?secrets=1 reveals passwords)
//
// The JSON document ({ capture, sessions }, the contract in inspect/README.md) starts with
// the capture facts, known only at the end: its sessions are written as they settle in
// first-packet order deflated in wasm memory (`inspectDocument`), and the answer — head,
// sessions, end — streams once the body is read, so neither the document nor its sessions
// are ever held as objects or one string. JSON lines (the format of
// `socksgate inspect --json-lines`: one session per line as its connection ends, then
// `{"capture": {...}}`) are streamed as they are found and nothing is kept: memory follows
// the connections alive in the capture, and the body is read only as fast as the client
// reads the answer. A capture that goes bad after its first 64 KiB ends the lines with
// `{"error": "…"}` (the status, 200, is sent by then).
//
// 200: the document or the lines; 422: not a capture ({ "error": "not a capture file: …" });
// 405: neither a POST nor `GET /wasm-memory`.
// `x-wasm-memory-bytes` tells the wasm linear memory's size once the body is read (the
// document) or when the lines start; `GET /wasm-memory` tells it at any time ({ "bytes": N }: it only
// grows, so this is the high-water mark of every request so far).
import { inspectDocument, inspectLines, wasmMemoryBytes } from "../www/pkg/workerd.js";

/** Whether the request asks for JSON lines rather than the document. */
function wantsLines(request, url) {
  const format = url.searchParams.get("format");
  if (format === "jsonl" || format === "ndjson") return true;
  return /\bapplication\/(x-)?ndjson\b|\bapplication\/jsonl\b/.test(request.headers.get("accept") ?? "");
}

export default {
  async fetch(request) {
    const url = new URL(request.url);
    if (request.method === "GET" && url.pathname === "/wasm-memory") {
      return Response.json({ bytes: wasmMemoryBytes() });
    }
    if (request.method !== "POST" || !request.body) {
      return Response.json(
        { error: "POST a pcap or pcapng capture as the request body" },
        { status: 405, headers: { allow: "POST" } },
      );
    }
    const reveal = url.searchParams.get("secrets") === "1";
    const lines = wantsLines(request, url);
    let answer;
    try {
      answer = await (lines ? inspectLines(request.body, reveal) : inspectDocument(request.body, reveal));
    } catch (e) {
      return Response.json(
        { error: String(e?.message ?? e) },
        { status: 422, headers: { "x-wasm-memory-bytes": String(wasmMemoryBytes()) } },
      );
    }
    const headers = { "x-wasm-memory-bytes": String(wasmMemoryBytes()) };
    if (lines) {
      return new Response(answer, { headers: { ...headers, "content-type": "application/x-ndjson" } });
    }
    return new Response(answer, { headers: { ...headers, "content-type": "application/json" } });
  },
};
