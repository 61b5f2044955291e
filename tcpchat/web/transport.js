// What carries the frames: a WebSocket, or the HTTPS fallback (PROTOCOL.rst, "HTTPS fallback") where a
// WebSocket cannot be opened (Safari on iOS with a self-signed certificate). Both look the same to client.js:
//   onopen(), onmessage(string | ArrayBuffer), onclose()  — set by the user
//   send(text), sendBinary(Uint8Array), buffered (bytes not yet taken by the network), close()
// No DOM here.

const MAX_POST = 256 * 1024;   // bytes of frames per POST (the server takes up to 1 MiB)
const RETRIES = 4;             // a request that fails is sent again this many times (growing pauses) before giving up

export class WebSocketTransport {
  constructor(url) {
    this.kind = "websocket";
    this.opened = false;
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => { this.opened = true; this.onopen(); };
    ws.onmessage = (m) => this.onmessage(m.data);
    ws.onclose = () => this.onclose();
    ws.onerror = () => {};
    this.ws = ws;
  }
  get isOpen() { return this.ws.readyState === WebSocket.OPEN; }
  get buffered() { return this.ws.bufferedAmount; }
  send(text) { this.ws.send(text); }
  sendBinary(bytes) { this.ws.send(bytes); }
  close() { this.ws.close(); }
}

/** The fallback: one poll always held for what the server sends, one POST at a time for what we send. */
export class PollTransport {
  constructor(base) {
    this.kind = "https";
    this.base = base;
    this.opened = false;
    this.closed = false;
    this.ack = 0;          // bytes of the server's stream received
    this.at = 0;           // bytes of our stream the server has taken
    this.queue = [];       // framed frames not yet posted
    this.queued = 0;
    this.posting = null;   // the body in flight
    this.aborter = new AbortController();
    this.open();
  }

  get isOpen() { return this.opened && !this.closed; }
  get buffered() { return this.queued + (this.posting ? this.posting.length : 0); }

  async open() {
    let answer;
    try {
      answer = await fetch(this.base, { method: "POST", cache: "no-store", signal: this.aborter.signal });
    } catch { this.end(); return; }
    if (!answer.ok) {  // refused: the body is the error frame that says why
      try { this.onmessage(await answer.text()); } catch {}
      this.end();
      return;
    }
    const { sid } = await answer.json();
    this.url = `${this.base}/${sid}`;
    this.opened = true;
    this.onopen();
    this.poll();
  }

  async poll() {
    for (let failures = 0; !this.closed;) {
      let answer;
      try {
        answer = await fetch(`${this.url}?ack=${this.ack}`, { cache: "no-store", signal: this.aborter.signal });
      } catch {
        if (this.closed || ++failures > RETRIES) break;
        await pause(failures);
        continue;
      }
      if (answer.status !== 200) break;  // 410: over; 404: gone; 409: we lost our place
      let body;
      try { body = new Uint8Array(await answer.arrayBuffer()); } catch { if (++failures > RETRIES) break; continue; }
      failures = 0;
      this.ack += body.length;
      for (const payload of frames(body)) {
        if (this.closed) return;
        this.onmessage(payload[0] === 0 ? payload.slice().buffer : utf8.decode(payload));
      }
    }
    this.end();
  }

  send(text) { this.enqueue(utf8encode(text)); }
  sendBinary(bytes) { this.enqueue(bytes); }

  enqueue(payload) {
    if (this.closed) return;
    const framed = new Uint8Array(4 + payload.length);
    new DataView(framed.buffer).setUint32(0, payload.length);
    framed.set(payload, 4);
    this.queue.push(framed);
    this.queued += framed.length;
    if (!this.posting) this.post();
  }

  async post() {
    while (this.queue.length && !this.closed) {
      const parts = [];
      let size = 0;
      while (this.queue.length && (!parts.length || size + this.queue[0].length <= MAX_POST)) {
        const next = this.queue.shift();
        parts.push(next);
        size += next.length;
      }
      this.queued -= size;
      const body = new Uint8Array(size);
      let at = 0;
      for (const part of parts) { body.set(part, at); at += part.length; }
      this.posting = body;
      for (let failures = 0; ; ) {  // the same body at the same offset until the server has it
        let status = 0;
        try {
          const answer = await fetch(`${this.url}?at=${this.at}`, {
            method: "POST", body, cache: "no-store", signal: this.aborter.signal,
            headers: { "Content-Type": "application/octet-stream" },
          });
          status = answer.status;
        } catch {}
        if (this.closed) return;
        if (status === 204) { this.at += body.length; break; }
        if (status && status !== 429) { this.end(); return; }  // 410, 404, 409, 400, 413: this session is over
        if (++failures > RETRIES) { this.end(); return; }
        await pause(failures);
      }
      this.posting = null;
    }
  }

  close() {
    if (this.closed) return;
    if (this.url) fetch(this.url, { method: "DELETE", keepalive: true }).catch(() => {});
    this.end();
  }

  end() {
    if (this.closed) return;
    this.closed = true;
    this.aborter.abort();
    this.queue = [];
    this.queued = 0;
    this.posting = null;
    this.onclose();
  }
}

const utf8 = new TextDecoder();
const encoder = new TextEncoder();
const utf8encode = (text) => encoder.encode(text);
const pause = (failures) => new Promise((resolve) => setTimeout(resolve, 250 * 2 ** failures));

/** The payloads of a run of length-prefixed frames (a poll's answer is whole frames). */
export function* frames(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let at = 0; at + 4 <= bytes.length;) {
    const length = view.getUint32(at);
    if (at + 4 + length > bytes.length) return;
    yield bytes.subarray(at + 4, at + 4 + length);
    at += 4 + length;
  }
}
