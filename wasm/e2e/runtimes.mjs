// The socksgate-wasm package (www/pkg, built by build.sh) in every runtime it is for, and the
// edge example in workerd:
//
// - the JSON document of every test capture is identical from the CLI (`socksgate inspect
//   FILE --json`), Node 20 (the package's node entry, file streamed), Deno (npm `deno`, same
//   entry), Chromium (the web entry + stream.js on Blob.stream(), Debian's /usr/bin/chromium)
//   and workerd (npm `workerd`: edge/worker.js, the capture POSTed with chunked encoding);
// - the session table in columns (`Inspection.table()`, read by www/table.js as the page does)
//   gives exactly the summary document's sessions for every test capture;
// - the TypeScript declarations type-check a typical use (`deno check e2e/typecheck.ts`);
// - workerd answers a non-capture with HTTP 422 and a readable message;
// - workerd takes a ≥ 150 MiB synthetic capture generated as a stream (chunked POST) and its
//   wasm memory stays under 64 MiB;
// - asked for JSON lines (`?format=jsonl` or `Accept: application/x-ndjson`), workerd answers
//   every test capture with exactly the lines of `socksgate inspect FILE --json-lines`, a
//   non-capture with 422, and streams the ≥ 150 MiB capture and 60,000 handshake-only
//   connections (the shape that exhausted the isolate as a document) as they are found: the
//   first lines arrive while the POST is still being sent, the wasm memory stays under
//   64 MiB and the workerd process under 256 MiB peak RSS;
// - the document streamed piece by piece (`inspectDocument`, the edge worker's answer) is
//   byte for byte `inspect(wholeFile)` in Node and in workerd, and workerd answers the 60,000
//   handshake-only connections as a document too (HTTP 200, every session, wasm memory under
//   64 MiB, workerd under 384 MiB peak RSS).
//
//   SOCKSGATE_BIN=target/debug/socksgate node e2e/runtimes.mjs
import { spawn, execFileSync } from "node:child_process";
import { createReadStream, readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { request } from "node:http";
import { createServer } from "node:net";
import { once } from "node:events";
import { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { serve } from "./serve.mjs";
import { synthCapture, expectedSessions } from "./synth-stream.mjs";
import { inspect, inspectStream, inspectDocument, wasmMemoryBytes, Inspection } from "../www/pkg/node.js";
import { sessionsFromTable, tableParts } from "../www/table.js";

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const BIN = process.env.SOCKSGATE_BIN ?? here("../../target/debug/socksgate");
const FIXTURES = ["sample.pcap", "curl-lo.pcapng", "gssapi-kerberos.pcap"].map((f) => here(`../tests/fixtures/${f}`));
const MiB = 1 << 20;
const canonical = (json) => JSON.stringify(typeof json === "string" ? JSON.parse(json) : json);
const children = [];
const log = (...a) => console.log("runtimes:", ...a);

async function freePort() {
  const s = createServer();
  await new Promise((ok) => s.listen(0, "127.0.0.1", ok));
  const { port } = s.address();
  await new Promise((ok) => s.close(ok));
  return port;
}

/** POSTs `chunks` (an iterable of Buffers) with chunked encoding; resolves to { status, headers, body }. */
function post(port, chunks, { path = "/", headers = {} } = {}) {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, method: "POST", path,
      headers: { "content-type": "application/vnd.tcpdump.pcap", ...headers } }, (res) => {
      const parts = [];
      res.on("data", (d) => parts.push(d));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers,
        body: Buffer.concat(parts).toString() }));
      res.on("error", reject);
    });
    req.on("error", reject);
    (async () => {
      for (const chunk of chunks) {
        if (!req.write(chunk)) await once(req, "drain");
      }
      req.end();
    })().catch(reject);
  });
}

/**
 * POSTs `chunks` asking for JSON lines and reads the answer line by line without keeping it:
 * resolves to { status, sessions (objects, one per line but the last), last (the last line
 * parsed), sentBeforeFirstLine (bytes of the POST sent when the first line arrived), sent }.
 * `keep(session)` decides which session objects are kept (all by default).
 */
