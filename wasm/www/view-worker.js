// Filters and sorts the session rows off the main thread, so typing in the filter box stays
// responsive with hundreds of thousands of sessions: the page keeps drawing while a pass
// runs, and only the newest request's answer is used.
// In:  { type: "rows", table }  the sessions in columns (as the inspector worker gave them)
//      { type: "view", seq, filter, window, sortKey, sortAsc }
// Out: { type: "view", seq, order: Int32Array }   indices into the rows, in display order
//      { type: "view", seq, error }               the filter did not compile
import { parseFilter } from "./filter.js";
import { COLUMNS, cellText, visibleRows } from "./columns.js";
import { Sessions } from "./table.js";

let rows = [];

self.onmessage = (event) => {
  const m = event.data;
  if (m.type === "rows") {
    rows = new Sessions(m.table).rows();
  } else if (m.type === "view") {
    let predicate = null;
    try {
      predicate = m.filter.trim() ? parseFilter(m.filter, cellText, COLUMNS) : null;
    } catch (e) {
      self.postMessage({ type: "view", seq: m.seq, error: String(e?.message ?? e) });
      return;
    }
    const shown = visibleRows(rows, { predicate, window: m.window, sortKey: m.sortKey, sortAsc: m.sortAsc });
    const order = new Int32Array(shown.length);
    for (let i = 0; i < shown.length; i++) order[i] = shown[i].n - 1;
    self.postMessage({ type: "view", seq: m.seq, order }, [order.buffer]);
  }
};
