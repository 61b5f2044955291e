// The browser's client core: the WebSocket, login (SPAKE2), the conversation, the outbox, reconnects.
// No DOM here: app.js is the view and listens to the events this object emits.
import { bytesToHex, clientFinish, clientStart, hexToBytes } from "./spake2.js";
import { sha256 } from "./vendor/noble/hashes/sha2.js";
import { PollTransport, WebSocketTransport } from "./transport.js";

const CHUNK = 64 * 1024;          // file data per frame (PROTOCOL.rst recommends 64 KiB)
const HIGH_WATER = 4 * 1024 * 1024; // bytes queued on the socket before an upload waits

const OUTBOX_KEY = "tcpchat.outbox";
const IN_PAGE_MAX = 64 * 1024 * 1024;  // files up to this size are downloaded by the page (SHA-256 checked here)

export class ChatClient extends EventTarget {
  /**
   * urls: {ws, poll} (the WebSocket's address, the fallback's path). transport: "auto" (the WebSocket,
   * and the HTTPS fallback when the WebSocket cannot be opened but the server answers), "websocket" or "https".
   */
  constructor(urls, name, passkey, { transport = "auto" } = {}) {
    super();
    this.urls = urls;
    this.mode = transport;
    this.wsBroken = transport === "https";  // the WebSocket failed where plain requests worked: use the fallback
    this.name = name;
    this.passkey = passkey;
    this.link = null;
    this.links = new Map();      // file id -> Promise of its download address
    this.loggedIn = false;
    this.everLoggedIn = false;
    this.stopped = false;
    this.info = {};
    this.events = new Map();     // id -> event
    this.lastId = 0;
    this.users = [];
    this.rooms = new Map();      // name -> {members, seen}
    this.presence = {};
    this.outbox = new Map(JSON.parse(localStorage.getItem(OUTBOX_KEY) || "[]"));  // cid -> say frame
    this.attempt = 0;
    this.nextTid = 1;
    this.transfers = new Map();  // tid -> {direction, name, size, done, ...}
  }

  emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  start() {
    this.stopped = false;
    this.emit("state", { state: "connecting", text: "Connecting…" });
    this.connect(this.wsBroken ? "https" : "websocket");
  }

  connect(kind) {
    let link;
    try {
      link = kind === "https" ? new PollTransport(this.urls.poll) : new WebSocketTransport(this.urls.ws);
    } catch {  // a browser may refuse to even try (a SecurityError): the fallback then, as for a failed handshake
      if (kind === "websocket" && this.mode === "auto") { this.connect("https"); return; }
      throw new Error("This browser cannot reach the server.");
    }
    this.link = link;
    this.pake = null;
    link.onopen = () => {
      if (kind === "https" && !this.wsBroken) { this.wsBroken = true; this.emit("transport", { kind }); }
      this.hello();
    };
    link.onmessage = (data) => this.received(data);
    link.onclose = () => {
      // a WebSocket that never opened: try the fallback at once (if the server answers that, it stays chosen)
      if (link === this.link && kind === "websocket" && !link.opened && this.mode === "auto" && !this.stopped) {
        this.connect("https");
        return;
      }
      this.closed(link);
    };
  }

  get transport() { return this.link ? this.link.kind : null; }

  stop() {
    this.stopped = true;
    if (this.link) { this.send({ type: "bye" }); this.link.close(); }
  }

  send(frame) {
    if (this.link && this.link.isOpen) { this.link.send(JSON.stringify(frame)); return true; }
    return false;
  }

  hello() {
    const { state, message } = clientStart(this.passkey);
    this.pake = state;
    const frame = { type: "hello", version: 1, name: this.name, pake: bytesToHex(message), client: "tcpchat-web",
                    features: ["rooms", "edits", "roster"] };
    if (this.everLoggedIn) { frame.after = this.lastId; frame.session = this.info.session; }
    this.send(frame);
  }

  closed(link) {
    if (link !== this.link) return;
    this.loggedIn = false;
    this.link = null;
    if (this.stopped) { this.emit("state", { state: "disconnected", text: "Disconnected." }); return; }
    if (!this.everLoggedIn) { this.emit("refused", { code: "unreachable", message: this.refusal || "Could not reach the server." }); return; }
    const delay = Math.min(30, 0.5 * 2 ** this.attempt++) * (0.8 + Math.random() * 0.4);
    this.emit("state", { state: "reconnecting", text: `Connection lost; reconnecting in ${Math.round(delay)} s…` });
    setTimeout(() => { if (!this.stopped) this.start(); }, delay * 1000);
  }

