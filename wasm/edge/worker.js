// Edge example: a module worker (workerd, Cloudflare Workers) that takes a pcap/pcapng
// capture as the streamed body of a POST and answers with the inspector's JSON document.
// The body is inspected chunk by chunk as it arrives: the worker's memory follows the
// connections alive in the capture, not its size, so captures far larger than the
// isolate's memory limit work.
//
//   curl -X POST -T capture.pcap http://127.0.0.1:8787/          (?secrets=1 reveals passwords)
//
// 200: the JSON document ({ capture, sessions }, the contract in inspect/README.md);
// 422: not a capture ({ "error": "not a capture file: …" }); 405: not a POST.
// `x-wasm-memory-bytes` tells the wasm linear memory's size after the request.
import { inspectStream, wasmMemoryBytes } from "../www/pkg/workerd.js";

export default {
  async fetch(request) {
    if (request.method !== "POST" || !request.body) {
      return Response.json(
        { error: "POST a pcap or pcapng capture as the request body" },
        { status: 405, headers: { allow: "POST" } },
      );
    }
    const reveal = new URL(request.url).searchParams.get("secrets") === "1";
    let report;
    try {
      report = await inspectStream(request.body, reveal);
    } catch (e) {
      return Response.json(
        { error: String(e?.message ?? e) },
        { status: 422, headers: { "x-wasm-memory-bytes": String(wasmMemoryBytes()) } },
      );
    }
    return Response.json(report, {
      headers: { "x-wasm-memory-bytes": String(wasmMemoryBytes()) },
    });
  },
};
