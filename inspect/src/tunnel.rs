//! Recognising the protocol carried through a SOCKS session from its first payload bytes:
//! HTTP/1.x, TLS (with the ClientHello's server name) and SSH.

/// A protocol recognised inside the tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tunnelled {
    /// HTTP/1.x request or response line.
    Http,
    /// TLS, with the ClientHello's `server_name` if one was sent.
    Tls {
        /// SNI host name.
        sni: Option<String>,
    },
    /// SSH version banner.
    Ssh,
}

impl Tunnelled {
    /// The name used in the JSON report.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Tls { .. } => "tls",
            Self::Ssh => "ssh",
        }
    }
}

const HTTP_METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"CONNECT ",
    b"PATCH ",
    b"TRACE ",
];

/// Looks at the first payload bytes of each direction.
///
/// Returns `None` while more bytes could change the answer (and `last` is false), else
/// `Some(result)`; `last` means no more bytes will come.
pub fn recognise(up: &[u8], down: &[u8], last: bool) -> Option<Option<Tunnelled>> {
    if up.starts_with(b"SSH-") || down.starts_with(b"SSH-") {
        return Some(Some(Tunnelled::Ssh));
    }
    if HTTP_METHODS.iter().any(|m| up.starts_with(m)) || down.starts_with(b"HTTP/1.") {
        return Some(Some(Tunnelled::Http));
    }
    if let [0x16, 0x03, ..] = up {
        return match client_hello_sni(up) {
            Hello::Sni(sni) => Some(Some(Tunnelled::Tls { sni })),
            Hello::NeedMore if !last => None,
            Hello::NeedMore | Hello::Other => Some(Some(Tunnelled::Tls { sni: None })),
        };
    }
    // Prefixes short enough to still become one of the above.
    let could_grow = |b: &[u8], pats: &[&[u8]]| {
        b.len() < 8 && pats.iter().any(|p| p.starts_with(b) || b.starts_with(p))
    };
    let waiting = (up.is_empty() && down.is_empty())
        || could_grow(up, &HTTP_METHODS)
        || could_grow(up, &[b"SSH-", b"\x16\x03"])
        || (up.is_empty() && could_grow(down, &[b"SSH-", b"HTTP/1."]));
    if waiting && !last { None } else { Some(None) }
}

enum Hello {
    Sni(Option<String>),
    NeedMore,
    Other,
}

/// A bounds-checked big-endian reader.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        Some(usize::from(*self.take(1)?.first()?))
    }
    fn u16(&mut self) -> Option<usize> {
        let b = self.take(2)?;
        Some(usize::from(u16::from_be_bytes([*b.first()?, *b.get(1)?])))
    }
    fn u24(&mut self) -> Option<usize> {
        let b = self.take(3)?;
        Some(
            (usize::from(*b.first()?) << 16)
                | (usize::from(*b.get(1)?) << 8)
                | usize::from(*b.get(2)?),
        )
    }
}

/// Extracts the SNI host name from a TLS record holding a ClientHello (RFC 8446 §4.1.2,
/// RFC 6066 §3). Only the first record is examined.
fn client_hello_sni(buf: &[u8]) -> Hello {
    let mut rec = Reader(buf);
    let Some(header) = rec.take(5) else {
        return Hello::NeedMore;
    };
    let rec_len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    let Some(body) = rec.take(rec_len) else {
        return Hello::NeedMore;
    };
    let parse = || -> Option<Option<String>> {
        let mut r = Reader(body);
        if r.u8()? != 1 {
            return None; // not a ClientHello
        }
        let hs_len = r.u24()?;
        // A ClientHello larger than one record: read what this record holds.
        let mut h = Reader(r.take(hs_len.min(r.0.len()))?);
        h.take(2 + 32)?; // legacy_version, random
        let sid = h.u8()?;
        h.take(sid)?;
        let suites = h.u16()?;
        h.take(suites)?;
        let comp = h.u8()?;
        h.take(comp)?;
        let Some(ext_len) = h.u16() else {
            return Some(None); // no extensions
        };
        let mut exts = Reader(h.take(ext_len.min(h.0.len()))?);
        while let (Some(ty), Some(len)) = (exts.u16(), exts.u16()) {
            let data = exts.take(len)?;
            if ty != 0 {
                continue;
            }
            let mut sn = Reader(data);
            let list_len = sn.u16()?;
            let mut list = Reader(sn.take(list_len)?);
            while let Some(kind) = list.u8() {
                let name_len = list.u16()?;
                let name = list.take(name_len)?;
                if kind == 0 {
                    return Some(Some(String::from_utf8_lossy(name).into_owned()));
                }
            }
            return Some(None);
        }
        Some(None)
    };
    match parse() {
        Some(sni) => Hello::Sni(sni),
        None => Hello::Other,
    }
}

/// The ClientHello builder the integration tests use too.
#[cfg(test)]
#[path = "../tests/common/tls.rs"]
mod test_tls;

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_tls::tls_hello;

    #[test]
    fn recognises() {
        assert_eq!(
            recognise(b"GET / HTTP/1.1\r\n", b"", false),
            Some(Some(Tunnelled::Http))
        );
        assert_eq!(
            recognise(b"", b"SSH-2.0-OpenSSH", false),
            Some(Some(Tunnelled::Ssh))
        );
        assert_eq!(recognise(b"GE", b"", false), None);
        assert_eq!(recognise(b"GE", b"", true), Some(None));
        assert_eq!(recognise(b"\x00\x01binary", b"", false), Some(None));
        let hello = tls_hello("example.com");
        let sni = Some(Some(Tunnelled::Tls {
            sni: Some("example.com".into()),
        }));
        assert_eq!(recognise(&hello, b"", false), sni);
        assert_eq!(recognise(&hello[..20], b"", false), None);
        for cut in 0..hello.len() {
            let _ = recognise(&hello[..cut], b"", true);
        }
    }
}
