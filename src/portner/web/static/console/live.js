// The console's live door events: Server-Sent Events from /api/v1/events/stream, newest first.
// The list is an aria-live region, so a screen reader hears each new event once. EventSource
// reconnects by itself and sends Last-Event-ID, so nothing is missed across a short outage.
// Door events (phone keys) and what keypad and vendor locks report come in the same line format;
// `key` is a line's own identity (the SSE id is the stream's place and may differ on a resend).
const list = document.getElementById("events");
const status = document.getElementById("live-status");
const empty = document.getElementById("events-empty");
const MAX_ITEMS = 100;
const seen = new Set();

function line(event) {
  return list.dataset.at
    .replace("{time}", event.time)
    .replace("{who}", event.who)
    .replace("{door}", event.door)
    .replace("{resident}", event.resident)
    .replace("{outcome}", event.outcome);
}

function show(event) {
  const key = event.key || event.id;
  if (seen.has(key)) return;  // a reconnect may send an event again
  seen.add(key);
  const item = document.createElement("li");
  const state = ["opened", "locked", "refused"].includes(event.state) ? event.state : (event.opened ? "opened" : "refused");
  item.className = `event ${state}`;
  item.dataset.eventId = key;
  const text = document.createElement("span");
  text.textContent = line(event);
  item.append(text);
  if (state === "refused" && event.reason) {
    const why = document.createElement("span");
    why.className = "reason";
    why.textContent = ` (${event.reason})`;
    item.append(why);
  }
  list.prepend(item);
  while (list.children.length > MAX_ITEMS) list.lastElementChild.remove();
  if (empty) empty.hidden = true;
}

if (list && window.EventSource) {
  const source = new EventSource(list.dataset.stream);
  source.addEventListener("open", () => { status.textContent = list.dataset.connected; });
  source.addEventListener("error", () => { status.textContent = list.dataset.lost; });
  source.addEventListener("door", (message) => {
    try { show(JSON.parse(message.data)); } catch (error) { console.warn("bad door event", error); }
  });
}
