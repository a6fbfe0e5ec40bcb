// The nurse app's service worker: keeps the app shell so that it starts without the platform.
// The page is fetched from the network first (it carries the session's CSRF token) and served from
// the cache when the platform cannot be reached; static files are served from the cache and
// refreshed in the background. API calls and the lock bridge are never cached or answered here.
const CACHE = "portner-nurse-v1";
const SHELL = [
  "/nurse",
  "/nurse/manifest.webmanifest",
  "/static/app.css",
  "/static/nurse/nurse.css",
  "/static/nurse/nurse.js",
  "/static/nurse/door.js",
  "/static/nurse/icon.svg",
];

async function keep(cache, url) {
  try {
    const res = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    // Never keep a redirect (to the sign-in page) under the app's own address.
    if (res.ok && !res.redirected) await cache.put(url, res);
  } catch { /* offline while installing: kept on the next visit */ }
}

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => Promise.all(SHELL.map((url) => keep(cache, url))))
    .then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys()
    .then((names) => Promise.all(names.filter((n) => n.startsWith("portner-nurse-") && n !== CACHE).map((n) => caches.delete(n))))
    .then(() => self.clients.claim()));
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin) return;
  if (url.pathname.startsWith("/api/")) return;
  if (url.pathname === "/nurse") {
    event.respondWith((async () => {
      const cache = await caches.open(CACHE);
      try {
        const res = await fetch(request);
        if (res.ok && !res.redirected) await cache.put("/nurse", res.clone());
        return res;
      } catch {
        return (await cache.match("/nurse")) || Response.error();
      }
    })());
    return;
  }
  if (SHELL.includes(url.pathname)) {
    event.respondWith((async () => {
      const cache = await caches.open(CACHE);
      const cached = await cache.match(url.pathname);
      const fresh = fetch(request).then(async (res) => {
        if (res.ok) await cache.put(url.pathname, res.clone());
        return res;
      });
      if (cached) {
        event.waitUntil(fresh.catch(() => {}));
        return cached;
      }
      return fresh;
    })());
  }
});