  received(data) {
    if (typeof data !== "string") return;  // data frames come only for "download", which this client does over HTTPS
    let frame;
    try { frame = JSON.parse(data); } catch { return; }
    const handler = this["on_" + String(frame.type).replace(/-/g, "_")];
    if (handler) handler.call(this, frame);
  }

  on_pake(frame) {
    let done;
    try {
      done = clientFinish(this.pake, hexToBytes(frame.msg), hexToBytes(frame.confirm));
    } catch (e) {
      this.giveUp("bad-passkey", "Wrong passkey.");
      return;
    }
    this.send({ type: "pake-confirm", confirm: bytesToHex(done.confirm) });
  }

  giveUp(code, message) {
    this.stopped = true;
    this.refusal = message;
    if (this.link) this.link.close();
    this.emit("refused", { code, message, changed: this.everLoggedIn && code === "bad-passkey" });
  }

  on_welcome(frame) {
    this.loggedIn = true;
    this.everLoggedIn = true;
    this.attempt = 0;
    this.info = frame;
    this.name = frame.name;
    this.users = frame.users.slice();
    this.presence = frame.presence || {};
    this.emit("welcome", frame);
    this.emit("users", this.users);
  }

  on_room(frame) {
    this.rooms.set(frame.room, { members: frame.members, seen: frame.seen || {} });
    this.emit("rooms", [...this.rooms.keys()]);
  }

  on_synced() {
    const how = this.transport === "https" ? " (over HTTPS requests: the WebSocket was refused)" : "";
    this.emit("state", { state: "connected", text: `Connected as ${this.name}${how}` });
    for (const frame of this.outbox.values()) this.send(frame);  // written offline, or not acknowledged before a drop
    this.emit("synced", {});
  }

  on_event(frame) {
    const event = { ...frame };
    delete event.type;
    this.lastId = Math.max(this.lastId, event.id);
    if (this.events.has(event.id)) return;
    this.events.set(event.id, event);
    if (event.kind === "edit" || event.kind === "react") { this.changed(event); return; }
    if (event.kind === "message" && event.name === this.name && this.outbox.has(event.cid)) {
      this.outbox.delete(event.cid);  // stored before a drop ate our ack
      this.saveOutbox();
      this.emit("acked", event);
      return;
    }
    if (event.kind === "join" && !this.users.includes(event.name)) { this.users.push(event.name); this.emit("users", this.users); }
    if (event.kind === "leave") { this.users = this.users.filter((u) => u !== event.name); this.emit("users", this.users); }
    this.emit("event", { event, replay: !!frame.replay });
  }

  /** An edit or a reaction (PROTOCOL.rst "Edits, replies and reactions"): the message it names, changed. */
  changed(change) {
    const target = this.events.get(change.target);
    if (!target) return;
    const now = { ...target };
    if (change.kind === "edit" && target.kind === "message") {
      now.text = change.text;
      now.edited = change.ts;
    } else if (change.kind === "react") {
      const reactions = { ...(target.reactions || {}) };
      const names = (reactions[change.emoji] || []).filter((n) => n !== change.name);
      if (change.on !== false) names.push(change.name);
      if (names.length) reactions[change.emoji] = names; else delete reactions[change.emoji];
      now.reactions = reactions;
      if (!Object.keys(reactions).length) delete now.reactions;
    } else return;
    this.events.set(now.id, now);
    this.emit("changed", now);
  }

  /** Add (or take back, on = false) one of the reactions to a message. */
  react(id, emoji, on = true) { this.send({ type: "react", id, emoji, on }); }

  on_ack(frame) {
    const said = this.outbox.get(frame.cid);
    if (!said) return;
    this.outbox.delete(frame.cid);
    this.saveOutbox();
    const event = { id: frame.id, ts: frame.ts, kind: "message", name: this.name, text: said.text, cid: frame.cid,
                    room: said.room || (said.to ? undefined : "general"), to: said.to };
    this.events.set(event.id, event);
    this.lastId = Math.max(this.lastId, event.id);
    this.emit("acked", event);
  }

