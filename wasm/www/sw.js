// Offline support: network first, cached copy when offline. Nothing is sent anywhere.
const CACHE = "socksgate-inspector-v6";
const SHELL = ["./", "index.html", "style.css", "app.js", "filter.js", "columns.js", "view-worker.js", "pcap.js", "worker.js", "decompress.js", "table.js",
  "pkg/socksgate_wasm.js", "pkg/socksgate_wasm_bg.wasm"];

self.addEventListener("install", (e) => {
  e.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).catch(() => {}));
  self.skipWaiting();
});
self.addEventListener("activate", (e) => e.waitUntil(self.clients.claim()));
self.addEventListener("fetch", (e) => {
  if (e.request.method !== "GET") return;
  e.respondWith(
    fetch(e.request)
      .then((r) => {
        const copy = r.clone();
        caches.open(CACHE).then((c) => c.put(e.request, copy));
        return r;
      })
      .catch(() => caches.match(e.request)),
  );
});
