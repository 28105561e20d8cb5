// The inspector beside tshark on the same captures, in one run: time and peak memory of
//
//   - tshark -r FILE > /dev/null                (Debian's tshark; RSS from /usr/bin/time)
//   - socksgate inspect FILE --json-lines       (the CLI, streaming; RSS from /usr/bin/time)
//   - socksgate inspect FILE --json             (the CLI, whole document sorted)
//   - the page in Chromium                      (File.stream() through the worker; time from
//                                                choosing the file to the table showing
//                                                every session counted and its first rows, and the
//                                                worker's own reading-to-last-session MB/s;
//                                                the worker's wasm memory)
//   - the edge worker in workerd                (the file POSTed with chunked encoding, asking
//                                                for JSON lines (streamed), then for the JSON
//                                                document; the workerd process's peak RSS and
//                                                the isolate's wasm memory)
//
// and prints a Markdown table (the one in wasm/README.md and inspect/README.md, "Speed").
//
//   node e2e/bench.mjs FILE...            measure these captures
//   node e2e/bench.mjs --workerd-only FILE  only the edge worker's columns
//   node e2e/bench.mjs --chromium-only FILE only the page's column (quick before/after runs)
//   node e2e/bench.mjs --generate         generate the two captures of the figures first
//                                         (synth: ~200 MB with payload, and ~200 MB of
//                                         handshake-only connections, 220k) in $TMPDIR
//
// Needs the release CLI (SOCKSGATE_BIN, default target/release/socksgate), the built package
// (wasm/build.sh), /usr/bin/time, tshark, /usr/bin/chromium and npm's workerd (npm ci). A
// benchmark, not a test: `SOCKSGATE_CI_SOAK=1 wasm/ci.sh` runs it.
import { spawn, spawnSync, execFileSync } from "node:child_process";
import { createReadStream, statSync, mkdtempSync, rmSync, readFileSync } from "node:fs";
import { request } from "node:http";
import { createServer } from "node:net";
import { once } from "node:events";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { serve } from "./serve.mjs";

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const ROOT = here("../../");
const BIN = process.env.SOCKSGATE_BIN ?? join(ROOT, "target/release/socksgate");
const MB = 1e6;
const MiB = 1 << 20;
const children = [];

/** Runs `cmd args` under /usr/bin/time, stdout to /dev/null: { secs, rssKiB }. */
function timed(cmd, args) {
  const r = spawnSync("/usr/bin/time", ["-f", "%e %M", cmd, ...args], {
    stdio: ["ignore", "ignore", "pipe"], maxBuffer: 64 * MiB,
  });
  const err = r.stderr.toString().trim();
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: exit ${r.status}: ${err}`);
  // The last line of stderr is time's (tshark may warn before it).
  const [secs, rssKiB] = err.split("\n").pop().split(" ").map(Number);
  return { secs, rssKiB };
}

async function freePort() {
  const s = createServer();
  await new Promise((ok) => s.listen(0, "127.0.0.1", ok));
  const { port } = s.address();
  await new Promise((ok) => s.close(ok));
  return port;
}

/** Peak RSS (VmHWM) of a process, in KiB. */
function peakRss(pid) {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : NaN;
}

/**
 * POSTs a file with chunked encoding, as a JSON document or (`lines`) asking for JSON lines,
 * which are counted as they arrive and not kept (lines by their newlines, the document's
 * sessions by their `"first_frame":` keys — it can be larger than a JS string may be):
 * { status, secs, memory (wasm bytes), sessions }.
 */
function postFile(port, file, lines = false) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = request({ host: "127.0.0.1", port, method: "POST", path: lines ? "/?format=jsonl" : "/",
      headers: { "content-type": "application/vnd.tcpdump.pcap", "transfer-encoding": "chunked" } }, (res) => {
      const key = Buffer.from('"first_frame":');
      let carry = Buffer.alloc(0);
      let keys = 0;
      let newlines = 0;
      res.on("data", (d) => {
        if (lines) {
          for (const b of d) if (b === 10) newlines++;
          return;
        }
        const text = Buffer.concat([carry, d]);
        for (let at = text.indexOf(key); at >= 0; at = text.indexOf(key, at + key.length)) keys++;
        carry = text.subarray(Math.max(0, text.length - (key.length - 1)));
      });
      res.on("end", async () => {
        // Lines: the last is {"capture": …}.
        const sessions = res.statusCode !== 200 ? NaN : lines ? newlines - 1 : keys;
        const secs = (performance.now() - t0) / 1000;
        // The lines' header is sent at their start: ask the isolate for its memory now.
        let memory = Number(res.headers["x-wasm-memory-bytes"]);
        if (lines) memory = await wasmMemory(port).catch(() => NaN);
        resolve({ status: res.statusCode, secs, memory, sessions });
      });
      res.on("error", reject);
    });
    req.on("error", reject);
    createReadStream(file, { highWaterMark: 256 * 1024 }).pipe(req);
  });
}

/** The worker's wasm memory (GET /wasm-memory: the high-water mark so far), in bytes. */
function wasmMemory(port) {
  return new Promise((ok, fail) => {
    const q = request({ host: "127.0.0.1", port, path: "/wasm-memory" }, (res) => {
      let b = "";
      res.on("data", (d) => (b += d));
      res.on("end", () => { try { ok(JSON.parse(b).bytes); } catch (e) { fail(e); } });
    });
    q.on("error", fail);
    q.end();
  });
}

async function startWorkerd() {
  const port = await freePort();
  const workerd = spawn(here("../node_modules/.bin/workerd"),
    ["serve", here("../edge/workerd.capnp"), "--socket-addr", `http=127.0.0.1:${port}`],
    { stdio: ["ignore", "pipe", "pipe"] });
  children.push(workerd);
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      await new Promise((ok, fail) => {
        const r = request({ host: "127.0.0.1", port, method: "GET", path: "/" }, (res) => { res.resume(); res.on("end", ok); });
        r.on("error", fail);
        r.end();
      });
      return { port, pid: workerd.pid };
    } catch (e) {
      if (Date.now() > deadline || workerd.exitCode !== null) throw new Error(`workerd did not start: ${e}`);
      await new Promise((ok) => setTimeout(ok, 200));
    }
  }
}

async function chromiumRun(file) {
  const server = await serve(0);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  try {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${server.address().port}/`);
    const t0 = performance.now();
    await page.setInputFiles("#file", file);
    await page.waitForSelector("body[data-mbps]", { timeout: 900_000 });
    // Until the table shows the sessions (every one counted, the first rows drawn).
    await page.waitForFunction(() => /^(\d+) of \1 sessions$/.test(document.getElementById("count").textContent) &&
      document.querySelector("#sessions tbody tr[data-n]") !== null, null, { timeout: 900_000, polling: 20 });
    const secs = (performance.now() - t0) / 1000;
    const mbps = Number(await page.getAttribute("body", "data-mbps"));
    const memory = Number(await page.getAttribute("body", "data-wasm-memory") ?? NaN);
    return { secs, mbps, memory };
  } finally {
    await browser.close();
    server.close();
  }
}

