//! The session table in columns, for pages that show hundreds of thousands of sessions.
//!
//! `Inspection.summaryJson()` costs a JSON document of ~500 bytes per session, built in wasm,
//! decoded to UTF-16, copied to the page and parsed there (seconds for 200,000 sessions).
//! [`SessionTable`] carries the same facts as typed arrays and one string of the distinct
//! texts: numbers in a `Float64Array`, every text as an index into the distinct texts (a
//! capture repeats its servers, versions, commands, destinations and empty lists), so the
//! page rebuilds the session objects with a few slices and no parsing of per-session JSON.
//! `www/table.js` (`sessionsFromTable`) is its reader; the result equals
//! `JSON.parse(summaryJson()).sessions`.

use std::collections::HashMap;

use foldhash::SharedSeed;
use foldhash::fast::SeedableRandomState;
use socksgate_inspect::Session;
use wasm_bindgen::prelude::*;

/// The number columns, in order, per session (`NaN` for an absent value). `auth_ok` is 1, 0
/// or `NaN`.
pub(crate) const NUMBER_COLUMNS: [&str; 11] = [
    "method",
    "auth_ok",
    "dst_port",
    "reply_code",
    "bytes_up",
    "bytes_down",
    "udp_datagrams_up",
    "udp_datagrams_down",
    "start",
    "end",
    "first_frame",
];

/// The text columns, in order, per session: an index into the distinct texts, or
/// [`ABSENT`]. The last four are JSON (`methods_offered`, `anomalies`, `udp_destinations`:
/// arrays; `gssapi`: an object), parsed once per distinct text.
pub(crate) const TEXT_COLUMNS: [&str; 16] = [
    "client",
    "server",
    "version",
    "username",
    "password",
    "command",
    "dst_host",
    "bound",
    "bind_peer",
    "tunnelled",
    "sni",
    "udp_relay",
    "methods_offered",
    "anomalies",
    "udp_destinations",
    "gssapi",
];

/// A text column's value for an absent field (`null`, or a key left out).
pub(crate) const ABSENT: u32 = u32::MAX;

/// Every session of an inspection in columns (see the module docs). Built by
/// `Inspection.table()`.
#[wasm_bindgen(getter_with_clone)]
#[derive(Debug, Default)]
pub struct SessionTable {
    /// Number of sessions.
    pub count: u32,
    /// `count` × `NUMBER_COLUMNS` numbers, session after session.
    pub numbers: Vec<f64>,
    /// `count` × `TEXT_COLUMNS` indices into the distinct texts, session after session.
    pub texts: Vec<u32>,
    /// The distinct texts, one after the other.
    pub strings: String,
    /// The length of each distinct text in UTF-16 code units (JavaScript string indices).
    pub lengths: Vec<u32>,
    /// The column names: the number columns then the text columns, comma-separated.
    pub columns: String,
}

/// The interner's hash: foldhash (every text of every session is looked up; std's SipHash
/// costs several times more per short text), keyed with a random seed, as the texts come from
/// the capture, which an attacker may craft to collide in a keyless hash.
type Texts<K> = HashMap<K, u32, SeedableRandomState>;

/// Gives each distinct text an index, in order of first use.
struct Interner<'s> {
    /// Texts borrowed from the sessions.
    index: Texts<&'s str>,
    /// Texts made here (JSON of lists).
    made: Texts<String>,
    /// The JSON text of each list of methods offered (sessions repeat a few lists).
    methods: Texts<&'s [u8]>,
    table: SessionTable,
}

/// The index of `[]`, interned first: most sessions have no anomalies and no UDP destinations.
const EMPTY_LIST: u32 = 0;

impl<'s> Interner<'s> {
    fn new(seed: u64) -> Self {
        let state = || SeedableRandomState::with_seed(seed, SharedSeed::global_random());
        let mut t = Self {
            index: HashMap::with_hasher(state()),
            made: HashMap::with_hasher(state()),
            methods: HashMap::with_hasher(state()),
            table: SessionTable::default(),
        };
        t.append("[]");
        t
    }

    /// Appends `text` as the next distinct text (not looked up).
    fn append(&mut self, text: &str) -> u32 {
        let i = u32::try_from(self.table.lengths.len()).unwrap_or(ABSENT);
        self.table.strings.push_str(text);
        let units = if text.is_ascii() {
            text.len()
        } else {
            text.encode_utf16().count()
        };
        self.table
            .lengths
            .push(u32::try_from(units).unwrap_or(u32::MAX));
        i
    }

    fn text(&mut self, text: Option<&'s str>) -> u32 {
        let Some(text) = text else { return ABSENT };
        if let Some(&i) = self.index.get(text) {
            return i;
        }
        let i = self.append(text);
        self.index.insert(text, i);
        i
    }

    /// A text seen once per session (a client's address and port): appended, not looked up.
    fn unique(&mut self, text: &str) -> u32 {
        self.append(text)
    }

    /// A list of methods offered as JSON text, interned; serialised once per distinct list.
    fn methods(&mut self, list: &'s [u8]) -> u32 {
        if list.is_empty() {
            return EMPTY_LIST;
        }
        if let Some(&i) = self.methods.get(list) {
            return i;
        }
        let i = self.json(serde_json::to_string(list));
        self.methods.insert(list, i);
        i
    }

