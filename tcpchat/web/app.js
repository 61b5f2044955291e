// The browser client's view: the join form, then the chat. It never touches the socket (client.js does).
import { ChatClient, conversationOf } from "./client.js";
import { parse } from "./commands.js";

const $ = (id) => document.getElementById(id);
let client = null;
let current = "#general";
const unread = new Map();
const typing = new Map();  // conv -> Map(name -> timer)
let historyEnded = false;
let welcomedAt = 0;
const timings = window.tcpchatTimings = [];  // how long the history took to draw (benchmarks/page.py reads it)

const clock = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit" });  // (made once: it is not cheap)

function time(ts) {
  return clock.format(new Date(ts * 1000));
}

function describe(event) {
  switch (event.kind) {
    case "message": return event.to && !current.startsWith("@") ? `→ ${event.to}: ${event.text}` : event.text;
    case "join": return `${event.name} joined`;
    case "leave": return `${event.name} left`;
    case "room-join": return `${event.name} joined #${event.room}`;
    case "room-leave": return `${event.name} left #${event.room}`;
    case "announce": return `📢 ${event.text}`;
    case "file": return `${event.name} shared ${(event.file || {}).name || "a file"}`;
    default: return `(${event.kind})`;
  }
}

function line(event, { replay = false, pending = false } = {}) {
  const li = document.createElement("li");
  li.dataset.id = event.id || "";
  if (event.cid) li.dataset.cid = event.cid;
  const stamp = document.createElement("span");
  stamp.className = "time";
  stamp.textContent = event.ts ? time(event.ts) : "…";
  li.append(stamp);
  if (event.kind === "file" && event.file) {
    li.classList.add("file");
    const who = document.createElement("span");
    who.className = "name";
    who.textContent = event.name;
    const get = document.createElement("button");
    get.type = "button";
    get.textContent = `↓ ${event.file.name} (${size(event.file.size)})`;
    get.setAttribute("aria-label", `Download ${event.file.name}`);
    get.onclick = () => fetchFile(event.file);
    li.append(who, document.createTextNode(" shared "), get);
    if (/^image\/(png|jpeg|gif|webp)$/.test(event.file.mime || "") && event.file.size <= THUMBNAIL_MAX) thumbnail(li, event.file);
  } else if (event.kind === "message") {
    const who = document.createElement("span");
    who.className = "name";
    who.textContent = event.name + ":";
    if (event.reply) {
      const quote = document.createElement("span");
      quote.className = "quote";
      quote.textContent = `↪ ${event.reply.name}: ${String(event.reply.text || "").slice(0, 80)}`;
      li.prepend(quote);  // (above the line it answers with, its time stamp included)
    }
    li.append(who, " ", ...linked(describe(event)));
    if (event.edited) {
      const mark = document.createElement("span");
      mark.className = "edited";
      mark.textContent = " (edited)";
      li.append(mark);
    }
    if (event.name === client.name) li.classList.add("mine");
  } else {
    li.classList.add("system");
    li.append(document.createTextNode(describe(event)));
  }
  if (event.reactions && event.id) li.append(reactionsOf(event));
  if (replay) li.classList.add("history");
  if (pending) { li.classList.add("pending"); li.title = "Not sent yet"; }
  return li;
}

const URL_PATTERN = /\bhttps?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]]/g;

/** Text as nodes, with the web addresses in it made into links (opened in a new tab, telling nothing back). */
function linked(text) {
  const nodes = [];
  let at = 0;
  for (const match of text.matchAll(URL_PATTERN)) {
    if (match.index > at) nodes.push(document.createTextNode(text.slice(at, match.index)));
    const a = document.createElement("a");
    a.href = match[0];
    a.textContent = match[0];
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    nodes.push(a);
    at = match.index + match[0].length;
  }
  if (at < text.length) nodes.push(document.createTextNode(text.slice(at)));
  return nodes;
}

// ------------------------------------------------------------------ notifications and the tab's title