function generate() {
  const dir = mkdtempSync(join(tmpdir(), "socksgate-bench-"));
  const synth = join(ROOT, "target/release/examples/synth");
  execFileSync("cargo", ["build", "--locked", "--release", "-q", "-p", "socksgate-inspect", "--example", "synth"],
    { cwd: ROOT, stdio: "inherit" });
  const big = join(dir, "big.pcap");
  const small = join(dir, "handshakes.pcap");
  execFileSync(synth, [big, "200"], { stdio: "inherit" });
  execFileSync(synth, [small, "200", "--bulk", "0"], { stdio: "inherit" });
  return { dir, files: [big, small] };
}

const mbps = (bytes, secs) => (bytes / MB / secs).toFixed(0);
const mib = (kib) => (kib / 1024).toFixed(0);

let generated;
let failed = false;
try {
  let files = process.argv.slice(2).filter((a) => !a.startsWith("--"));
  if (process.argv.includes("--generate")) {
    generated = generate();
    files = generated.files;
  }
  if (files.length === 0) throw new Error("usage: node e2e/bench.mjs [--generate] [FILE...]");
  const edgeOnly = process.argv.includes("--workerd-only");
  const pageOnly = process.argv.includes("--chromium-only");
  const workerd = pageOnly ? null : await startWorkerd();
  const rows = [];
  for (const file of files) {
    const bytes = statSync(file).size;
    const name = `${file.split("/").pop()} (${(bytes / MB).toFixed(1)} MB)`;
    const skip = { secs: NaN, rssKiB: NaN, mbps: NaN };
    const cliOff = edgeOnly || pageOnly;
    const tshark = cliOff ? skip : timed("tshark", ["-n", "-r", file]);
    const lines = cliOff ? skip : timed(BIN, ["inspect", file, "--json-lines"]);
    const whole = cliOff ? skip : timed(BIN, ["inspect", file, "--json"]);
    const page = edgeOnly ? skip : await chromiumRun(file);
    // The lines first: a failed document may leave the isolate's memory grown.
    const edgeLines = pageOnly ? null : await postFile(workerd.port, file, true);
    const edgeLinesRss = pageOnly ? NaN : peakRss(workerd.pid);
    const edge = pageOnly ? null : await postFile(workerd.port, file);
    const cli = (r) => (cliOff ? "—" : `${r.secs.toFixed(2)} s, ${mbps(bytes, r.secs)} MB/s, ${mib(r.rssKiB)} MiB`);
    // A failure is a figure too (e.g. a document too large for the isolate).
    const edgeCell = (r) => (r === null ? "—" : r.status === 200
      ? `${r.secs.toFixed(2)} s, ${mbps(bytes, r.secs)} MB/s, ${r.sessions} sessions, wasm ${(r.memory / MiB).toFixed(1)} MiB`
      : `HTTP ${r.status} after ${r.secs.toFixed(2)} s`);
    const row = [name, cli(tshark), cli(lines), cli(whole),
      edgeOnly ? "—" : `${page.secs.toFixed(2)} s, ${mbps(bytes, page.secs)} MB/s (in the worker ${page.mbps.toFixed(0)} MB/s)` +
        (Number.isFinite(page.memory) ? `, wasm ${(page.memory / MiB).toFixed(0)} MiB` : ""),
      pageOnly ? "—" : `${edgeCell(edgeLines)}; workerd peak RSS ${mib(edgeLinesRss)} MiB`,
      edgeCell(edge),
    ];
    rows.push(row);
    console.error(`bench: ${row.join(" | ")}`);
  }
  const workerdRss = pageOnly ? NaN : peakRss(workerd.pid);
  console.log("| capture | tshark -r | inspect --json-lines | inspect --json | Chromium page | workerd, JSON lines | workerd, document |");
  console.log("|---|---|---|---|---|---|---|");
  for (const r of rows) console.log(`| ${r.join(" | ")} |`);
  console.log(`\n(time, throughput, peak RSS${pageOnly ? "" : `; workerd process peak RSS over the run: ${mib(workerdRss)} MiB`}; load average ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")})`);
} catch (e) {
  failed = true;
  console.error("bench:", e?.stack ?? e);
} finally {
  for (const c of children) c.kill();
  if (generated) rmSync(generated.dir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