  on_users(frame) { this.users = frame.users.slice(); this.emit("users", this.users); this.emit("answer", frame); }
  on_roster(frame) {
    // in a crowd (protocol 1.6): who came and went, instead of a join or leave event each
    const gone = new Set(frame.left || []);
    this.users = this.users.filter((u) => !gone.has(u));
    for (const name of frame.joined || []) if (!this.users.includes(name)) this.users.push(name);
    this.emit("users", this.users);
    if (frame.more) this.send({ type: "who" });
  }
  on_search_results(frame) { this.emit("answer", frame); }
  on_oper(frame) { this.operator = true; this.emit("answer", frame); }
  on_mod_done(frame) { if (frame.passkey) this.passkey = frame.passkey; this.emit("answer", frame); }
  on_presence(frame) { this.presence[frame.name] = { away: frame.away, status: frame.status }; this.emit("users", this.users); }
  on_typing(frame) { this.emit("typing", frame); }

  on_error(frame) {
    if (frame.ref === "file-link" && this.pendingLinks) {
      const fid = Number(String(frame.req || "").replace("link-", ""));
      const waiting = this.pendingLinks.get(fid);
      if (waiting) { this.pendingLinks.delete(fid); waiting.reject(new Error(frame.message || frame.code)); return; }
    }
    if (frame.tid !== undefined && this.transfers.has(frame.tid)) {
      this.failTransfer(this.transfers.get(frame.tid), frame.message || frame.code);
      return;
    }
    if (frame.ref === "hello" || frame.ref === "pake-confirm" ||
        ["bad-passkey", "name-taken", "bad-name", "banned", "too-many-attempts", "name-protected"].includes(frame.code)) {
      if (!this.loggedIn) { this.giveUp(frame.code, frame.message); return; }
    }
    if (frame.cid && this.outbox.has(frame.cid)) {
      if (["slow-down", "store-busy", "internal"].includes(frame.code)) {
        setTimeout(() => { const f = this.outbox.get(frame.cid); if (f) this.send(f); }, 1000);
        if (frame.code !== "internal") return;
      } else if (frame.code !== "server-busy") {
        this.outbox.delete(frame.cid);
        this.saveOutbox();
      } else return;
    }
    this.emit("error", frame);
  }

  on_bye(frame) {
    if (frame.reason === "kicked" || frame.reason === "banned") this.stopped = true;
    this.emit("notice", frame.message || "The server closed the connection.");
  }

  on_ping(frame) { this.send(frame.n === undefined ? { type: "pong" } : { type: "pong", n: frame.n }); }

  say(text, conv) {
    const cid = crypto.randomUUID ? crypto.randomUUID().replace(/-/g, "") : String(Date.now()) + Math.random();
    const frame = { type: "say", text, cid, ...convFields(conv) };
    this.outbox.set(cid, frame);
    this.saveOutbox();
    this.send(frame);
    return frame;
  }

  // ---------------------------------------------------------------- files

  /** Upload a File (from a picker, the camera, a drop or a paste): hashed here, sent in chunks, progress as events. */
  async share(file, conv) {
    const tid = this.nextTid++;
    const transfer = { tid, direction: "upload", name: safeName(file.name || "file"), size: file.size, done: 0,
                       state: "hashing" };
    this.transfers.set(tid, transfer);
    this.emit("transfer", transfer);
    const hash = sha256.create();
    for (let at = 0; at < file.size; at += 4 * CHUNK) {
      hash.update(new Uint8Array(await file.slice(at, at + 4 * CHUNK).arrayBuffer()));
    }
    transfer.sha256 = bytesToHex(hash.digest());
    transfer.state = "active";
    const frame = { type: "upload", tid, name: transfer.name, size: file.size, sha256: transfer.sha256,
                    ...convFields(conv) };
    if (file.type) frame.mime = file.type.slice(0, 255);
    if (!this.send(frame)) { this.failTransfer(transfer, "Not connected."); return transfer; }
    for (let at = 0; at < file.size && transfer.state === "active"; at += CHUNK) {
      while (this.link && this.link.buffered > HIGH_WATER) await new Promise((r) => setTimeout(r, 20));
      if (!this.link || !this.link.isOpen) { this.failTransfer(transfer, "The connection was lost; share the file again."); return transfer; }
      const data = new Uint8Array(await file.slice(at, at + CHUNK).arrayBuffer());
      const out = new Uint8Array(5 + data.length);
      new DataView(out.buffer).setUint32(1, tid);  // byte 0 is the data tag, 0x00
      out.set(data, 5);
      this.link.sendBinary(out);
      transfer.done = at + data.length;
      this.emit("transfer", transfer);
    }
    return transfer;
  }

