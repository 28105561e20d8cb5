// Keystroke-to-paint latency of the page's filter box with a large capture loaded, in
// Debian's Chromium: a filter is typed one key at a time, 200 ms apart (longer than the
// filter's debounce, so each pause filters and sorts every row while the next key comes in),
// and for each key the time from sending it (over the DevTools protocol, as a user's key
// arrives: queueing behind a busy main thread counts) to the first frame after it is handled. Prints the median, p95
// and worst, and how long the last filter took to show. A measurement, not a test.
//
//   node e2e/typing-latency.mjs FILE [FILTER]     e.g. the 220k-connection handshakes.pcap
//                                                 of `node e2e/bench.mjs --generate`
import { chromium } from "playwright-core";
import { serve } from "./serve.mjs";

const [file, filter = "dst_port == 443 and reply == 0"] = process.argv.slice(2);
if (!file) throw new Error("usage: node e2e/typing-latency.mjs FILE [FILTER]");
const server = await serve(0);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1500, height: 1000 } });
  await page.goto(`http://127.0.0.1:${server.address().port}/`);
  await page.setInputFiles("#file", file);
  await page.waitForSelector("body[data-mbps]", { timeout: 900_000 });
  await page.waitForFunction(() => /^\d+ of \d+ sessions$/.test(document.getElementById("count").textContent));
  const count = await page.textContent("#count");
  // From sending the key (queueing behind a busy main thread counts: the key is handled only
  // when the thread is free) to the end of the first frame painted after it was handled.
  const l = [];
  await page.focus("#filter");
  for (const ch of filter) {
    const t0 = performance.now();
    await page.keyboard.type(ch);
    await page.evaluate(() => new Promise((ok) => requestAnimationFrame(() => setTimeout(ok, 0))));
    l.push(performance.now() - t0);
    await page.waitForTimeout(200);
  }
  const t = Date.now();
  await page.waitForFunction((f) => document.body.dataset.filtered === f, filter, { timeout: 120_000 });
  const settle = Date.now() - t;
  l.sort((a, b) => a - b);
  const at = (q) => l[Math.min(l.length - 1, Math.floor(q * l.length))].toFixed(0);
  console.log(`typing "${filter}" at 200 ms per key, ${count}: keystroke-to-paint median ${at(0.5)} ms, ` +
    `p95 ${at(0.95)} ms, worst ${l[l.length - 1].toFixed(0)} ms over ${l.length} keys; ` +
    `the last filter shown ${settle} ms after the wait for it began; now ${await page.textContent("#count")}`);
} finally {
  await browser.close();
  server.close();
}