let unseenHere = 0;  // messages in the open conversation while the tab was hidden

function notifyState() {
  if (!("Notification" in window)) return "unsupported";
  if (!window.isSecureContext) return "insecure";
  return Notification.permission;  // "default", "granted" or "denied"
}

function paintNotify() {
  const state = notifyState();
  const button = $("notify");
  button.setAttribute("aria-pressed", String(state === "granted"));
  button.title = {
    granted: "Notifications are on (your browser's site settings turn them off)",
    default: "Turn on notifications for new messages",
    denied: "Notifications are blocked for this page in your browser's settings",
    insecure: "Notifications need a secure page (https)",
    unsupported: "This browser has no notifications",
  }[state];
}

async function askNotify() {
  const state = notifyState();
  if (state === "insecure") {
    notice("Your browser allows notifications only on a secure page: open this chat at its https:// address " +
           "(the one the server printed). The count of new messages still shows in the tab's title.", "system");
  } else if (state === "unsupported") {
    notice("This browser cannot show notifications; the count of new messages shows in the tab's title.", "system");
  } else if (state === "denied") {
    notice("Notifications are blocked for this page. Allow them in the browser's site settings (the icon left of " +
           "the address), then reload.", "system");
  } else if (state === "granted") {
    notice("Notifications are on. Your browser's site settings turn them off.", "system");
  } else {
    const answer = await Notification.requestPermission();
    notice(answer === "granted" ? "Notifications are on: you will see new messages while this tab is in the background." :
      "Notifications stay off: the count of new messages still shows in the tab's title.", "system");
  }
  paintNotify();
}

function notify(event, conv) {
  if (event.kind !== "message" || event.name === client.name) return;
  const here = conv.toLowerCase() === current.toLowerCase();
  if (here && document.hidden) { unseenHere++; paintTitle(); }
  if (!(document.hidden || !here) || notifyState() !== "granted") return;
  try {
    const shown = new Notification(conv.startsWith("@") ? event.name : `${event.name} in ${conv}`,
                                   { body: event.text.slice(0, 200), tag: conv });
    shown.onclick = () => { window.focus(); switchTo(conv); shown.close(); };
  } catch {}  // (some mobile browsers only notify from a service worker: the title still counts)
}

function paintTitle() {
  const total = [...unread.values()].reduce((a, b) => a + b, 0) + unseenHere;
  document.title = (total ? `(${total}) ` : "") + (client && client.info.server ? `tcpchat — ${client.info.server}` : "tcpchat");
}

/** A message's reactions as buttons: "👍 2" (pressed if one of them is yours: a click takes it back). */
function reactionsOf(event) {
  const row = document.createElement("span");
  row.className = "reactions";
  for (const [emoji, names] of Object.entries(event.reactions)) {
    const button = document.createElement("button");
    button.type = "button";
    const mine = names.includes(client.name);
    button.setAttribute("aria-pressed", String(mine));
    button.title = names.join(", ");
    button.textContent = `${emoji} ${names.length}`;
    button.onclick = () => client.react(event.id, emoji, !mine);
    row.append(button);
  }
  return row;
}