    /// A list of texts as JSON text, interned.
    fn list_of_texts(&mut self, list: &[String]) -> u32 {
        if list.is_empty() {
            return EMPTY_LIST;
        }
        self.json(serde_json::to_string(list))
    }

    /// A value serialised as JSON text (lists and the GSS-API object), interned.
    fn json(&mut self, serialised: serde_json::Result<String>) -> u32 {
        let text = serialised.unwrap_or_else(|_| "null".to_owned());
        if let Some(&i) = self.made.get(&text) {
            return i;
        }
        let i = self.append(&text);
        self.made.insert(text, i);
        i
    }
}

fn number<T: Into<f64>>(v: Option<T>) -> f64 {
    v.map_or(f64::NAN, Into::into)
}

/// `sessions` (messages are not carried) in columns; `seed` keys the hash of the texts.
pub fn session_table(sessions: &[Session], seed: u64) -> SessionTable {
    let mut t = Interner::new(seed);
    t.table.count = u32::try_from(sessions.len()).unwrap_or(u32::MAX);
    t.table
        .numbers
        .reserve(sessions.len() * NUMBER_COLUMNS.len());
    t.table.texts.reserve(sessions.len() * TEXT_COLUMNS.len());
    for s in sessions {
        #[allow(clippy::cast_precision_loss)] // counts and frame numbers stay far below 2^53
        t.table.numbers.extend([
            number(s.method),
            number(s.auth_ok.map(u8::from)),
            number(s.dst_port),
            number(s.reply_code),
            s.bytes_up as f64,
            s.bytes_down as f64,
            s.udp_datagrams_up as f64,
            s.udp_datagrams_down as f64,
            s.start,
            s.end,
            s.first_frame as f64,
        ]);
        let texts = [
            t.unique(&s.client),
            t.text(Some(&s.server)),
            t.text(Some(s.version)),
            t.text(s.username.as_deref()),
            t.text(s.password.as_deref()),
            t.text(s.command.as_deref()),
            t.text(s.dst_host.as_deref()),
            t.text(s.bound.as_deref()),
            t.text(s.bind_peer.as_deref()),
            t.text(s.tunnelled),
            t.text(s.sni.as_deref()),
            t.text(s.udp_relay.as_deref()),
            t.methods(&s.methods_offered),
            t.list_of_texts(&s.anomalies),
            t.list_of_texts(&s.udp_destinations),
            match &s.gssapi {
                Some(g) => t.json(serde_json::to_string(g)),
                None => ABSENT,
            },
        ];
        t.table.texts.extend(texts);
    }
    t.table.columns = NUMBER_COLUMNS
        .iter()
        .chain(TEXT_COLUMNS.iter())
        .copied()
        .collect::<Vec<_>>()
        .join(",");
    t.table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_session_in_columns_with_texts_shared() {
        let sample = include_bytes!("../tests/fixtures/sample.pcap");
        let report =
            socksgate_inspect::inspect(sample, &socksgate_inspect::Options::default()).unwrap();
        let t = session_table(&report.sessions, 7);
        let n = report.sessions.len();
        assert_eq!(t.count as usize, n);
        assert_eq!(t.numbers.len(), n * NUMBER_COLUMNS.len());
        assert_eq!(t.texts.len(), n * TEXT_COLUMNS.len());
        // Reading the texts back by their UTF-16 lengths (ASCII here) gives each session's.
        let mut starts = vec![0usize];
        for l in &t.lengths {
            starts.push(starts.last().unwrap() + *l as usize);
        }
        let text =
            |i: u32| (i != ABSENT).then(|| &t.strings[starts[i as usize]..starts[i as usize + 1]]);
        for (k, s) in report.sessions.iter().enumerate() {
            let row = &t.texts[k * TEXT_COLUMNS.len()..][..TEXT_COLUMNS.len()];
            assert_eq!(text(row[0]), Some(s.client.as_str()));
            assert_eq!(text(row[6]), s.dst_host.as_deref());
            assert_eq!(
                text(row[13]).unwrap(),
                serde_json::to_string(&s.anomalies).unwrap()
            );
            let nums = &t.numbers[k * NUMBER_COLUMNS.len()..][..NUMBER_COLUMNS.len()];
            assert_eq!(nums[8], s.start);
            assert_eq!(nums[2].is_nan(), s.dst_port.is_none());
        }
        // The server and version repeat: stored once.
        assert!(
            t.lengths.len() < n * TEXT_COLUMNS.len() / 2,
            "{}",
            t.lengths.len()
        );
        assert!(t.columns.starts_with("method,auth_ok,") && t.columns.ends_with(",gssapi"));
    }

    #[test]
    fn lengths_count_utf16_units() {
        let mut t = Interner::new(7);
        assert_eq!(t.text(Some("é𝄞")), 1);
        assert_eq!(t.text(None), ABSENT);
        assert_eq!(t.text(Some("é𝄞")), 1);
        assert_eq!(t.list_of_texts(&[]), EMPTY_LIST);
        assert_eq!(t.table.lengths, [2, 3]);
        assert_eq!(t.table.strings, "[]é𝄞");
    }
}
