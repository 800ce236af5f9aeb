// dupecheck's service worker: the page opens with the computer out of reach.
// The page and its manifest and icons are kept in Cache Storage when it installs, and
// refreshed from the network whenever the computer answers; /api is never cached.
"use strict";
const CACHE = "dupecheck-shell-v2";
const ORT = "/vendor/onnxruntime-web/";
const SHELL = ["/", "/manifest.webmanifest", "/icon-192.png", "/icon-512.png", "/offline.js",
               ORT + "ort.wasm.min.js", ORT + "ort-wasm-simd-threaded.mjs",
               ORT + "ort-wasm-simd-threaded.wasm"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k.startsWith("dupecheck-shell") && k !== CACHE)
      .map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin ||
      url.pathname.startsWith("/api/")) {
    return;  // checks, pairing, thumbnails: always the computer's own answer
  }
  // Only the page is the app's shell: a navigation elsewhere (/openapi.json, the
  // manifest opened as a page) is the network's alone, never stored as the page.
  const key = url.pathname;
  if (!SHELL.includes(key) || (event.request.mode === "navigate" && key !== "/")) return;
  event.respondWith(fetch(event.request)
    .then((response) => {
      if (key === "/" && response.status >= 500) {  // the computer is busy or broken:
        return caches.match(key).then((hit) => hit || response);  // the kept page
      }
      const type = response.headers.get("Content-Type") || "";
      if (response.ok && (key !== "/" || type.startsWith("text/html"))) {
        const copy = response.clone();
        caches.open(CACHE).then((c) => c.put(key, copy));
      }
      return response;
    })
    .catch(() => caches.match(key).then((hit) => hit || Response.error())));
});
