// Where the edge worker's time goes: runs edge/workerd.capnp in workerd with its DevTools
// inspector, starts V8's sampling CPU profiler, POSTs a capture (chunked) asking for JSON
// lines (or the document), and prints the self time per function, heaviest first, with the
// share of wasm code (the engine: functions from the .wasm), wasm-bindgen glue, the stream
// helper and the rest (workerd internals, idle waiting for the body).
//
//   node --experimental-websocket e2e/profile-workerd.mjs FILE [--document] [--top N]
//
// Needs the built package (wasm/build.sh) and npm's workerd (npm ci). A tool, not a test.
import { spawn } from "node:child_process";
import { createReadStream, statSync } from "node:fs";
import { request } from "node:http";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const args = process.argv.slice(2);
const file = args.find((a) => !a.startsWith("--") && !/^\d+$/.test(a));
const documentForm = args.includes("--document");
const top = Number(args[args.indexOf("--top") + 1]) || 25;
if (!file) throw new Error("usage: node --experimental-websocket e2e/profile-workerd.mjs FILE [--document] [--top N]");

async function freePort() {
  const s = createServer();
  await new Promise((ok) => s.listen(0, "127.0.0.1", ok));
  const { port } = s.address();
  await new Promise((ok) => s.close(ok));
  return port;
}

const get = (port, path) => new Promise((ok, fail) => {
  const q = request({ host: "127.0.0.1", port, path }, (res) => {
    let b = "";
    res.on("data", (d) => (b += d));
    res.on("end", () => ok(b));
  });
  q.on("error", fail);
  q.end();
});

const port = await freePort();
const inspectorPort = await freePort();
const workerd = spawn(here("../node_modules/.bin/workerd"),
  ["serve", here("../edge/workerd.capnp"), "--socket-addr", `http=127.0.0.1:${port}`,
    "--inspector-addr", `127.0.0.1:${inspectorPort}`], { stdio: ["ignore", "inherit", "inherit"] });
try {
  for (let i = 0; ; i++) {
    try { await get(port, "/wasm-memory"); break; } catch (e) {
      if (i > 150) throw e;
      await new Promise((ok) => setTimeout(ok, 200));
    }
  }
  const targets = JSON.parse(await get(inspectorPort, "/json/list"));
  const ws = new WebSocket(targets[0].webSocketDebuggerUrl);
  await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = fail; });
  let nextId = 1;
  const pending = new Map();
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.id && pending.has(msg.id)) {
      pending.get(msg.id)(msg);
      pending.delete(msg.id);
    }
  };
  const send = (method, params = {}) => new Promise((ok) => {
    const id = nextId++;
    pending.set(id, ok);
    ws.send(JSON.stringify({ id, method, params }));
  });
  await send("Profiler.enable");
  await send("Profiler.setSamplingInterval", { interval: 200 });
  await send("Profiler.start");

  const t0 = performance.now();
  const bytes = statSync(file).size;
  const status = await new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, method: "POST", path: documentForm ? "/" : "/?format=jsonl",
      headers: { "transfer-encoding": "chunked" } }, (res) => {
      res.on("data", () => {});
      res.on("end", () => resolve(res.statusCode));
    });
    req.on("error", reject);
    createReadStream(file, { highWaterMark: 256 * 1024 }).pipe(req);
  });
  const secs = (performance.now() - t0) / 1000;
  const { result } = await send("Profiler.stop");
  ws.close();

  const { nodes, samples, timeDeltas } = result.profile;
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const self = new Map();
  for (let i = 0; i < samples.length; i++) {
    self.set(samples[i], (self.get(samples[i]) ?? 0) + (timeDeltas[i] ?? 0));
  }
  const perFunction = new Map();
  const perGroup = new Map();
  let total = 0;
  for (const [id, us] of self) {
    const { callFrame } = byId.get(id);
    const name = callFrame.functionName || "(anonymous)";
    const url = callFrame.url ?? "";
    const group = url.endsWith(".wasm") || url.startsWith("wasm://") ? "wasm (engine)"
      : url.includes("socksgate_wasm.js") ? "wasm-bindgen glue"
      : url.includes("stream.js") ? "stream helper (stream.js)"
      : ["(idle)", "(program)", "(garbage collector)"].includes(name) ? name : "other JS / workerd";
    const key = `${name}  [${url.split("/").pop() || "-"}]`;
    perFunction.set(key, (perFunction.get(key) ?? 0) + us);
    perGroup.set(group, (perGroup.get(group) ?? 0) + us);
    total += us;
  }
  console.log(`${documentForm ? "document" : "JSON lines"}: HTTP ${status}, ${(bytes / 1e6).toFixed(1)} MB in ${secs.toFixed(2)} s ` +
    `(${(bytes / 1e6 / secs).toFixed(1)} MB/s); ${samples.length} samples over ${(total / 1e6).toFixed(2)} s`);
  const pct = (us) => `${((100 * us) / total).toFixed(1).padStart(5)} %`;
  console.log("\nby part:");
  for (const [g, us] of [...perGroup].sort((a, b) => b[1] - a[1])) console.log(`  ${pct(us)}  ${g}`);
  console.log(`\ntop ${top} functions (self time):`);
  for (const [f, us] of [...perFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`  ${pct(us)}  ${f}`);
} finally {
  workerd.kill();
}
