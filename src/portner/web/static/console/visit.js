// The one-time visitor's page: make a key in the browser (WebCrypto, not extractable), redeem
// the invitation once, keep the credentials on this phone, and open doors through the lock
// bridge. The key and the credentials stay in IndexedDB, so a reload on the same phone still
// opens; another phone gets "already used".
import { deviceKey, loadState, openDoor, registerDevice, saveState, uploadQueued } from "/static/nurse/door.js";

const doors = document.getElementById("visit-doors");
const status = document.getElementById("visit-status");
const reasons = JSON.parse(document.getElementById("reason-words").textContent || "{}");
const token = location.pathname.split("/").pop();
const invitation = doors.dataset.invitation;
const words = doors.dataset;
const API = "/api/v1";
const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
const STATE = `visit:${invitation}`;

function say(text) { status.textContent = text; }
function buttons(enabled) { for (const b of doors.querySelectorAll("button")) b.disabled = !enabled; }

async function prepare() {
  const saved = await loadState(STATE);
  const key = await deviceKey(STATE);
  if (saved && key.deviceId === saved.device_id) return { key, saved };
  if (words.state !== "open") throw Object.assign(new Error("used"), { code: "used" });
  say(words.preparing);
  const redeemed = await registerDevice(API, csrf, {
    key,
    challengeUrl: `${API}/visit/${encodeURIComponent(token)}/challenge`,
    registerUrl: `${API}/visit/${encodeURIComponent(token)}/redeem`,
    force: true,
  });
  await saveState(STATE, redeemed);
  return { key, saved: redeemed };
}

let ready = null;

async function open(doorId) {
  buttons(false);
  try {
    ready = ready || prepare();
    const { key, saved } = await ready;
    const credential = saved.credentials.find((c) => c.door_ids.includes(doorId));
    if (!credential) { say(words.failed); return; }
    const bridge = saved.bridge_url || words.bridge;
    // No radio link is set up on this server (production has no simulated locks' bridge).
    if (!bridge) { say(words.noRadio); return; }
    say(words.opening);
    const answer = await openDoor(bridge, doorId, credential.credential, key);
    say(answer.opened ? words.opened : words.refused.replace("{reason}", reasons[answer.reason] || answer.reason));
    // The lock's log goes to the platform with this link as authority, so the resident sees it.
    uploadQueued(`${API}/visit/${encodeURIComponent(token)}`, csrf).catch(() => {});
  } catch (error) {
    ready = null;
    if (error.code === "used" || error.status === 409) say(words.used);
    else if (error.code === "no_webcrypto") say(words.unsupported);
    else say(words.failed);
  } finally {
    buttons(true);
  }
}

for (const button of doors.querySelectorAll("button.open-door")) {
  button.addEventListener("click", () => open(button.dataset.doorId));
}

// Whatever an earlier visit left queued (the network was down) goes now.
uploadQueued(`${API}/visit/${encodeURIComponent(token)}`, csrf).catch(() => {});

// Prepare at once, so the first press only opens; a failure here is shown and retried on press.
ready = prepare();
ready.then(() => say(""), (error) => {
  ready = null;
  if (error.code === "used" || error.status === 409) say(words.used);
  else if (error.code === "no_webcrypto") say(words.unsupported);
});