function size(n) {
  const units = ["bytes", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i ? `${n.toFixed(1)} ${units[i]}` : `${n} bytes`;
}

const shown = new Map();  // tid -> <li>
const THUMBNAIL_MAX = 2 * 1024 * 1024;  // images up to this size are shown inline (fetched once, verified)
const thumbnails = new Map();  // file id -> Promise of an object URL

function thumbnail(li, info) {
  if (!thumbnails.has(info.id)) {
    thumbnails.set(info.id, client.download(info, { quiet: true }).finished.then((blob) => URL.createObjectURL(blob)));
  }
  thumbnails.get(info.id).then((url) => {
    const img = document.createElement("img");
    img.className = "thumb";
    img.alt = info.name;
    img.src = url;
    img.onclick = () => fetchFile(info);
    li.append(img);
  }, () => thumbnails.delete(info.id));
}

function showTransfer(t) {
  if (t.quiet) return;  // (a thumbnail: the picture itself shows it arrived)
  let li = shown.get(t.direction + t.tid);
  if (!li) { li = document.createElement("li"); shown.set(t.direction + t.tid, li); $("transfers").append(li); }
  const verb = t.direction === "upload" ? "Uploading" : "Downloading";
  if (t.state === "failed") { li.className = "failed"; li.textContent = `${t.name}: ${t.error}`; }
  else if (t.state === "finished") { li.textContent = `${t.name}: ${t.direction === "upload" ? "shared" : "saved"} ✓`; }
  else {
    li.textContent = `${t.state === "hashing" ? "Checking" : verb} ${t.name}`;
    const bar = document.createElement("progress");
    bar.max = t.size || 1;
    bar.value = t.done;
    li.append(bar, document.createTextNode(t.size ? `${Math.floor(100 * t.done / t.size)}%` : ""));
  }
  if (t.state === "finished" || t.state === "failed") setTimeout(() => { li.remove(); shown.delete(t.direction + t.tid); }, 8000);
}

function fetchFile(info) {
  if (client.tooLargeForPage(info)) {  // the browser's download manager: it resumes after a drop, and holds gigabytes
    client.fileLink(info).then((url) => {
      const a = document.createElement("a");
      a.href = url;
      a.download = info.name;
      document.body.append(a);
      a.click();
      a.remove();
      notice(`Your browser is downloading ${info.name}. Its SHA-256 should be ${info.sha256}.`, "system");
    }, (e) => notice(e.message, "error"));
    return;
  }
  const transfer = client.download(info);
  transfer.finished.then((blob) => {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = transfer.name;
    document.body.append(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 60000);
  }, () => {});
}

function shareFiles(files) {
  for (const file of files) client.share(file, current === "#general" ? null : current);
}

function atBottom() {
  const log = $("log");
  return log.scrollHeight - log.scrollTop - log.clientHeight < 40;
}

function show(event, replay) {
  const conv = conversationOf(event, client.name);
  if (!replay) notify(event, conv);
  if (replay && !historyEnded) { addConv(conv); return; }  // the history on joining is drawn once, when it is all here
  if (conv.toLowerCase() !== current.toLowerCase()) {
    if (!replay && event.kind === "message" && event.name !== client.name) {
      unread.set(conv, (unread.get(conv) || 0) + 1);
      renderConvs();
    }
    addConv(conv);
    return;
  }
  const stick = atBottom();
  $("log").append(line(event, { replay }));
  if (stick) $("log").scrollTop = $("log").scrollHeight;
}

function render() {
  const log = $("log");
  const events = [...client.events.values()].sort((a, b) => a.id - b.id)
    .filter((e) => conversationOf(e, client.name).toLowerCase() === current.toLowerCase() && !CHANGES.has(e.kind));
  const lines = document.createDocumentFragment();  // built aside, put in at once: one layout
  let marked = !historyEnded;
  for (const e of events) {
    if (!marked && !e.replayed) { lines.append(marker()); marked = true; }
    lines.append(line(e, { replay: e.replayed }));
  }
  if (!marked) lines.append(marker());
  log.replaceChildren(lines);
  for (const frame of client.outbox.values()) {
    const conv = frame.to ? "@" + frame.to : "#" + (frame.room || "general");
    if (conv.toLowerCase() === current.toLowerCase()) {
      log.append(line({ kind: "message", name: client.name, text: frame.text, cid: frame.cid, to: frame.to }, { pending: true }));
    }
  }
  $("conv-title").textContent = current.startsWith("@") ? `Direct conversation with ${current.slice(1)}` : current;
  log.scrollTop = log.scrollHeight;
}

const CHANGES = new Set(["delete", "edit", "react"]);  // events that change others: not lines of their own

function marker() {
  const li = document.createElement("li");
  li.className = "marker";
  li.textContent = "— end of history —";
  return li;
}

const convs = ["#general"];

function addConv(conv) {
  if (!convs.some((c) => c.toLowerCase() === conv.toLowerCase())) { convs.push(conv); renderConvs(); }
}

function renderConvs() {
  const list = $("convs");
  list.replaceChildren();
  for (const conv of convs) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = conv;
    if (conv === current) b.setAttribute("aria-current", "true");
    const count = unread.get(conv);
    if (count) { const badge = document.createElement("span"); badge.className = "badge"; badge.textContent = count; b.append(badge); }
    b.onclick = () => switchTo(conv);
    li.append(b);
    list.append(li);
  }
  paintTitle();
}

