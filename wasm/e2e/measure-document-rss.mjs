// The workerd process's memory while the edge worker answers one synthetic handshake-only
// capture as the JSON document: a fresh `workerd serve edge/workerd.capnp`, the capture of
// e2e/synth-stream.mjs POSTed, /proc/PID/status VmRSS sampled every 20 ms and split at the
// answer's first byte (the body is read whole before it), then VmHWM and the wasm memory
// (x-wasm-memory-bytes). Figures in wasm/README.md ("Speed").
//
//   node e2e/measure-document-rss.mjs [CONNECTIONS]        (default 60000; needs ./build.sh)
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { request } from "node:http";
import { fileURLToPath } from "node:url";
import { synthCapture } from "./synth-stream.mjs";
const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const conns = Number(process.argv[2] ?? 60000);
const port = 18000 + Math.floor(Math.random() * 1000); // a clash only fails this run
const w = spawn(here("../node_modules/.bin/workerd"), ["serve", here("../edge/workerd.capnp"), "--socket-addr", `http=127.0.0.1:${port}`], { stdio: "ignore" });
const st = (k) => { const m = new RegExp(k + ":\\s+(\\d+) kB").exec(readFileSync(`/proc/${w.pid}/status`, "utf8")); return m ? Number(m[1]) / 1024 : NaN; };
await new Promise((ok) => setTimeout(ok, 1500));
const base = st("VmRSS"); const t0 = Date.now();
let phase = "in", maxIn = 0, maxOut = 0, firstByte = 0, wm;
const iv = setInterval(() => { const r = st("VmRSS"); if (phase === "in") maxIn = Math.max(maxIn, r); else maxOut = Math.max(maxOut, r); }, 20);
let sent = 0, received = 0;
await new Promise((ok, fail) => {
  const q = request({ host: "127.0.0.1", port, method: "POST", path: "/" }, (res) => {
    wm = res.headers["x-wasm-memory-bytes"];
    res.on("data", (d) => { if (!received) { phase = "out"; firstByte = Date.now() - t0; } received += d.length; });
    res.on("end", ok);
  });
  q.on("error", fail);
  (async () => { for (const c of synthCapture({ connections: conns, segments: 0 })) { sent += c.length; if (!q.write(c)) await new Promise((r) => q.once("drain", r)); } q.end(); })();
});
clearInterval(iv);
console.log(`base ${base.toFixed(0)} MiB conns ${conns} sent ${(sent/1e6).toFixed(1)} MB recv ${(received/1e6).toFixed(1)} MB; first byte ${firstByte} ms total ${Date.now()-t0} ms; maxRSS in ${maxIn.toFixed(0)} MiB out ${maxOut.toFixed(0)} MiB; HWM ${st("VmHWM").toFixed(0)} MiB; wasm ${(wm/1048576).toFixed(1)} MiB`);
w.kill();
