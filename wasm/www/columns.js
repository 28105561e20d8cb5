// The session table's columns and rows, shared by the page (app.js) and the view worker
// (view-worker.js) that filters and sorts them off the main thread.

export const COLUMNS = [
  { key: "n", label: "#", num: true },
  { key: "client", label: "client" },
  { key: "server", label: "server" },
  { key: "version", label: "version" },
  { key: "method", label: "method", num: true },
  { key: "username", label: "user" },
  { key: "command", label: "command" },
  { key: "dst", label: "destination" },
  { key: "reply_code", label: "reply", num: true },
  { key: "bytes_up", label: "bytes ↑", num: true },
  { key: "bytes_down", label: "bytes ↓", num: true },
  { key: "udp", label: "udp ↑/↓", num: true },
  { key: "tunnel", label: "tunnelled" },
  { key: "start", label: "start", num: true },
  { key: "duration", label: "duration s", num: true },
  { key: "anomalies", label: "anomalies", num: true },
];

export function hostPort(host, port) {
  if (host == null) return "";
  return (host.includes(":") ? `[${host}]` : host) + ":" + port;
}

// "YYYY-MM-DD hh:mm:ss" of each whole second seen: a capture's sessions share seconds, and
// Date#toISOString per row is a large part of building 200,000 rows.
const secondText = new Map();

/** `new Date(t * 1000).toISOString()` as "YYYY-MM-DD hh:mm:ss.mmm" (no T, no Z). */
export function timeText(t) {
  const ms = Math.trunc(t * 1000); // what Date does with a fractional time value
  if (!(ms >= 0 && ms < 253402300800000)) return new Date(t * 1000).toISOString().replace("T", " ").replace("Z", "");
  const sec = Math.floor(ms / 1000);
  let head = secondText.get(sec);
  if (head === undefined) {
    head = new Date(sec * 1000).toISOString().slice(0, 19).replace("T", " ");
    if (secondText.size > 1 << 16) secondText.clear();
    secondText.set(sec, head);
  }
  return head + "." + String(ms - sec * 1000).padStart(3, "0");
}

export function toRow(s, i) {
  return {
    n: i + 1,
    client: s.client,
    server: s.server,
    version: s.version,
    method: s.method,
    username: s.username ?? "",
    command: s.command ?? "",
    dst: hostPort(s.dst_host, s.dst_port),
    reply_code: s.reply_code,
    bytes_up: s.bytes_up,
    bytes_down: s.bytes_down,
    udp: s.udp_datagrams_up + s.udp_datagrams_down,
    udpText: s.udp_datagrams_up || s.udp_datagrams_down ? `${s.udp_datagrams_up}/${s.udp_datagrams_down}` : "",
    tunnel: s.tunnelled ? s.tunnelled + (s.sni ? ` (${s.sni})` : "") : "",
    start: s.start,
    startText: timeText(s.start),
    duration: +(s.end - s.start).toFixed(6),
    anomalies: s.anomalies.length,
    session: s,
  };
}

export function cellText(row, key) {
  switch (key) {
    case "start": return row.startText;
    case "udp": return row.udpText;
    case "method": return row.method == null ? "" : String(row.method);
    case "reply_code": return row.reply_code == null ? "" : String(row.reply_code);
    case "anomalies": return row.anomalies ? String(row.anomalies) : "";
    default: return row[key] == null ? "" : String(row[key]);
  }
}


/**
 * The rows shown: `rows` filtered by `predicate` (or all) and the time `window` ([from, to]
 * or null), sorted by column `sortKey`, ascending or not; missing values last.
 */
export function visibleRows(rows, { predicate, window, sortKey, sortAsc }) {
  if (predicate) rows = rows.filter(predicate);
  if (window) {
    const [from, to] = window;
    rows = rows.filter((r) => r.session.start <= to && r.session.end >= from);
  }
  const col = COLUMNS.find((c) => c.key === sortKey);
  const dir = sortAsc ? 1 : -1;
  return [...rows].sort((a, b) => {
    const x = a[sortKey], y = b[sortKey];
    if (x == null && y == null) return 0;
    if (x == null) return 1;
    if (y == null) return -1;
    return (col.num ? x - y : String(x).localeCompare(String(y), undefined, { numeric: true })) * dir;
  });
}
