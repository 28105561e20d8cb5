// Reads the session table the inspector hands over in columns (`Inspection.table()`, see
// wasm/src/table.rs) back into session objects: the same objects as
// `JSON.parse(inspection.summaryJson()).sessions` (messages empty), for a fraction of the cost
// on big captures: no per-session JSON is built, copied or parsed, and each distinct text
// (a server, a destination, an empty anomaly list) is sliced or parsed once. Lists and the
// GSS-API object are shared between the sessions that have the same ones: read, never mutate.

const NUMBERS = ["method", "auth_ok", "dst_port", "reply_code", "bytes_up", "bytes_down",
  "udp_datagrams_up", "udp_datagrams_down", "start", "end", "first_frame"];
const TEXTS = ["client", "server", "version", "username", "password", "command", "dst_host",
  "bound", "bind_peer", "tunnelled", "sni", "udp_relay", "methods_offered", "anomalies",
  "udp_destinations", "gssapi"];
const ABSENT = 0xffffffff;

/**
 * The table as a plain object of transferable parts ({ count, numbers: Float64Array,
 * texts: Uint32Array, strings, lengths: Uint32Array, columns }), freeing the wasm handle.
 */
export function tableParts(table) {
  try {
    return { count: table.count, numbers: table.numbers, texts: table.texts, strings: table.strings,
      lengths: table.lengths, columns: table.columns };
  } finally {
    table.free();
  }
}

/** The buffers of `parts` to transfer with postMessage. */
export function transferables(parts) {
  return [parts.numbers.buffer, parts.texts.buffer, parts.lengths.buffer];
}

/** `s` with `password` after `username` and `gssapi` last, each when given. */
function withRareKeys(s, password, gssapi) {
  const out = {};
  for (const [k, v] of Object.entries(s)) {
    if (k === "auth_ok" && password !== null) out.password = password;
    out[k] = v;
  }
  if (gssapi !== undefined) out.gssapi = gssapi;
  return out;
}

/** Session objects (in the table's order) from the parts of a table. */
export function sessionsFromTable({ count, numbers, texts, strings: joined, lengths, columns }) {
  if (columns !== [...NUMBERS, ...TEXTS].join(",")) {
    throw new Error(`unexpected session table columns (page and package out of step): ${columns}`);
  }
  const strings = new Array(lengths.length);
  for (let i = 0, at = 0; i < lengths.length; i++) {
    const end = at + lengths[i];
    strings[i] = joined.slice(at, end);
    at = end;
  }
  const parsed = new Map();
  const json = (i) => {
    let v = parsed.get(i);
    if (v === undefined) { v = JSON.parse(strings[i]); parsed.set(i, v); }
    return v;
  };
  const text = (i) => (i === ABSENT ? null : strings[i]);
  const num = (x) => (Number.isNaN(x) ? null : x);
  const sessions = new Array(count);
  const nw = NUMBERS.length, tw = TEXTS.length;
  for (let k = 0; k < count; k++) {
    const n = k * nw, t = k * tw;
    const authOk = numbers[n + 1];
    // One literal, keys in the order of the JSON document (a fixed shape, built at once).
    const s = {
      client: strings[texts[t]],
      server: strings[texts[t + 1]],
      version: strings[texts[t + 2]],
      methods_offered: json(texts[t + 12]),
      method: num(numbers[n]),
      username: text(texts[t + 3]),
      auth_ok: Number.isNaN(authOk) ? null : authOk === 1,
      command: text(texts[t + 5]),
      dst_host: text(texts[t + 6]),
      dst_port: num(numbers[n + 2]),
      reply_code: num(numbers[n + 3]),
      bound: text(texts[t + 7]),
      bind_peer: text(texts[t + 8]),
      bytes_up: numbers[n + 4],
      bytes_down: numbers[n + 5],
      udp_datagrams_up: numbers[n + 6],
      udp_datagrams_down: numbers[n + 7],
      start: numbers[n + 8],
      end: numbers[n + 9],
      tunnelled: text(texts[t + 9]),
      sni: text(texts[t + 10]),
      anomalies: json(texts[t + 13]),
      first_frame: numbers[n + 10],
      udp_relay: text(texts[t + 11]),
      udp_destinations: json(texts[t + 14]),
      messages: [],
    };
    // The rare keys (a revealed password, a GSS-API exchange) in their JSON places.
    sessions[k] = texts[t + 4] === ABSENT && texts[t + 15] === ABSENT ? s : withRareKeys(s,
      text(texts[t + 4]), texts[t + 15] === ABSENT ? undefined : json(texts[t + 15]));
  }
  return sessions;
}
