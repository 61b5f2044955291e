// The tcpchat login proof (PROTOCOL.rst, "Login proof"), for the browser client.
// SPAKE2 over edwards25519 with @noble/curves and @noble/hashes (vendored, audited); no I/O.
import { ed25519 } from "./vendor/noble/curves/ed25519.js";
import { hkdf } from "./vendor/noble/hashes/hkdf.js";
import { hmac } from "./vendor/noble/hashes/hmac.js";
import { sha256 } from "./vendor/noble/hashes/sha2.js";
import { bytesToHex, concatBytes, hexToBytes, randomBytes, utf8ToBytes } from "./vendor/noble/hashes/utils.js";

const Point = ed25519.Point;
const L = 2n ** 252n + 27742317777372353535851937790883648493n;
// normative constants (PROTOCOL.rst): python-spake2's arbitrary elements for the seeds "M" and "N"
const M = Point.fromHex("15cfd18e385952982b6a8f8c7854963b58e34388c8e6dae891db756481a02312");
const N = Point.fromHex("f04f2e7eb734b2a8f8b472eaf9c3c632576ac64aea650b496a8a20ff00e583c3");
const CLIENT_ID = utf8ToBytes("tcpchat client");
const SERVER_ID = utf8ToBytes("tcpchat server");
const SERVER_LABEL = utf8ToBytes("tcpchat server confirm");
const CLIENT_LABEL = utf8ToBytes("tcpchat client confirm");

const bigBE = (bytes) => BigInt("0x" + (bytesToHex(bytes) || "0"));

/** What people type, as the proof uses it: lower case, without spaces, tabs or dashes, UTF-8. */
export function canonicalPasskey(text) {
  return utf8ToBytes(text.toLowerCase().replace(/[ \t-]/g, ""));
}

function scalarOf(entropy) {
  if (entropy.length !== 64) throw new Error("64 bytes of entropy are needed");
  return bigBE(entropy) % L;
}

const times = (point, k) => point.multiplyUnsafe(k % L);

/** Start as the client: { state, message } where message (33 bytes) goes in hello.pake as hex. */
export function clientStart(passkey, entropy = randomBytes(64)) {
  const pw = canonicalPasskey(passkey);
  const w = bigBE(hkdf(sha256, pw, new Uint8Array(0), utf8ToBytes("SPAKE2 pw"), 48)) % L;
  const x = scalarOf(entropy);
  const X = times(Point.BASE, x).add(times(M, w));
  const message = concatBytes(Uint8Array.of(0x41), X.toBytes());
  return { state: { pw, w, x, X: X.toBytes() }, message };
}

/** The server's answer (pake.msg, pake.confirm) checked: the client's confirmation, or an Error. */
export function clientFinish(state, serverMessage, serverConfirm, binding = new Uint8Array(0)) {
  if (serverMessage.length !== 33 || serverMessage[0] !== 0x42) throw new Error("not a server SPAKE2 message");
  const encY = serverMessage.subarray(1);
  const Y = Point.fromBytes(encY);
  if (Y.is0() || !Y.isTorsionFree()) throw new Error("the server's element is not in the group");
  if (bytesToHex(encY) === bytesToHex(state.X)) throw new Error("reflected message");
  const K = times(Y.add(times(N, state.w).negate()), state.x);
  const key = sha256(concatBytes(sha256(state.pw), sha256(CLIENT_ID), sha256(SERVER_ID), state.X, encY, K.toBytes()));
  const expected = hmac(sha256, key, concatBytes(SERVER_LABEL, binding));
  if (bytesToHex(expected) !== bytesToHex(serverConfirm)) throw new Error("Wrong passkey.");
  return { key, confirm: hmac(sha256, key, concatBytes(CLIENT_LABEL, binding)), K: K.toBytes() };
}

export { bytesToHex, hexToBytes };
