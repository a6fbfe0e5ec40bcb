// The nurse app: today's visits from IndexedDB, refreshed from the platform when it answers;
// doors open through door.js whether or not the platform is reachable.
import {
  deviceKey, loadState, openDoor, queuedCount, registerDevice, saveState, uploadQueued,
} from "./door.js";

const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content || "";
const words = JSON.parse(document.getElementById("nurse-words").textContent);
const API = meta("portner-api");
const CSRF = meta("csrf-token");
const ACCOUNT = meta("portner-account");
const ZONE = meta("portner-timezone") || "Europe/Oslo";
const LANG = document.documentElement.lang || "nb";
const KEY_NAME = `nurse:${ACCOUNT}`;
const SHIFT_NAME = `shift:${ACCOUNT}`;
const SYNC_EVERY_MS = 30_000;

const connection = document.getElementById("connection");
const result = document.getElementById("door-result");
const list = document.getElementById("visits");
const queueStatus = document.getElementById("queue-status");

function t(key, params = {}) {
  const text = words[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in params ? String(params[name]) : `{${name}}`));
}

const clock = new Intl.DateTimeFormat(LANG === "nb" ? "nb-NO" : "en-GB", { hour: "2-digit", minute: "2-digit", timeZone: ZONE });
const time = (iso) => clock.format(new Date(iso));

let key = null;
let shift = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function doorName(kind) {
  return t(`nurse.door.${["building", "stairwell", "flat"].includes(kind) ? kind : "other"}`);
}

function reasonText(code) {
  const known = `nurse.reason.${code}`;
  return known in words ? t(known) : t("nurse.reason.other", { code });
}

function render() {
  list.replaceChildren();
  const items = (shift?.credentials || []).filter((c) => c.visit);
  if (shift && !items.length) {
    list.append(el("li", { class: "card", text: t("nurse.no_visits") }));
    return;
  }
  for (const item of items) {
    const v = item.visit;
    const headingId = `visit-${v.id}`;
    const card = el("li", { class: "visit card", "aria-labelledby": headingId });
    const heading = el("h2", { id: headingId },
      el("span", { class: "time", text: t("nurse.time_span", { start: time(v.planned_start), end: time(v.planned_end) }) }),
      el("span", { class: "resident", text: v.resident }));
    card.append(heading, el("p", { class: "address", text: v.address }));
    const status = `nurse.visit.${v.status}`;
    if (status in words) card.append(el("p", { class: "visit-status", text: t(status) }));
    const path = el("ol", { class: "door-path", "aria-label": t("nurse.door_path") });
    v.doors.forEach((door, i) => {
      const name = doorName(door.kind);
      const button = el("button", { type: "button", class: "open-door", "data-door": door.door_id,
        "aria-label": t("nurse.open_label", { door: name.toLowerCase(), address: v.address }) }, t("nurse.open"));
      button.addEventListener("click", () => open(button, item, door, name));
      path.append(el("li", {}, el("span", {}, el("span", { class: "step", text: `${i + 1}.` }), name), button));
    });
    card.append(path);
    list.append(card);
  }
}

function say(text, tone) {
  result.className = `notice door-result ${tone || ""}`;
  result.textContent = text;
}

async function open(button, item, door, name) {
  button.disabled = true;
  say(t("nurse.opening", { door: name }));
  try {
    if (!item.door_ids.includes(door.door_id)) {
      say(t("nurse.refused", { door: name, reason: reasonText("no_key") }), "bad");
      return;
    }
    const bridge = shift.bridge_url || meta("portner-bridge");
    if (!bridge) {
      // No radio link is set up on this server (production has no simulated locks' bridge).
      say(t("nurse.refused", { door: name, reason: reasonText("no_radio") }), "bad");
      return;
    }
    const answer = await openDoor(bridge, door.door_id, item.credential, key, { since: door.synced_seq || 0 });
    if (answer.opened) say(t("nurse.opened", { door: name }), "ok");
    else say(t("nurse.refused", { door: name, reason: reasonText(answer.reason) }), "bad");
  } catch (err) {
    say(t("nurse.refused", { door: name, reason: reasonText(err.code === "unreachable" ? "unreachable" : "other") }), "bad");
  } finally {
    button.disabled = false;
    await showQueue();
    upload();
  }
}

async function showQueue() {
  const n = await queuedCount();
  queueStatus.textContent = n ? t("nurse.queue_waiting", { n }) : t("nurse.queue_empty");
}

function online(updated) {
  connection.className = "notice ok";
  connection.textContent = t("nurse.online", { time: time(updated) });
}

function offline() {
  connection.className = "notice bad";
  connection.textContent = shift ? t("nurse.offline") : t("nurse.offline_never");
}

async function upload() {
  const sent = await uploadQueued(API, CSRF);
  await showQueue();
  return sent;
}

async function fetchShift(device) {
  const res = await fetch(`${API}/me/credentials?device_id=${encodeURIComponent(device.id)}`, {
    credentials: "same-origin", headers: { Accept: "application/json" },
  });
  return res;
}

async function refreshShift() {
  try {
    if (!key) {
      connection.textContent = t("nurse.registering");
      key = await deviceKey(KEY_NAME);
    }
    let device = await registerDevice(API, CSRF, { key });
    let res = await fetchShift(device);
    if (res.status === 404) {
      // The platform does not know this phone (a new database): register the same key again.
      device = await registerDevice(API, CSRF, { key, force: true });
      res = await fetchShift(device);
    }
    if (res.status === 403) {
      // Blocked (a lost phone): never make a new key by itself, or a finder would get one too.
      connection.className = "notice bad";
      connection.textContent = t("nurse.device_revoked");
      shift = null;
      await saveState(SHIFT_NAME, null);
      render();
      return;
    }
    if (!res.ok) throw Object.assign(new Error(`credentials: ${res.status}`), { status: res.status });
    shift = await res.json();
    await saveState(SHIFT_NAME, shift);
    render();
    online(shift.server_time);
  } catch (err) {
    if (err.code === "no_webcrypto") {
      connection.className = "notice bad";
      connection.textContent = t("nurse.no_webcrypto");
      return;
    }
    if (err.status && err.status < 500) {
      connection.className = "notice bad";
      connection.textContent = t(err.status === 401 ? "nurse.signed_out" : "nurse.register_failed");
    } else {
      offline();
    }
  }
}

async function sync() {
  await refreshShift();
  try { await upload(); } catch { /* stays queued */ }
}

async function start() {
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/nurse/sw.js", { scope: "/nurse" }).catch(() => {});
  }
  shift = (await loadState(SHIFT_NAME)) || null;
  if (shift) render();
  try { key = await deviceKey(KEY_NAME); } catch (err) {
    if (err.code === "no_webcrypto") {
      connection.className = "notice bad";
      connection.textContent = t("nurse.no_webcrypto");
      return;
    }
  }
  await showQueue();
  document.getElementById("refresh").addEventListener("click", sync);
  window.addEventListener("online", sync);
  setInterval(sync, SYNC_EVERY_MS);
  await sync();
  document.body.dataset.ready = "true"; // for tests and for people: the first sync is done
}

start();