function switchTo(conv) {
  current = conv;
  unread.delete(conv);
  addConv(conv);
  renderConvs();
  render();
  paintTyping();
  $("side").classList.remove("open");
  $("menu").setAttribute("aria-expanded", "false");
  $("text").focus();
}

function renderUsers(users) {
  const list = $("users");
  list.replaceChildren();
  for (const name of [...users].sort((a, b) => a.localeCompare(b))) {
    const li = document.createElement("li");
    const p = client.presence[name] || {};
    li.textContent = (p.away ? "○ " : "● ") + name + (name === client.name ? " (you)" : "");
    if (p.away) li.classList.add("away");
    if (name !== client.name) { li.tabIndex = 0; li.onclick = li.onkeydown = (e) => { if (!e.key || e.key === "Enter") switchTo("@" + name); }; }
    list.append(li);
  }
}

function showTyping(frame) {
  const conv = conversationOf(frame, client.name);
  const names = typing.get(conv) || new Map();
  clearTimeout(names.get(frame.name));
  names.set(frame.name, setTimeout(() => { names.delete(frame.name); paintTyping(); }, 6000));
  typing.set(conv, names);
  paintTyping();
}

function paintTyping() {
  const names = [...(typing.get(current) || new Map()).keys()];
  $("typing").textContent = names.length === 0 ? "" : names.length === 1 ? `${names[0]} is typing…` :
    names.length === 2 ? `${names[0]} and ${names[1]} are typing…` : "several people are typing…";
}

function join(event) {
  event.preventDefault();
  const name = $("name").value.trim();
  const passkey = $("passkey").value;
  if (!name || !passkey) return;
  $("join-button").disabled = true;
  $("join-message").textContent = "Connecting…";
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  if (client) client.stop();
  const transport = new URLSearchParams(location.search).get("transport") || "auto";  // ?transport=https forces the fallback
  client = new ChatClient({ ws: `${scheme}//${location.host}/ws`, poll: "/poll" }, name, passkey, { transport });
  client.addEventListener("welcome", (e) => {
    welcomedAt = performance.now();
    $("join").hidden = true;
    $("chat").hidden = false;
    $("title").textContent = e.detail.server;
    renderConvs();
    $("text").focus();
  });
  client.addEventListener("refused", (e) => {
    $("chat").hidden = true;
    $("join").hidden = false;
    $("join-button").disabled = false;
    $("join-message").textContent = e.detail.changed ?
      "The server's passkey has changed. Type the new one to rejoin; what you wrote meanwhile is kept." : e.detail.message;
    $("passkey").value = "";
    $("passkey").focus();
  });
  client.addEventListener("state", (e) => { $("status").textContent = e.detail.text; });
  client.addEventListener("users", (e) => renderUsers(e.detail));
  client.addEventListener("rooms", (e) => { for (const r of e.detail) addConv("#" + r); });
  client.addEventListener("event", (e) => { e.detail.event.replayed = e.detail.replay; show(e.detail.event, e.detail.replay); });
  client.addEventListener("synced", () => {
    const first = !historyEnded;
    historyEnded = true;
    const start = performance.now();
    render();
    void $("log").offsetHeight;  // (layout included)
    if (first) timings.push({ events: $("log").children.length, renderMs: performance.now() - start,
                              sinceWelcomeMs: performance.now() - welcomedAt });
  });
  client.addEventListener("acked", () => render());
  client.addEventListener("changed", (e) => {
    if (conversationOf(e.detail, client.name).toLowerCase() === current.toLowerCase()) render();
  });
  client.addEventListener("typing", (e) => showTyping(e.detail));
  client.addEventListener("error", (e) => notice(e.detail.message || e.detail.code, "error"));
  client.addEventListener("notice", (e) => notice(e.detail, "system"));
  client.addEventListener("answer", (e) => answered(e.detail));
  client.addEventListener("transfer", (e) => showTransfer(e.detail));
  client.start();
}

