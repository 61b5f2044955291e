// node tests/js/spake2_vectors.mjs docs/spake2-vectors.json — the browser's SPAKE2 gives the published vectors.
import { readFileSync } from "node:fs";
import { clientFinish, clientStart, bytesToHex, hexToBytes } from "../../tcpchat/web/spake2.js";

const doc = JSON.parse(readFileSync(process.argv[2], "utf8"));
let failures = 0;
for (const v of doc.vectors) {
  const { state, message } = clientStart(v.passkey, hexToBytes(v.client_entropy));
  const got = { client_message: bytesToHex(message) };
  const done = clientFinish(state, hexToBytes(v.server_message), hexToBytes(v.server_confirm),
                            hexToBytes(v.channel_binding));
  Object.assign(got, { K: bytesToHex(done.K), key: bytesToHex(done.key), client_confirm: bytesToHex(done.confirm) });
  for (const [k, value] of Object.entries(got)) {
    if (value !== v[k]) { console.log(`MISMATCH ${k}: ${value} != ${v[k]}`); failures++; }
  }
  let refused = false;
  try { clientFinish(clientStart("wrong-guess", hexToBytes(v.client_entropy)).state, hexToBytes(v.server_message),
                     hexToBytes(v.server_confirm), hexToBytes(v.channel_binding)); } catch (e) { refused = e.message === "Wrong passkey."; }
  if (!refused) { console.log("a wrong passkey was not refused"); failures++; }
}
console.log(failures ? `${failures} failures` : `ok: ${doc.vectors.length} vectors`);
process.exit(failures ? 1 : 0);