function postLines(port, chunks, keep = () => true) {
  return new Promise((resolve, reject) => {
    let sent = 0;
    let sentBeforeFirstLine = -1;
    const req = request({ host: "127.0.0.1", port, method: "POST", path: "/?format=jsonl",
      headers: { "content-type": "application/vnd.tcpdump.pcap" } }, (res) => {
      const sessions = [];
      let count = 0;
      let rest = "";
      let previous = null;
      res.setEncoding("utf8");
      res.on("data", (d) => {
        if (sentBeforeFirstLine < 0) sentBeforeFirstLine = sent;
        const lines = (rest + d).split("\n");
        rest = lines.pop();
        for (const line of lines) {
          if (previous !== null) {
            count++;
            if (keep(previous)) sessions.push(previous);
          }
          previous = JSON.parse(line);
        }
      });
      res.on("end", () => {
        if (rest !== "") reject(new Error(`unterminated last line: ${rest.slice(0, 200)}`));
        resolve({ status: res.statusCode, headers: res.headers, sessions, count, last: previous,
          sentBeforeFirstLine, sent });
      });
      res.on("error", reject);
    });
    req.on("error", reject);
    (async () => {
      for (const chunk of chunks) {
        sent += chunk.length;
        if (!req.write(chunk)) await once(req, "drain");
      }
      req.end();
    })().catch(reject);
  });
}

/**
 * POSTs `chunks` for the JSON document and reads it without keeping it: resolves to { status,
 * head (the first bytes), capture (the head's capture object), sessions (how many
 * `"first_frame":` keys, one per session), tail (the last bytes), received, sent, memory }.
 */
