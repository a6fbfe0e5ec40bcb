/**
 * door.js: the phone's half of Portner's door protocol, for every page that opens doors
 * (the nurse app, the one-time visitor page). An ES module with no imports and no third-party
 * code; everything that must survive the platform being unreachable lives in IndexedDB
 * (database "portner": stores "keys", "state", "queue").
 *
 *   deviceKey(name = "device")            -> {name, privateKey, publicKey, publicRaw, deviceId, holder}
 *       Get or create the phone's Ed25519 key (WebCrypto, private key NOT extractable), kept as
 *       CryptoKey objects in IndexedDB under `name`.
 *   registerDevice(apiBase, csrf, opts)   -> {id, ...} the registered device
 *       Once per key: GET <challengeUrl>, sign CBOR ["portner-device-registration-v1",
 *       challenge, public key, holder] and POST <registerUrl> {public_key, challenge, signature}.
 *       opts: {keyName, key, challengeUrl (default apiBase + "/devices/registration-challenge"),
 *       registerUrl (default apiBase + "/devices"), force}. Returns at once if already registered.
 *   signProof(key, challengeBytes, doorId, action) -> Uint8Array(64)
 *       Ed25519 over CBOR ["portner-door-proof-v1", challenge, door id, action], exactly as
 *       portner/credentials/proof.py and docs/credential-profile.md §7 define it.
 *   openDoor(bridgeUrl, doorId, credentialB64, key, opts) -> {opened, reason, lockId, queued}
 *       Challenge, proof, present at the lock (through the bridge that stands in for Bluetooth),
 *       then read the lock's new events and queue them for upload. opts: {action = "unlock",
 *       since = 0 (the platform's verified seq for the lock, if known)}. Throws an Error with
 *       .code = "unreachable" when the lock cannot be reached.
 *   uploadQueued(apiBase, csrf)           -> {sent, refused, left, status?}
 *       POST the queued lock uploads to <apiBase>/door-events in batches within the server's
 *       limits; removes them only after a 2xx (or when the platform refuses one outright).
 *   uploadBatches(entries) -> [{ids, uploads, events}] (the requests uploadQueued sends)
 *   queuedCount(), cborEncode(value), proofMessage(...), b64url(bytes), fromB64url(text),
 *   loadState(name), saveState(name, value), forgetKey(name)
 *
 * All API POSTs send X-CSRF-Token (the page's <meta name="csrf-token">).
 */

const DB_NAME = "portner";
const DB_VERSION = 1;
const PROOF_CONTEXT = "portner-door-proof-v1";
const REGISTRATION_CONTEXT = "portner-device-registration-v1";

// --- CBOR (RFC 8949), the three types the proofs use plus unsigned integers ---------------------

function head(major, length) {
  // Shortest form (deterministic encoding, RFC 8949 §4.2.1).
  if (!Number.isSafeInteger(length) || length < 0) throw new TypeError("CBOR: bad length");
  const m = major << 5;
  if (length < 24) return [m | length];
  if (length < 0x100) return [m | 24, length];
  if (length < 0x10000) return [m | 25, length >> 8, length & 0xff];
  if (length < 0x100000000) {
    return [m | 26, (length >>> 24) & 0xff, (length >>> 16) & 0xff, (length >>> 8) & 0xff, length & 0xff];
  }
  const hi = Math.floor(length / 0x100000000);
  const lo = length >>> 0;
  return [m | 27, (hi >>> 24) & 0xff, (hi >>> 16) & 0xff, (hi >>> 8) & 0xff, hi & 0xff,
    (lo >>> 24) & 0xff, (lo >>> 16) & 0xff, (lo >>> 8) & 0xff, lo & 0xff];
}

function encodeInto(out, value) {
  if (typeof value === "string") {
    const bytes = new TextEncoder().encode(value);
    out.push(...head(3, bytes.length));
    for (const b of bytes) out.push(b);
  } else if (value instanceof Uint8Array) {
    out.push(...head(2, value.length));
    for (const b of value) out.push(b);
  } else if (Array.isArray(value)) {
    out.push(...head(4, value.length));
    for (const item of value) encodeInto(out, item);
  } else if (Number.isSafeInteger(value) && value >= 0) {
    out.push(...head(0, value));
  } else {
    throw new TypeError("CBOR: only text, Uint8Array, arrays and unsigned integers");
  }
}

export function cborEncode(value) {
  const out = [];
  encodeInto(out, value);
  return new Uint8Array(out);
}

export function proofMessage(challengeBytes, doorId, action) {
  return cborEncode([PROOF_CONTEXT, challengeBytes, doorId, action]);
}

// --- base64url ------------------------------------------------------------------------------------

