// Reads the session table the inspector hands over in columns (`Inspection.table()`, see
// wasm/src/table.rs): `Sessions` keeps it in columns and builds session objects (the same
// objects as `JSON.parse(inspection.summaryJson()).sessions`, messages empty) and rows only
// for the sessions asked for. No per-session JSON is built, copied or parsed, and each
// distinct text (a server, a destination, an empty anomaly list) is sliced or parsed once.

import { toRow } from "./columns.js";

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

/**
 * The sessions of a table's parts, kept in columns: the numbers the table, the timeline and
 * the sort need are read straight from the columns, and a session object (the same object as
 * `JSON.parse(summaryJson()).sessions[k]`, messages empty) or a table row is built only when
 * asked for: for 200,000 sessions, building them all up front would cost more than the rest of
 * the page's work. Texts are sliced and lists parsed once each, on first use; lists and the
 * GSS-API object are shared between the sessions that have the same ones: read, never mutate.
 */
export class Sessions {
  constructor({ count, numbers, texts, strings, lengths, columns }) {
    if (columns !== [...NUMBERS, ...TEXTS].join(",")) {
      throw new Error(`unexpected session table columns (page and package out of step): ${columns}`);
    }
    this.count = count;
    this.numbers = numbers;
    this.texts = texts;
    this.joined = strings;
    this.lengths = lengths;
    this.offsets = new Uint32Array(lengths.length);
    for (let i = 0, at = 0; i < lengths.length; i++) { this.offsets[i] = at; at += lengths[i]; }
    this.strings = new Array(lengths.length); // sliced on first use
    this.parsed = new Map(); // distinct text index -> its parsed JSON
    this.rowCache = new Array(count);
  }

  /** Distinct text `i`. */
  string(i) {
    let s = this.strings[i];
    if (s === undefined) {
      s = this.joined.slice(this.offsets[i], this.offsets[i] + this.lengths[i]);
      this.strings[i] = s;
    }
    return s;
  }

  /** Distinct text `i` parsed as JSON. */
  json(i) {
    let v = this.parsed.get(i);
    if (v === undefined) { v = JSON.parse(this.string(i)); this.parsed.set(i, v); }
    return v;
  }

  /** Session `k`'s first packet's time (epoch seconds). */
  start(k) { return this.numbers[k * NUMBERS.length + 8]; }

  /** Session `k`'s last packet's time (epoch seconds). */
  end(k) { return this.numbers[k * NUMBERS.length + 9]; }

  /** How many anomalies session `k` has. */
  anomalyCount(k) { return this.json(this.texts[k * TEXTS.length + 13]).length; }

  /** Session `k` as an object (a new one each call). */
  session(k) {
    const { numbers, texts } = this;
    const n = k * NUMBERS.length, t = k * TEXTS.length;
    const text = (i) => (i === ABSENT ? null : this.string(i));
    const num = (x) => (Number.isNaN(x) ? null : x);
    const authOk = numbers[n + 1];
    // One literal, keys in the order of the JSON document (a fixed shape, built at once).
    const s = {
      client: this.string(texts[t]),
      server: this.string(texts[t + 1]),
      version: this.string(texts[t + 2]),
      methods_offered: this.json(texts[t + 12]),
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
      anomalies: this.json(texts[t + 13]),
      first_frame: numbers[n + 10],
      udp_relay: text(texts[t + 11]),
      udp_destinations: this.json(texts[t + 14]),
      messages: [],
    };
    // The rare keys (a revealed password, a GSS-API exchange) in their JSON places.
    return texts[t + 4] === ABSENT && texts[t + 15] === ABSENT ? s : withRareKeys(s,
      text(texts[t + 4]), texts[t + 15] === ABSENT ? undefined : this.json(texts[t + 15]));
  }

  /** Session `k`'s table row (`toRow`), built once. */
  row(k) {
    let r = this.rowCache[k];
    if (r === undefined) { r = toRow(this.session(k), k); this.rowCache[k] = r; }
    return r;
  }

  /** Every session's row, in the table's order. */
  rows() {
    return Array.from({ length: this.count }, (_, k) => this.row(k));
  }
}

/** Session objects (in the table's order) from the parts of a table. */
export function sessionsFromTable(parts) {
  const table = new Sessions(parts);
  return Array.from({ length: table.count }, (_, k) => table.session(k));
}
