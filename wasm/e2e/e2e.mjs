// End-to-end test of the inspector page in Debian's Chromium (no browser download):
// serve wasm/www on 127.0.0.1, load a capture, see the sessions, sort and filter, open one,
// see its fields and a highlighted byte range, export CSV, and get a clear error for a file
// that is not a capture; the same capture gzip-compressed; then a real loopback capture with a
// UDP ASSOCIATE session; axe-core finds no accessibility violation in the light or the dark
// colour scheme (dark.png).
// Screenshots: e2e/out/{inspector,error,udp}.png.
//
//   node e2e/e2e.mjs                 the test
//   node e2e/e2e.mjs --bench FILE    parse FILE in the page and print MB/s
import { chromium } from "playwright-core";
import AxeBuilder from "@axe-core/playwright";
import { mkdir, writeFile, readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { serve } from "./serve.mjs";
import { synthCapture } from "./synth-stream.mjs";

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const FIXTURE = here("../tests/fixtures/sample.pcap");
const OUT = here("./out/");
// The CLI re-opens the exported pcap (wasm/ci.sh builds it).
const SOCKSGATE = process.env.SOCKSGATE_BIN ?? here("../../target/debug/socksgate");

/** Fails with the rule ids and elements if axe finds any violation on the page as it is. */
async function axeClean(page, what) {
  const result = await new AxeBuilder({ page }).withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]).analyze();
  const found = result.violations.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  assert.deepEqual(found, [], `axe (${what})`);
}