export function b64url(bytes) {
  let text = "";
  for (const b of new Uint8Array(bytes)) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function fromB64url(text) {
  const plain = text.replace(/-/g, "+").replace(/_/g, "/");
  const raw = atob(plain + "=".repeat((4 - (plain.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// --- IndexedDB ------------------------------------------------------------------------------------

let opened = null;

function openDb() {
  if (opened) return opened;
  opened = new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, DB_VERSION);
    req.onupgradeneeded = () => {
      const db = req.result;
      if (!db.objectStoreNames.contains("keys")) db.createObjectStore("keys", { keyPath: "name" });
      if (!db.objectStoreNames.contains("state")) db.createObjectStore("state", { keyPath: "name" });
      if (!db.objectStoreNames.contains("queue")) db.createObjectStore("queue", { keyPath: "id", autoIncrement: true });
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => { opened = null; reject(req.error); };
  });
  return opened;
}

async function tx(store, mode, work) {
  const db = await openDb();
  return new Promise((resolve, reject) => {
    const t = db.transaction(store, mode);
    let result;
    Promise.resolve(work(t.objectStore(store))).then((r) => { result = r; }, reject);
    t.oncomplete = () => resolve(result);
    t.onerror = () => reject(t.error);
    t.onabort = () => reject(t.error);
  });
}

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

export async function loadState(name) {
  const row = await tx("state", "readonly", (s) => request(s.get(name)));
  return row ? row.value : undefined;
}

export async function saveState(name, value) {
  await tx("state", "readwrite", (s) => request(s.put({ name, value })));
}

// --- the device key -----------------------------------------------------------------------------

export async function deviceKey(name = "device") {
  const found = await tx("keys", "readonly", (s) => request(s.get(name)));
  if (found) return found;
  if (!globalThis.crypto || !crypto.subtle) throw Object.assign(new Error("no WebCrypto"), { code: "no_webcrypto" });
  let pair;
  try {
    // Not extractable: the private key never leaves the browser's key store, not even to us.
    pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
  } catch (err) {
    throw Object.assign(new Error("no Ed25519 in this browser"), { code: "no_webcrypto", cause: err });
  }
  const publicRaw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  const record = { name, privateKey: pair.privateKey, publicKey: pair.publicKey, publicRaw, deviceId: null, holder: null };
  await tx("keys", "readwrite", (s) => request(s.put(record)));
  return record;
}

export async function forgetKey(name = "device") {
  await tx("keys", "readwrite", (s) => request(s.delete(name)));
}

async function problemError(res, what) {
  let detail = "";
  try { detail = (await res.json()).detail || ""; } catch { /* not JSON */ }
  return Object.assign(new Error(`${what}: ${res.status} ${detail}`), { status: res.status, code: "http" });
}

export async function registerDevice(apiBase, csrf, opts = {}) {
  const key = opts.key || await deviceKey(opts.keyName || "device");
  if (key.deviceId && !opts.force) return { id: key.deviceId, holder: key.holder, cached: true };
  const challengeUrl = opts.challengeUrl || `${apiBase}/devices/registration-challenge`;
  const registerUrl = opts.registerUrl || `${apiBase}/devices`;
  const got = await fetch(challengeUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!got.ok) throw await problemError(got, "registration challenge");
  const { challenge, holder } = await got.json();
  const message = cborEncode([REGISTRATION_CONTEXT, fromB64url(challenge), key.publicRaw, holder]);
  const signature = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, key.privateKey, message));
  const res = await fetch(registerUrl, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify({ public_key: b64url(key.publicRaw), challenge, signature: b64url(signature) }),
  });
  if (!res.ok) throw await problemError(res, "device registration");
  const device = await res.json();
  key.deviceId = device.id;
  key.holder = holder;
  await tx("keys", "readwrite", (s) => request(s.put(key)));
  return device;
}

export async function signProof(key, challengeBytes, doorId, action) {
  const privateKey = key.privateKey || key;
  const message = proofMessage(challengeBytes, doorId, action);
  return new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, privateKey, message));
}

// --- at the door ----------------------------------------------------------------------------------

async function bridgeJson(url, init) {
  let res;
  try {
    res = await fetch(url, { ...init, credentials: "omit", headers: { "Content-Type": "application/json", ...(init && init.headers) } });
  } catch (err) {
    throw Object.assign(new Error("the lock cannot be reached"), { code: "unreachable", cause: err });
  }
  if (!res.ok) throw Object.assign(new Error(`lock answered ${res.status}`), { code: "unreachable", status: res.status });
  return res.json();
}

export async function openDoor(bridgeUrl, doorId, credentialB64, key, opts = {}) {
  const action = opts.action || "unlock";
  const base = bridgeUrl.replace(/\/$/, "");
  const door = encodeURIComponent(doorId);
  const { challenge } = await bridgeJson(`${base}/doors/${door}/challenge`);
  const proof = await signProof(key, fromB64url(challenge), doorId, action);
  const verdict = await bridgeJson(`${base}/doors/${door}/present`, {
    method: "POST",
    body: JSON.stringify({ credential: credentialB64, proof: b64url(proof), challenge, action }),
  });
  let queued = 0;
  try {
    queued = await collectEvents(base, door, verdict.lock_id, opts.since || 0);
  } catch { /* the lock keeps its log; the next visit to this door reads it again */ }
  return { opened: Boolean(verdict.opened), reason: verdict.reason, lockId: verdict.lock_id, queued };
}

