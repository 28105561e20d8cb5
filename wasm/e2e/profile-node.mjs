// The page worker's work in Node, timed part by part: reads a capture in 64 KiB chunks (the
// size of Chromium's File.stream() chunks) into `Inspector.pushKeep`, then
// `finishInspection()` and `table()` — what www/worker.js does before the page draws — and
// prints MB/s, the time of each part, the process's CPU time and the wasm memory. Node's V8
// compiles the wasm as Chromium's does, so this is the engine's share of the page's time
// without a browser; run it under `node --cpu-prof` for a profile of the same work.
//
//   node e2e/profile-node.mjs FILE... [--runs N] [--chunk BYTES]
//   node --cpu-prof --cpu-prof-dir=/tmp/prof e2e/profile-node.mjs FILE
//
// Needs the built package (wasm/build.sh). A tool, not a test.
import { openSync, readSync, closeSync, statSync } from "node:fs";
import { cpuUsage } from "node:process";
import { Inspector, wasmMemoryBytes } from "../www/pkg/node.js";

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const at = args.indexOf(name);
  return at >= 0 ? Number(args[at + 1]) : fallback;
};
const runs = option("--runs", 1);
const chunkSize = option("--chunk", 64 * 1024);
const files = args.filter((a, i) => !a.startsWith("--") && !args[i - 1]?.startsWith("--"));
if (files.length === 0) throw new Error("usage: node e2e/profile-node.mjs FILE... [--runs N] [--chunk BYTES]");

for (const file of files) {
  const bytes = statSync(file).size;
  for (let run = 0; run < runs; run++) {
    const cpu0 = cpuUsage();
    const t0 = performance.now();
    const fd = openSync(file, "r");
    const chunk = new Uint8Array(chunkSize);
    const inspector = new Inspector(false);
    let reading = 0;
    let kept = 0;
    try {
      for (;;) {
        const r0 = performance.now();
        const n = readSync(fd, chunk, 0, chunkSize, null);
        reading += performance.now() - r0;
        if (n === 0) break;
        kept = inspector.pushKeep(n === chunkSize ? chunk : chunk.subarray(0, n));
      }
      const t1 = performance.now();
      const inspection = inspector.finishInspection();
      const t2 = performance.now();
      const table = inspection.table();
      const t3 = performance.now();
      const cpu = cpuUsage(cpu0);
      const count = table.count;
      table.free();
      inspection.free();
      const ms = t2 - t0;
      console.log(`${file.split("/").pop()} (${(bytes / 1e6).toFixed(1)} MB): ` +
        `${(bytes / 1e6 / (ms / 1000)).toFixed(1)} MB/s to the last session ` +
        `(push ${((t1 - t0 - reading) / 1000).toFixed(3)} s + reading the file ${(reading / 1000).toFixed(3)} s, ` +
        `finishInspection ${((t2 - t1) / 1000).toFixed(3)} s), table ${((t3 - t2) / 1000).toFixed(3)} s; ` +
        `${count} sessions (${kept} ended during the pushes); CPU ${(cpu.user / 1e6).toFixed(2)} s user + ` +
        `${(cpu.system / 1e6).toFixed(2)} s system; wasm memory ${(wasmMemoryBytes() / 2 ** 20).toFixed(0)} MiB`);
    } finally {
      closeSync(fd);
      try { inspector.free(); } catch { /* consumed by finishInspection */ }
    }
  }
}