const server = await serve(0);
const url = `http://127.0.0.1:${server.address().port}/`;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"],
});
let failed = false;
try {
  // A context of its own (axe needs one): light colour scheme.
  const context = await browser.newContext({ viewport: { width: 1500, height: 1000 }, acceptDownloads: true, colorScheme: "light" });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  // Nothing may leave the browser: fail on any request that is not to our server.
  page.on("request", (r) => { if (!r.url().startsWith(url) && !r.url().startsWith("blob:") && !r.url().startsWith("data:")) errors.push("external request: " + r.url()); });
  await page.goto(url);

  const bench = process.argv.indexOf("--bench");
  if (bench > 0) {
    const file = process.argv[bench + 1];
    await page.setInputFiles("#file", file);
    await page.waitForSelector("body[data-mbps]", { timeout: 600_000 });
    console.log(`chromium: ${await page.textContent("#timing")}`);
  } else {
    await page.setInputFiles("#file", FIXTURE);
    await page.waitForSelector("#sessions tbody tr");
    const rows = page.locator("#sessions tbody tr");
    assert.equal(await rows.count(), 6, "six SOCKS sessions in the fixture");
    assert.match(await page.textContent("#summary"), /pcap, 95 packets, ETHERNET, 7 TCP connections, 6 SOCKS sessions/);

    // Sort by bytes ↓ descending, then filter.
    await page.click('#sessions th[data-key="bytes_down"]');
    await page.click('#sessions th[data-key="bytes_down"]');
    assert.equal(await page.getAttribute('#sessions th[data-key="bytes_down"]', "aria-sort"), "descending");
    await page.fill("#filter", "socks4a");
    await page.waitForFunction(() => document.body.dataset.filtered === "socks4a");
    assert.equal(await rows.count(), 1);
    await page.fill("#filter", "");
    await page.waitForFunction(() => document.body.dataset.filtered === "");
    assert.equal(await rows.count(), 6);
    // Structured terms: field:text, comparisons, negation, all terms must match.
    for (const [filter, n] of [["version:socks5 command:bind", 1], ["down>2000", 4], ["down<=21 up>=0", 2],
      ["-version:socks5", 1], ["reply=90", 1], ["sni:example.com user:alice", 3], ["tunnel:tls -client:20006", 2],
      ["nosuchfield:x", 0]]) {
      await page.fill("#filter", filter);
      await page.waitForFunction((t) => document.body.dataset.filtered === t, filter);
      assert.equal(await rows.count(), n, `filter ${filter}`);
    }
    await page.fill("#filter", "");
    await page.waitForFunction(() => document.body.dataset.filtered === "");

    // The timeline: a bar per session shown; clicking one opens it.
    assert.match(await page.getAttribute("#timeline", "aria-label"), /^timeline of 6 sessions from 2026-/);
    const bar = await page.evaluate(() => document.querySelector("#timeline").bars.find((b) => b[3] === 3));
    const box = await page.locator("#timeline").boundingBox();
    await page.mouse.click(box.x + (bar[0] + bar[1]) / 2, box.y + 4 + bar[2] * ((64 - 8) / 6) + 4);
    await page.waitForFunction(() => /^Session #3:/.test(document.querySelector("#detail-title")?.textContent ?? ""));
    await page.screenshot({ path: OUT + "timeline.png", clip: { x: 0, y: 0, width: 1500, height: 420 } });
    await page.click("#detail-close");

    // Open session #1 (SOCKS5, username/password, TLS).
    await page.click('#sessions tbody tr[data-n="1"]');
    await page.waitForSelector("#detail:not([hidden])");
    await page.waitForSelector("#messages li");
    assert.match(await page.textContent("#detail-title"), /socks5 127\.0\.0\.1:20000 → 127\.0\.0\.1:1080/);
    assert.match(await page.textContent("#facts"), /example\.com/);
    assert.equal(await page.locator("#messages li").count(), 6);

    // The username/password message: password masked in fields and hex.
    await page.click('#messages li[data-i="2"]');
    const fields = await page.textContent("#fields tbody");
    assert.match(fields, /UNAME.*alice/);
    assert.match(fields, /PASSWD\*{8}/);
    assert.ok(!(await page.content()).includes("s3cret"), "password not in the page");

    // The request: click DST.ADDR, its 12 bytes (length + "example.com") light up.
    await page.click('#messages li[data-i="4"]');
    await page.click('#fields tbody tr:has-text("DST.ADDR")');
    const hl = page.locator("#hex .b.hl");
    assert.equal(await hl.count(), 12);
    assert.equal(await hl.first().textContent(), "0b");
    assert.match(await page.textContent("#where"), /frame/);

    await mkdir(OUT, { recursive: true });
    await page.screenshot({ path: OUT + "inspector.png", fullPage: true });

    // Export CSV.
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#export-csv")]);
    const csv = await readFile(await download.path(), "utf8");
    assert.match(csv.split("\r\n")[0], /^client,server,version,methods_offered,/);
    assert.equal(csv.trim().split("\r\n").length, 7);

    // Export JSON: the contract document, with messages.
    const [dl] = await Promise.all([page.waitForEvent("download"), page.click("#export-json")]);
    const doc = JSON.parse(await readFile(await dl.path(), "utf8"));
    assert.equal(doc.sessions.length, 6);
    assert.equal(doc.sessions[0].messages.length, 6);
    assert.equal(doc.sessions[0].password, undefined);

    // Keyboard: ↓ to session 2, Enter opens it, Escape closes it with focus back on its row,
    // "/" jumps to the filter.
    await page.click('#sessions th[data-key="n"]'); // back to # ascending
    if (await page.getAttribute('#sessions th[data-key="n"]', "aria-sort") !== "ascending") await page.click('#sessions th[data-key="n"]');
    await page.focus('#sessions tbody tr[data-n="1"]');
    await page.keyboard.press("ArrowDown");
    assert.equal(await page.evaluate(() => document.activeElement.dataset.n), "2");
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => /Session #2:/.test(document.querySelector("#detail-title").textContent));
    assert.equal(await page.evaluate(() => document.activeElement.dataset.n), "2", "focus stays on the opened row");
    await page.keyboard.press("Escape");
    assert.ok(await page.isHidden("#detail"));
    assert.equal(await page.evaluate(() => document.activeElement.dataset.n), "2");
    await page.keyboard.press("End");
    assert.equal(await page.evaluate(() => document.activeElement.dataset.n), "6");
    await page.keyboard.press("/");
    assert.equal(await page.evaluate(() => document.activeElement.id), "filter");

    // Structured filters (`field op value`, `in CIDR`, `anomalies`, free text), applied once
    // typing pauses; a malformed expression gets an inline error and keeps the last good view.
    const filterTo = async (text) => {
      await page.fill("#filter", text);
      await page.waitForFunction((t) => document.body.dataset.filtered === t, text);
    };
    for (const [filter, n] of [["reply != 0", 1], ["dst_port == 443", 3], ["user == alice", 3],
      ["client in 127.0.0.0/30", 3], ["client in ::1/128", 1], ["server in 127.0.0.1/32", 5],
      ["anomalies", 0], ["dst_port == 443 -client:20006", 2], ["version == socks5 alice", 3],
      ["dst_port==80", 1], ["duration > 0.0125", 4], ["down>2000", 4]]) {
      await filterTo(filter);
      assert.equal(await rows.count(), n, `filter ${filter}`);
      assert.equal(await page.textContent("#filter-error"), "", `no error for ${filter}`);
    }
    for (const [bad, message] of [["reply !=", /reply != needs a value/], ["dst_port == https", /needs a number/],
      ["user in 10.0.0.0/8", /needs an address field/], ["client in 10.0.0.300/8", /not an address block/],
      ["colour == red", /unknown field "colour"/]]) {
      await filterTo(bad);
      assert.match(await page.textContent("#filter-error"), message, bad);
      assert.equal(await page.getAttribute("#filter", "aria-invalid"), "true");
      assert.equal(await rows.count(), 4, `${bad}: the last good filter (down>2000) still applies`);
    }
    await filterTo("");
    assert.equal(await rows.count(), 6);
    // Typing never waits for the filter: the keystrokes of a long expression all land at once.
    await page.focus("#filter");
    await page.keyboard.type("client in 127.0.0.0/8 dst_port == 443", { delay: 0 });
    await page.waitForFunction(() => document.body.dataset.filtered === "client in 127.0.0.0/8 dst_port == 443");
    assert.equal(await rows.count(), 3);
    await filterTo("");

    // Time window by keyboard: seconds from the capture's start typed in from/to, Enter applies
    // (sessions overlapping 0.020–0.045 s: #2, #3, #4); in the URL; Clear window by keyboard.
    await page.focus("#window-from");
    await page.keyboard.type("0.020");
    await page.keyboard.press("Tab");
    assert.equal(await page.evaluate(() => document.activeElement.id), "window-to");
    await page.keyboard.type("0.045");
    await page.keyboard.press("Enter");
    assert.deepEqual(await page.$$eval("#sessions tbody tr[data-n]", (t) => t.map((r) => r.dataset.n)), ["2", "3", "4"]);
    assert.match(await page.evaluate(() => location.hash), /window=1795708650\.021000-1795708650\.046000/);
    await page.keyboard.press("Tab");
    assert.equal(await page.evaluate(() => document.activeElement.id), "window-clear");
    await page.keyboard.press("Enter");
    assert.equal(await rows.count(), 6);
    assert.doesNotMatch(await page.evaluate(() => location.hash), /window=/);

    // Brushing with the mouse: drag across the middle of the timeline; the sessions shown are
    // exactly those overlapping the window the inputs then show.
    const tl = await page.locator("#timeline").boundingBox();
    await page.mouse.move(tl.x + tl.width * 0.3, tl.y + 30);
    await page.mouse.down();
    await page.mouse.move(tl.x + tl.width * 0.45, tl.y + 30, { steps: 5 });
    await page.mouse.move(tl.x + tl.width * 0.6, tl.y + 30, { steps: 5 });
    await page.mouse.up();
    const t0 = 1795708650.001;
    const from = t0 + Number(await page.inputValue("#window-from")), to = t0 + Number(await page.inputValue("#window-to"));
    assert.ok(to - from > 0.02 && to - from < 0.04, `brushed ${from}–${to}`);
    const spans = [[.001, .015], [.016, .03], [.031, .041], [.042, .053], [.054, .071], [.081, .095]];
    const expect = spans.map(([a, b], i) => [1795708650 + a, 1795708650 + b, String(i + 1)])
      .filter(([a, b]) => a <= to + 5e-4 && b >= from - 5e-4).map(([, , n]) => n);
    assert.deepEqual(await page.$$eval("#sessions tbody tr[data-n]", (t) => t.map((r) => r.dataset.n)), expect);
    assert.match(await page.evaluate(() => location.hash), /window=\d+\.\d+-\d+\.\d+/);
    await page.click("#window-clear");
    assert.equal(await rows.count(), 6);

    // The timeline by keyboard: a slider over the sessions in time order. Home, → → reach #3,
    // [ starts the window there; → → reach #5, ] ends it there (#3–#5 shown); Escape clears
    // the window; Enter opens the session under the cursor.
    await page.focus("#timeline");
    const cursor = () => page.getAttribute("#timeline", "data-cursor");
    await page.keyboard.press("Home");
    assert.equal(await cursor(), "1");
    assert.match(await page.getAttribute("#timeline", "aria-valuetext"), /^session #1, 127\.0\.0\.1:20000 to /);
    await page.keyboard.press("ArrowRight");
    await page.keyboard.press("ArrowRight");
    assert.equal(await cursor(), "3");
    await page.keyboard.press("[");
    assert.deepEqual(await page.$$eval("#sessions tbody tr[data-n]", (t) => t.map((r) => r.dataset.n)), ["3", "4", "5", "6"]);
    assert.equal(await cursor(), "3");
    await page.keyboard.press("ArrowRight");
    await page.keyboard.press("ArrowRight");
    await page.keyboard.press("]");
    assert.deepEqual(await page.$$eval("#sessions tbody tr[data-n]", (t) => t.map((r) => r.dataset.n)), ["3", "4", "5"]);
    assert.equal(await page.getAttribute("#timeline", "aria-valuenow"), "3");
    await page.keyboard.press("Escape");
    assert.equal(await rows.count(), 6);
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => /^Session #5:/.test(document.querySelector("#detail-title")?.textContent ?? ""));
    await axeClean(page, "timeline focused, session open");
    await page.click("#detail-close");

    // Export the filtered sessions: IPv4 clients in 0.020–0.075 s are #2, #3 and #5 (UDP
    // ASSOCIATE with relayed datagrams). JSON and CSV carry those three; the pcap holds just their
    // packets and `socksgate inspect` finds exactly those sessions in it.
    await filterTo("client in 127.0.0.0/8");
    await page.fill("#window-from", "0.020");
    await page.fill("#window-to", "0.075");
    await page.press("#window-to", "Enter");
    assert.deepEqual(await page.$$eval("#sessions tbody tr[data-n]", (t) => t.map((r) => r.dataset.n)), ["2", "3", "5"],
      `window ${await page.inputValue("#window-from")}–${await page.inputValue("#window-to")}, ${await page.evaluate(() => location.hash)}`);
    const [jsonDl] = await Promise.all([page.waitForEvent("download"), page.click("#export-json")]);
    const filteredDoc = JSON.parse(await readFile(await jsonDl.path(), "utf8"));
    assert.deepEqual(filteredDoc.sessions.map((s) => s.client), ["127.0.0.2:20001", "127.0.0.3:20002", "127.0.0.5:20004"]);
    assert.ok(filteredDoc.sessions.every((s) => s.messages.length > 0));
    const [csvDl] = await Promise.all([page.waitForEvent("download"), page.click("#export-csv")]);
    const filteredCsv = (await readFile(await csvDl.path(), "utf8")).trim().split("\r\n");
    assert.deepEqual(filteredCsv.slice(1).map((l) => l.split(",")[0]), ["127.0.0.2:20001", "127.0.0.3:20002", "127.0.0.5:20004"]);
    const [pcapDl] = await Promise.all([page.waitForEvent("download"), page.click("#export-pcap")]);
    await mkdir(OUT, { recursive: true });
    await writeFile(OUT + "filtered.pcap", await readFile(await pcapDl.path()));
    const cli = JSON.parse(execFileSync(SOCKSGATE, ["inspect", "--json", OUT + "filtered.pcap"], { encoding: "utf8" }));
    const summary = (s) => { const { messages, first_frame, ...rest } = s; return rest; };
    assert.deepEqual(cli.sessions.map(summary), filteredDoc.sessions.map(summary), "the exported pcap holds exactly the filtered sessions");
    assert.ok(cli.capture.packets < 95, `${cli.capture.packets} packets exported`);
    await filterTo("");
    await page.click("#window-clear");

    // The same capture gzip-compressed (.pcap.gz): decompressed while it is read.
    await writeFile(OUT + "sample.pcap.gz", gzipSync(await readFile(FIXTURE)));
    await page.setInputFiles("#file", OUT + "sample.pcap.gz");
    await page.waitForFunction(() => /sample\.pcap\.gz:/.test(document.querySelector("#summary")?.textContent ?? ""));
    assert.match(await page.textContent("#summary"), /pcap, 95 packets, ETHERNET, 7 TCP connections, 6 SOCKS sessions/);
    assert.equal(await rows.count(), 6);

    // zstd-compressed (.pcap.zst, Debian's zstd): decompressed in wasm while it is read, and
    // the pcap export re-reads it the same way — the CLI finds the same sessions in the export.
    execFileSync("zstd", ["-q", "-f", "-3", FIXTURE, "-o", OUT + "sample.pcap.zst"]);
    await page.setInputFiles("#file", OUT + "sample.pcap.zst");
    await page.waitForFunction(() => /sample\.pcap\.zst:/.test(document.querySelector("#summary")?.textContent ?? ""));
    assert.match(await page.textContent("#summary"), /pcap, 95 packets, ETHERNET, 7 TCP connections, 6 SOCKS sessions/);
    assert.equal(await rows.count(), 6);
    const [zstDl] = await Promise.all([page.waitForEvent("download"), page.click("#export-pcap")]);
    await writeFile(OUT + "from-zst.pcap", await readFile(await zstDl.path()));
    const fromZst = JSON.parse(execFileSync(SOCKSGATE, ["inspect", "--json", OUT + "from-zst.pcap"], { encoding: "utf8" }));
    assert.equal(fromZst.sessions.length, 6, "the pcap exported from the .zst holds the six sessions");
    // A cut .zst: a readable error, not a hang.
    const zst = await readFile(OUT + "sample.pcap.zst");
    await writeFile(OUT + "cut.pcap.zst", zst.subarray(0, zst.length >> 1));
    await page.setInputFiles("#file", OUT + "cut.pcap.zst");
    await page.waitForSelector("#error:not([hidden])");
    assert.match(await page.textContent("#error"), /cut\.pcap\.zst: .*zstd/);

    // 12 000 sessions: the table is virtualised (a window of rows in the DOM), scrolling and
    // the keyboard reach the last one; the view worker filters and sorts them.
    await writeFile(OUT + "many.pcap", Buffer.concat([...synthCapture({ connections: 12000, segments: 0 })]));
    await page.setInputFiles("#file", OUT + "many.pcap");
    await page.waitForFunction(() => /many\.pcap:.* 12000 SOCKS sessions/.test(document.querySelector("#summary")?.textContent ?? ""));
    // 12,000 sessions: filtering and sorting run in the view worker, answered asynchronously.
    await page.waitForFunction(() => document.querySelector("#count").textContent === "12000 of 12000 sessions");
    const inDom = await page.locator("#sessions tbody tr[data-n]").count();
    assert.ok(inDom > 10 && inDom < 150, `${inDom} rows in the DOM`);
    await page.evaluate(() => { const w = document.querySelector(".table-wrap"); w.scrollTop = w.scrollHeight; });
    await page.waitForSelector('#sessions tbody tr[data-n="12000"]');
    assert.ok(await page.locator('#sessions tbody tr[data-n="12000"]').isVisible());
    await page.evaluate(() => { document.querySelector(".table-wrap").scrollTop = 0; });
    await page.waitForSelector('#sessions tbody tr[data-n="1"]');
    await page.focus('#sessions tbody tr[data-n="1"]');
    await page.keyboard.press("End");
    assert.equal(await page.evaluate(() => document.activeElement.dataset.n), "12000");
    await page.keyboard.press("PageUp");
    const up = Number(await page.evaluate(() => document.activeElement.dataset.n));
    assert.ok(up < 12000 && up > 11950, `PageUp went to ${up}`);
    await page.keyboard.press("Enter");
    await page.waitForFunction((n) => document.querySelector("#detail-title").textContent.startsWith(`Session #${n}:`), up);
    await page.fill("#filter", "20999");
    await page.waitForFunction(() => document.body.dataset.filtered === "20999");
    assert.equal(await page.textContent("#count"), "1 of 12000 sessions");
    await page.fill("#filter", "reply != 0");
    await page.waitForFunction(() => document.body.dataset.filtered === "reply != 0");
    assert.equal(await page.textContent("#count"), "0 of 12000 sessions");
    await page.fill("#filter", "");
    await page.waitForFunction(() => document.body.dataset.filtered === "");
    assert.equal(await page.textContent("#count"), "12000 of 12000 sessions");
    // Sorting by # descending, from the view worker: session 12000 first.
    await page.click('#sessions th[data-key="n"]');
    if (await page.getAttribute('#sessions th[data-key="n"]', "aria-sort") !== "descending") await page.click('#sessions th[data-key="n"]');
    await page.evaluate(() => { document.querySelector(".table-wrap").scrollTop = 0; });
    await page.waitForFunction(() => document.querySelector("#sessions tbody tr[data-n]")?.dataset.n === "12000");
    await page.click('#sessions th[data-key="n"]');

    // Not a capture: a clear error.
    await writeFile(OUT + "not-a-capture.pcap", "<html>this is not a capture</html>");
    await page.setInputFiles("#file", OUT + "not-a-capture.pcap");
    await page.waitForSelector("#error:not([hidden])");
    assert.match(await page.textContent("#error"), /not-a-capture\.pcap: not a capture file/);
    await page.screenshot({ path: OUT + "error.png" });

    // Real traffic (dumpcap on lo: curl via microsocks and danted, PySocks UDP ASSOCIATE).
    await page.setInputFiles("#file", here("../tests/fixtures/curl-lo.pcapng"));
    await page.waitForSelector("#sessions tbody tr");
    assert.match(await page.textContent("#summary"), /curl-lo\.pcapng: pcapng, .* 6 SOCKS sessions/);
    await page.fill("#filter", "udp_associate");
    await page.waitForFunction(() => document.body.dataset.filtered === "udp_associate");
    assert.equal(await rows.count(), 1);
    await rows.first().click();
    await page.waitForSelector("#messages li");
    assert.equal(await page.locator("#messages li").count(), 8);
    assert.match(await page.textContent("#messages"), /C→R UDP to 127\.0\.0\.1:\d+ \(4 payload bytes\)/);
    await page.click('#messages li[data-i="4"]');
    await page.click('#fields tbody tr:has-text("DATA")');
    assert.equal(await page.locator("#hex .b.hl").count(), 4);
    await page.screenshot({ path: OUT + "udp.png", fullPage: true });
    // The pcap export from a pcapng with nanosecond timestamps: the UDP ASSOCIATE session with
    // its relayed datagrams, timestamps kept exactly.
    const [udpJson] = await Promise.all([page.waitForEvent("download"), page.click("#export-json")]);
    const udpDoc = JSON.parse(await readFile(await udpJson.path(), "utf8"));
    const [udpPcap] = await Promise.all([page.waitForEvent("download"), page.click("#export-pcap")]);
    await writeFile(OUT + "udp.pcap", await readFile(await udpPcap.path()));
    const udpCli = JSON.parse(execFileSync(SOCKSGATE, ["inspect", "--json", OUT + "udp.pcap"], { encoding: "utf8" }));
    assert.equal(udpCli.sessions.length, 1);
    assert.equal(udpCli.sessions[0].udp_datagrams_up, 2);
    assert.deepEqual(udpCli.sessions.map(summary), udpDoc.sessions.map(summary), "the exported pcap holds the UDP session");

    // Deep link: the fragment's filter, sort and session apply to the capture opened; the
    // fragment follows the view.
    const linked = await context.newPage();
    linked.on("pageerror", (e) => errors.push(String(e)));
    await linked.goto(url + "#filter=version%3Asocks5&window=1795708650.021-1795708650.046&sort=bytes_up&order=desc&session=4");
    await linked.setInputFiles("#file", FIXTURE);
    await linked.waitForFunction(() => /^Session #4:/.test(document.querySelector("#detail-title")?.textContent ?? ""));
    assert.equal(await linked.locator("#sessions tbody tr").count(), 2, "socks5 sessions in the window: #2 and #4");
    assert.equal(await linked.inputValue("#window-from"), "0.020");
    assert.equal(await linked.inputValue("#filter"), "version:socks5");
    assert.equal(await linked.getAttribute('#sessions th[data-key="bytes_up"]', "aria-sort"), "descending");
    await linked.fill("#filter", "bind");
    await linked.waitForFunction(() => document.body.dataset.filtered === "bind");
    assert.equal(await linked.evaluate(() => location.hash), "#filter=bind&window=1795708650.021000-1795708650.046000&sort=bytes_up&order=desc&session=4");
    await linked.click("#detail-close");
    await linked.click("#window-clear");
    assert.equal(await linked.evaluate(() => location.hash), "#filter=bind&sort=bytes_up&order=desc");
    await linked.close();

    // Accessibility (axe-core, WCAG 2.x A/AA rules, colour contrast included) with a session,
    // a message and a field open, in the light and in the dark colour scheme.
    await axeClean(page, "light");
    const dark = await (await browser.newContext({ viewport: { width: 1500, height: 1000 }, colorScheme: "dark" })).newPage();
    dark.on("pageerror", (e) => errors.push(String(e)));
    await dark.goto(url);
    await dark.setInputFiles("#file", FIXTURE);
    await dark.waitForSelector("#sessions tbody tr");
    await dark.click('#sessions tbody tr[data-n="1"]');
    await dark.waitForSelector("#messages li");
    await dark.click('#messages li[data-i="4"]');
    await dark.click('#fields tbody tr:has-text("DST.ADDR")');
    const background = await dark.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.equal(background, "rgb(18, 21, 28)", "dark mode follows the system setting");
    await axeClean(dark, "dark");
    await dark.screenshot({ path: OUT + "dark.png", fullPage: true });

    assert.deepEqual(errors, [], "no page errors or external requests");
    console.log("e2e: all checks passed; screenshots in wasm/e2e/out/");
  }
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  await browser.close();
  server.close();
}
process.exit(failed ? 1 : 0);