async function collectEvents(base, door, lockId, since) {
  const cursorName = `cursor:${lockId}`;
  const from = Math.max(since, (await loadState(cursorName)) || 0);
  const nonce = hex(crypto.getRandomValues(new Uint8Array(16)));
  const got = await bridgeJson(`${base}/doors/${door}/events?since=${from}&nonce=${nonce}`);
  if (!got.events.length) return 0;
  const entry = { lock_id: got.lock_id, events: got.events, head: got.head || null, queued_at: new Date().toISOString() };
  await tx("queue", "readwrite", (s) => request(s.add(entry)));
  await saveState(cursorName, got.events[got.events.length - 1].seq);
  return got.events.length;
}

// --- upload ---------------------------------------------------------------------------------------

export async function queuedCount() {
  return tx("queue", "readonly", (s) => request(s.count()));
}

let uploading = null;

export function uploadQueued(apiBase, csrf) {
  // One upload at a time (the timer, 'online' and a door opening may all ask at once).
  if (!uploading) uploading = doUpload(apiBase, csrf).finally(() => { uploading = null; });
  return uploading;
}

// The server takes at most 50 uploads, 2,000 events, and 500 events of one lock per request.
const MAX_UPLOADS = 40;
const MAX_EVENTS = 1500;
const MAX_LOCK_EVENTS = 500;

function asUpload(entry, events) {
  return entry.head ? { lock_id: entry.lock_id, events, head: entry.head } : { lock_id: entry.lock_id, events };
}

// Group queued entries into requests within the server's limits. A long log is sent in slices
// of consecutive events (the platform takes them in order, and keeps later ones until a gap fills).
export function uploadBatches(entries) {
  const out = [];
  let current = { ids: [], uploads: [], events: 0, perLock: {} };
  const flush = () => { if (current.uploads.length) out.push(current); current = { ids: [], uploads: [], events: 0, perLock: {} }; };
  for (const entry of entries) {
    for (let i = 0; i < Math.max(entry.events.length, 1); i += MAX_LOCK_EVENTS) {
      const slice = entry.events.slice(i, i + MAX_LOCK_EVENTS);
      const lockCount = (current.perLock[entry.lock_id] || 0) + slice.length;
      if (current.uploads.length >= MAX_UPLOADS || current.events + slice.length > MAX_EVENTS
          || lockCount > MAX_LOCK_EVENTS) flush();
      current.uploads.push(asUpload(entry, slice));
      current.events += slice.length;
      current.perLock[entry.lock_id] = (current.perLock[entry.lock_id] || 0) + slice.length;
      // An entry is forgotten with the request that carries its last slice.
      if (i + MAX_LOCK_EVENTS >= entry.events.length) current.ids.push(entry.id);
    }
  }
  flush();
  return out;
}

async function post(apiBase, csrf, uploads) {
  return fetch(`${apiBase}/door-events`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify({ uploads }),
  });
}

async function forget(ids) {
  await tx("queue", "readwrite", (s) => Promise.all(ids.map((id) => request(s.delete(id)))));
}

async function doUpload(apiBase, csrf) {
  const entries = await tx("queue", "readonly", (s) => request(s.getAll()));
  if (!entries.length) return { sent: 0, left: 0 };
  let sent = 0;
  let refused = 0;
  const results = [];
  for (const batch of uploadBatches(entries)) {
    let res;
    try {
      res = await post(apiBase, csrf, batch.uploads);
    } catch {
      return { sent, refused, left: await queuedCount(), offline: true };
    }
    if (res.ok) {
      results.push(...((await res.json()).results || []));
      await forget(batch.ids);
      sent += batch.ids.length;
      continue;
    }
    if (res.status !== 403 && res.status !== 422) {
      // Signed out, server trouble: keep everything and try again later.
      return { sent, refused, left: await queuedCount(), status: res.status };
    }
    // One entry spoils the batch (a lock no longer on her list, a damaged entry): send each
    // alone, and drop those the platform refuses. Their events stay in the lock's own log and
    // reach the platform at the next sync by staff or gateway.
    for (const id of batch.ids) {
      const entry = entries.find((e) => e.id === id);
      let one;
      try {
        one = await post(apiBase, csrf, [asUpload(entry, entry.events.slice(0, MAX_LOCK_EVENTS))]);
      } catch {
        return { sent, refused, left: await queuedCount(), offline: true };
      }
      if (one.ok) { sent += 1; await forget([id]); }
      else if (one.status === 403 || one.status === 422) { refused += 1; await forget([id]); }
      else return { sent, refused, left: await queuedCount(), status: one.status };
    }
  }
  return { sent, refused, left: await queuedCount(), results };
}