function postDocument(port, chunks) {
  return new Promise((resolve, reject) => {
    let sent = 0;
    const req = request({ host: "127.0.0.1", port, method: "POST", path: "/",
      headers: { "content-type": "application/vnd.tcpdump.pcap" } }, (res) => {
      const key = '"first_frame":';
      let head = "";
      let carry = "";
      let sessions = 0;
      let received = 0;
      res.setEncoding("utf8");
      res.on("data", (d) => {
        received += Buffer.byteLength(d);
        if (head.length < 4096) head += d.slice(0, 4096);
        const text = carry + d;
        for (let at = text.indexOf(key); at >= 0; at = text.indexOf(key, at + key.length)) sessions++;
        carry = text.slice(-(key.length - 1));
        // A key split over two chunks is counted once: the carry is shorter than the key.
      });
      res.on("end", () => {
        let capture = null;
        const m = /^\{"capture":(\{[^{}]*\}),"sessions":\[/.exec(head);
        if (m) capture = JSON.parse(m[1]);
        resolve({ status: res.statusCode, head, capture, sessions, tail: carry, received, sent,
          memory: Number(res.headers["x-wasm-memory-bytes"]) });
      });
      res.on("error", reject);
    });
    req.on("error", reject);
    (async () => {
      for (const chunk of chunks) {
        sent += chunk.length;
        if (!req.write(chunk)) await once(req, "drain");
      }
      req.end();
    })().catch(reject);
  });
}

/** Peak RSS (VmHWM) of a process, in bytes. */
function peakRss(pid) {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : NaN;
}

function* pieces(bytes, size) {
  for (let at = 0; at < bytes.length; at += size) yield bytes.subarray(at, at + size);
}

let failed = false;
try {
  // The reference: the CLI.
  const expected = new Map();
  for (const f of FIXTURES) expected.set(f, canonical(execFileSync(BIN, ["inspect", f, "--json"]).toString()));
  log("CLI", BIN);

  // Node 20: the package's node entry, the file streamed from disk.
  for (const f of FIXTURES) {
    const report = await inspectStream(Readable.toWeb(createReadStream(f, { highWaterMark: 4096 })));
    assert.equal(canonical(report), expected.get(f), `node: ${f}`);
  }
  for (const f of FIXTURES) {
    const answer = await inspectDocument(Readable.toWeb(createReadStream(f, { highWaterMark: 4096 })));
    const text = await new Response(answer).text();
    assert.equal(text, inspect(await readFile(f), false), `node inspectDocument: ${f}`);
  }
  log(`node ${process.version}: identical (inspectDocument byte for byte); wasm memory ${wasmMemoryBytes()} bytes`);
  // The page's session table in columns (Inspection.table() read by www/table.js) is the
  // summary document's sessions, key for key and in the same key order, passwords revealed or not.
  for (const f of FIXTURES) {
    for (const reveal of [false, true]) {
      const inspection = new Inspection(readFileSync(f), reveal);
      const sessions = sessionsFromTable(tableParts(inspection.table()));
      assert.equal(JSON.stringify(sessions), JSON.stringify(JSON.parse(inspection.summaryJson()).sessions),
        `table: ${f} (reveal ${reveal})`);
      assert.deepEqual(JSON.parse(inspection.captureJson()), JSON.parse(expected.get(f)).capture, `capture: ${f}`);
      inspection.free();
    }
  }
  log("session table in columns: the summary's sessions for every fixture");

  // Deno (npm `deno`): the same entry.
  const deno = here("../node_modules/.bin/deno");
  for (const f of FIXTURES) {
    const out = execFileSync(deno, ["run", "--quiet", "--no-prompt", `--allow-read=${here("../")}`,
      here("./deno-inspect.mjs"), f], { env: { ...process.env, DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" } });
    assert.equal(canonical(out.toString()), expected.get(f), `deno: ${f}`);
  }
  log(execFileSync(deno, ["--version"]).toString().split("\n")[0] + ": identical");
  // The TypeScript declarations: a typical use type-checks (Deno's TypeScript).
  execFileSync(deno, ["check", "--quiet", here("./typecheck.ts")], { stdio: "inherit",
    env: { ...process.env, DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" } });
  log("deno check: the declarations type-check");

  // Chromium: the web entry (init fetches the .wasm) and stream.js on a Blob's stream.
  const server = await serve(0);
  const url = `http://127.0.0.1:${server.address().port}/`;
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"] });
  try {
    const page = await browser.newPage();
    await page.goto(url);
    for (const f of FIXTURES) {
      const bytes = [...(await readFile(f))];
      const json = await page.evaluate(async (bytes) => {
        const web = await import("/pkg/socksgate_wasm.js");
        await web.default();
        const { inspectStream } = await import("/pkg/stream.js");
        const blob = new Blob([new Uint8Array(bytes)]);
        return JSON.stringify(await inspectStream(blob.stream()));
      }, bytes);
      assert.equal(canonical(json), expected.get(f), `chromium: ${f}`);
    }
    log(`chromium ${browser.version()}: identical`);
  } finally {
    await browser.close();
    server.close();
  }

  // workerd (npm `workerd`) running the edge example.
  const port = await freePort();
  const workerd = spawn(here("../node_modules/.bin/workerd"),
    ["serve", here("../edge/workerd.capnp"), "--socket-addr", `http=127.0.0.1:${port}`],
    { stdio: ["ignore", "pipe", "pipe"] });
  children.push(workerd);
  let workerdLog = "";
  workerd.stdout.on("data", (d) => (workerdLog += d));
  workerd.stderr.on("data", (d) => (workerdLog += d));
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const r = await post(port, []);
      if (r.status) break;
    } catch (e) {
      if (Date.now() > deadline || workerd.exitCode !== null) throw new Error(`workerd did not start: ${e}\n${workerdLog}`);
      await new Promise((ok) => setTimeout(ok, 200));
    }
  }
  for (const f of FIXTURES) {
    const r = await post(port, pieces(await readFile(f), 1000));
    assert.equal(r.status, 200, `workerd: ${f}: ${r.body}`);
    assert.equal(canonical(r.body), expected.get(f), `workerd: ${f}`);
    assert.equal(r.body, inspect(await readFile(f), false), `workerd: ${f}: not byte for byte inspect()`);
  }
  log("workerd: identical");

  const bad = await post(port, [Buffer.from("<html>this is a web page, not a capture</html>\n")]);
  assert.equal(bad.status, 422, bad.body);
  assert.match(JSON.parse(bad.body).error, /^not a capture file: expected pcap .* found 3c 68 74 6d$/);
  log("workerd: non-capture → 422:", JSON.parse(bad.body).error);

  // JSON lines: exactly the CLI's --json-lines, whichever way they are asked for.
  for (const f of FIXTURES) {
    const want = execFileSync(BIN, ["inspect", f, "--json-lines"]).toString();
    const byQuery = await post(port, pieces(await readFile(f), 1000), { path: "/?format=jsonl" });
    const byAccept = await post(port, pieces(await readFile(f), 777), { headers: { accept: "application/x-ndjson" } });
    for (const r of [byQuery, byAccept]) {
      assert.equal(r.status, 200, `workerd lines: ${f}: ${r.body}`);
      assert.equal(r.headers["content-type"], "application/x-ndjson");
      assert.deepEqual(r.body.split("\n").map((l) => l && canonical(l)), want.split("\n").map((l) => l && canonical(l)),
        `workerd lines: ${f}`);
    }
  }
  log("workerd: JSON lines identical to socksgate inspect --json-lines");
  const badLines = await post(port, [Buffer.from("<html>this is a web page, not a capture</html>\n")], { path: "/?format=jsonl" });
  assert.equal(badLines.status, 422, badLines.body);
  assert.match(JSON.parse(badLines.body).error, /^not a capture file: /);

  // Streamed lines for the big capture and for many handshake-only connections: bounded memory.
  for (const shape of [{}, { connections: 60_000, segments: 0 }]) {
    const t0 = Date.now();
    const want = expectedSessions(shape);
    const r = await postLines(port, synthCapture(shape),
      (s) => !(s.bytes_up === want.bytesUp && s.dst_host === "example.com" && s.reply_code === 0));
    const secs = (Date.now() - t0) / 1000;
    assert.equal(r.status, 200);
    assert.equal(r.sessions.length, 0, `unexpected sessions: ${JSON.stringify(r.sessions.slice(0, 2))}`);
    assert.equal(r.count, want.count);
    assert.deepEqual(Object.keys(r.last), ["capture"], JSON.stringify(r.last));
    assert.equal(r.last.capture.bytes, r.sent);
    assert.ok(r.sentBeforeFirstLine >= 0 && r.sentBeforeFirstLine < r.sent,
      `the first line came after the whole POST (${r.sentBeforeFirstLine} of ${r.sent} bytes)`);
    const memory = JSON.parse((await new Promise((ok, fail) => {
      const q = request({ host: "127.0.0.1", port, path: "/wasm-memory" }, (res) => {
        let b = ""; res.on("data", (d) => (b += d)); res.on("end", () => ok(b));
      });
      q.on("error", fail);
      q.end();
    }))).bytes;
    assert.ok(memory > 0 && memory < 64 * MiB, `wasm memory ${memory} bytes`);
    const rss = peakRss(workerd.pid);
    assert.ok(rss < 256 * MiB, `workerd peak RSS ${rss} bytes`);
    log(`workerd lines: ${(r.sent / 1e6).toFixed(1)} MB, ${r.count} sessions streamed in ${secs.toFixed(1)} s ` +
      `(first line after ${(r.sentBeforeFirstLine / 1e6).toFixed(1)} MB sent), wasm memory ${(memory / MiB).toFixed(1)} MiB, ` +
      `workerd peak RSS ${(rss / MiB).toFixed(0)} MiB`);
  }

  // The document of 60,000 handshake-only connections (HTTP 500 when it was built whole):
  // counted as it arrives, not kept.
  {
    const shape = { connections: 60_000, segments: 0 };
    const t0 = Date.now();
    const r = await postDocument(port, synthCapture(shape));
    const secs = (Date.now() - t0) / 1000;
    assert.equal(r.status, 200, r.head.slice(0, 500));
    assert.equal(r.sessions, expectedSessions(shape).count);
    assert.equal(r.capture.bytes, r.sent);
    assert.ok(r.tail.endsWith("}]}"), r.tail);
    assert.ok(r.memory > 0 && r.memory < 64 * MiB, `wasm memory ${r.memory} bytes`);
    // The sessions wait deflated in wasm memory and no part of them crosses into JS while the
    // body is read; what the process adds is the body's chunks and the 16 KiB answer pieces,
    // garbage collected late. 193-214 MiB measured (the high-water mark, so including the lines
    // above; load average 4); with the parts through a JS CompressionStream it was ~270 MiB.
    const rss = peakRss(workerd.pid);
    assert.ok(rss < 256 * MiB, `workerd peak RSS ${rss} bytes`);
    log(`workerd document: ${(r.sent / 1e6).toFixed(1)} MB in, ${(r.received / 1e6).toFixed(1)} MB of JSON out, ` +
      `${r.sessions} sessions in ${secs.toFixed(1)} s, wasm memory ${(r.memory / MiB).toFixed(1)} MiB, ` +
      `workerd peak RSS ${(rss / MiB).toFixed(0)} MiB`);
  }

  const t = Date.now();
  let sent = 0;
  const counted = (function* () { for (const c of synthCapture()) { sent += c.length; yield c; } })();
  const big = await post(port, counted);
  const secs = (Date.now() - t) / 1000;
  assert.equal(big.status, 200, big.body.slice(0, 500));
  assert.ok(sent >= 150 * MiB, `${sent} bytes sent`);
  const report = JSON.parse(big.body);
  const want = expectedSessions();
  assert.equal(report.capture.bytes, sent);
  assert.equal(report.sessions.length, want.count);
  assert.ok(report.sessions.every((s) => s.bytes_up === want.bytesUp && s.dst_host === "example.com" && s.reply_code === 0));
  const memory = Number(big.headers["x-wasm-memory-bytes"]);
  assert.ok(memory > 0 && memory < 64 * MiB, `wasm memory ${memory} bytes`);
  log(`workerd: ${(sent / 1e6).toFixed(1)} MB chunked POST in ${secs.toFixed(1)} s, ${report.sessions.length} sessions, wasm memory ${(memory / MiB).toFixed(1)} MiB`);
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  for (const c of children) c.kill();
}
if (failed) process.exit(1);
console.log("runtimes: all checks passed");