function answered(frame) {
  if (frame.type === "search-results") {
    notice(frame.events.length ? `Found ${frame.events.length}${frame.more ? "+" : ""} for “${frame.q}”:` : `Nothing found for “${frame.q}”.`, "system");
    for (const e of frame.events) notice(`${time(e.ts)} ${e.room ? "#" + e.room : "@" + (e.to || "")} ${e.name}: ${e.text}`, "system");
  } else if (frame.type === "oper") {
    notice("You are an operator now: /kick, /ban, /mute, /announce, /passkey…", "system");
  } else if (frame.type === "mod-done") {
    notice(frame.message || "Done.", "system");
    if (frame.passkey) notice(`New passkey: ${frame.passkey} — tell it only to people who should join.`, "system");
  } else if (frame.type === "users") {
    notice("Online: " + frame.users.join(", "), "system");
  }
}

function notice(text, style) {
  const li = document.createElement("li");
  li.className = style;
  li.textContent = text;
  $("log").append(li);
  $("log").scrollTop = $("log").scrollHeight;
}

function send(event) {
  event.preventDefault();
  const text = $("text").value;
  if (!text.trim()) return;
  if (text.startsWith("/") && !text.startsWith("//")) {
    $("text").value = "";
    const done = parse(text, current);
    if (done.error) { notice(done.error, "error"); return; }
    if (done.show) { notice(done.show, "system"); return; }
    if (done.frame) client.send(done.frame);
    if (done.say) client.say(done.say.text, done.say.conv);
    if (done.switchTo) switchTo(done.switchTo);
    return;
  }
  client.say(text.startsWith("//") ? text.slice(1) : text, current === "#general" ? null : current);
  $("text").value = "";
  render();
}

let lastTyping = 0;
function typed(event) {
  if (event.key === "Enter" && !event.shiftKey) { send(event); return; }
  const now = Date.now();
  if (client && now - lastTyping > 2000) { lastTyping = now; client.typingIn(current === "#general" ? null : current); }
}

window.addEventListener("DOMContentLoaded", () => {
  $("join-form").addEventListener("submit", join);
  $("say").addEventListener("submit", send);
  $("text").addEventListener("keydown", typed);
  $("join-room").addEventListener("submit", (e) => {
    e.preventDefault();
    const room = $("room-name").value.trim().replace(/^#/, "");
    if (room) { client.join(room); $("room-name").value = ""; switchTo("#" + room); }
  });
  $("attach").addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", () => { shareFiles([...$("file").files]); $("file").value = ""; });
  const area = $("conversation");
  area.addEventListener("dragover", (e) => { e.preventDefault(); area.classList.add("dropping"); });
  area.addEventListener("dragleave", () => area.classList.remove("dropping"));
  area.addEventListener("drop", (e) => { e.preventDefault(); area.classList.remove("dropping"); shareFiles([...e.dataTransfer.files]); });
  $("text").addEventListener("paste", (e) => {
    const files = [...(e.clipboardData ? e.clipboardData.files : [])];
    if (files.length) { e.preventDefault(); shareFiles(files); }
  });
  $("notify").addEventListener("click", askNotify);
  paintNotify();
  document.addEventListener("visibilitychange", () => { if (!document.hidden) { unseenHere = 0; paintTitle(); } });
  $("menu").addEventListener("click", () => {
    const open = $("side").classList.toggle("open");
    $("menu").setAttribute("aria-expanded", String(open));
  });
});