  /** The HTTPS address of a shared file (a download link, PROTOCOL.rst "Download links"): a Promise. */
  fileLink(info) {
    const cached = this.links.get(info.id);
    if (cached) return cached;
    const promise = new Promise((resolve, reject) => {
      this.pendingLinks = this.pendingLinks || new Map();
      this.pendingLinks.set(info.id, { resolve, reject });
      if (!this.send({ type: "file-link", file: info.id, req: `link-${info.id}` })) reject(new Error("Not connected."));
    });
    this.links.set(info.id, promise);
    promise.catch(() => this.links.delete(info.id));
    return promise;
  }

  on_file_link(frame) {
    const waiting = this.pendingLinks && this.pendingLinks.get(frame.file);
    if (!waiting) return;
    this.pendingLinks.delete(frame.file);
    waiting.resolve(frame.url);
    setTimeout(() => this.links.delete(frame.file), Math.max(0, frame.expires * 1000 - Date.now() - 60000));
  }

  /** Too large to hold in the page: the browser's own download manager fetches (and resumes) it. */
  tooLargeForPage(info) { return (info.size || 0) > IN_PAGE_MAX; }

  /** Download a shared file into the page (from its file event): verified against its SHA-256; resolves with a Blob. */
  download(info, { quiet = false } = {}) {
    const tid = this.nextTid++;
    const transfer = { tid, direction: "download", name: safeName(info.name || "file"), size: info.size || 0, done: 0,
                       state: "active", sha256: info.sha256, mime: info.mime, quiet };
    transfer.finished = this.fetchInto(transfer, info);
    transfer.finished.catch((e) => this.failTransfer(transfer, e.message));
    this.emit("transfer", transfer);
    return transfer;
  }

  async fetchInto(transfer, info) {
    const url = await this.fileLink(info);
    const answer = await fetch(url, { cache: "no-store" });
    if (!answer.ok) throw new Error(answer.status === 403 ? "The download link expired; try again." : "The file is not there any more.");
    const reader = answer.body.getReader();
    const hash = sha256.create();
    const parts = [];
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value);
      hash.update(value);
      transfer.done += value.length;
      this.emit("transfer", transfer);
    }
    if (bytesToHex(hash.digest()) !== transfer.sha256) {
      throw new Error("The download arrived damaged (SHA-256 mismatch) and was dropped.");
    }
    transfer.state = "finished";
    transfer.blob = new Blob(parts, { type: transfer.mime || "application/octet-stream" });
    this.emit("transfer", transfer);
    return transfer.blob;
  }

  on_upload_done(frame) {
    const transfer = this.transfers.get(frame.tid);
    if (!transfer) return;
    transfer.state = "finished";
    transfer.done = transfer.size;
    this.transfers.delete(frame.tid);
    this.emit("transfer", transfer);
  }

  failTransfer(transfer, message) {
    if (transfer.state === "failed") return;
    transfer.state = "failed";
    transfer.error = message;
    this.transfers.delete(transfer.tid);
    this.emit("transfer", transfer);
  }

  join(room) { this.send({ type: "join", room }); }
  typingIn(conv) { this.send({ type: "typing", ...convFields(conv) }); }
  saveOutbox() { localStorage.setItem(OUTBOX_KEY, JSON.stringify([...this.outbox])); }
}

/** A file name the server accepts (PROTOCOL.rst, "Upload"): forbidden characters replaced, ends trimmed. */
export function safeName(name) {
  let clean = name.normalize("NFC").replace(/[\/\\:*?"<>|\u0000-\u001f\u007f]/g, "_").replace(/^[ .]+|[ .]+$/g, "");
  if (/^(con|prn|aux|nul|com[1-9]|lpt[1-9])(\..*)?$/i.test(clean)) clean = "_" + clean;
  while (new TextEncoder().encode(clean).length > 255) clean = clean.slice(0, -1);
  return clean || "file";
}

/** "#room" or "@name" -> the frame members naming it. */
export function convFields(conv) {
  if (!conv) return {};
  return conv.startsWith("@") ? { to: conv.slice(1) } : { room: conv.slice(1) };
}

/** The conversation an event belongs to, as user `me` sees it. */
export function conversationOf(event, me) {
  if (event.to) return "@" + (event.to.toLowerCase() === me.toLowerCase() ? event.name : event.to);
  return "#" + (event.room || "general");
}
