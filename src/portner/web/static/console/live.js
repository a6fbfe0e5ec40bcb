// The console's live door events: Server-Sent Events from /api/v1/events/stream, newest first.
// The list is an aria-live region, so a screen reader hears each new event once. EventSource
// reconnects by itself and sends Last-Event-ID, so nothing is missed across a short outage.
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
  if (seen.has(event.id)) return;  // a reconnect may send an event again
  seen.add(event.id);
  const item = document.createElement("li");
  item.className = event.opened ? "event opened" : "event refused";
  item.dataset.eventId = event.id;
  const text = document.createElement("span");
  text.textContent = line(event);
  item.append(text);
  if (!event.opened && event.reason) {
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
