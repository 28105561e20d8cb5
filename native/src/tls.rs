//! SOCKS over TLS (rustls with the ring provider; TLS 1.2 and 1.3): `[[tls]]` listeners,
//! optionally with client certificates (mutual TLS), and the client side of `+tls` proxy
//! URLs (`socksgate connect`, `[[upstream]]`).
//!
//! Files are read when a configuration is loaded (start and SIGHUP): a reload with a missing
//! or broken certificate or key is refused like any bad configuration, and the running one
//! stays. New connections use the newest certificates; open sessions keep theirs.
//!
//! A verified client certificate names the session's user: its subject's common name (CN).
//! That user counts for the rules, limits, traffic limits, access log and metrics as if it
//! had logged in, and the SOCKS handshake asks for no password
//! ([`socksgate_core::session::Session::with_authenticated_user`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;

use crate::config::{ClientCertificate, Config, TlsConfig};

/// Why TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file is missing, unreadable or not PEM.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// rustls refused the certificates or key (for example a key that does not match).
    #[error("{what}: {source}")]
    Rustls {
        /// Which settings.
        what: String,
        /// rustls's reason.
        source: rustls::Error,
    },
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// The ring provider: no C toolchain beyond what ring builds itself (aws-lc-rs needs cmake).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file (at least one).
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The private key of a PEM file.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

/// A store of the CA certificates of a PEM file.
fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(path)? {
        store
            .add(cert)
            .map_err(|e| file_error(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(store)
}

/// The TLS side of every `[[tls]]` listener and `+tls` upstream of one configuration.
#[derive(Debug, Default)]
pub struct Contexts {
    listeners: Vec<(SocketAddr, Arc<ServerTls>)>,
    upstreams: Vec<(String, Arc<ClientConfig>)>,
}

impl Contexts {
    /// Reads the certificate, key and CA files of `config`'s `[[tls]]` and `+tls`
    /// `[[upstream]]` entries.
    pub fn load(config: &Config) -> Result<Self, TlsError> {
        let mut out = Self::default();
        for entry in &config.tls {
            let server = Arc::new(ServerTls::load(entry)?);
            for l in &entry.listeners {
                out.listeners.push((*l.get_ref(), Arc::clone(&server)));
            }
        }
        for u in &config.upstreams {
            let Ok(url) = u.url.get_ref().parse::<crate::client::Proxy>() else {
                continue;
            };
            if url.tls {
                let identity = u.certificate.as_deref().zip(u.key.as_deref());
                out.upstreams
                    .push((u.name.clone(), client_config(u.ca.as_deref(), identity)?));
            }
        }
        Ok(out)
    }

    /// The TLS settings of the listener that accepted a connection whose local address is
    /// `local`: a listener on that address, or on the wildcard address of its family and
    /// port (the kernel lets no other listener share that port).
    pub fn for_local(&self, local: SocketAddr) -> Option<&ServerTls> {
        let exact = self.listeners.iter().find(|(a, _)| *a == local);
        exact
            .or_else(|| {
                self.listeners.iter().find(|(a, _)| {
                    a.ip().is_unspecified()
                        && a.is_ipv4() == local.is_ipv4()
                        && a.port() == local.port()
                })
            })
            .map(|(_, s)| &**s)
    }

    /// The client settings of the `+tls` upstream `name`.
    pub fn for_upstream(&self, name: &str) -> Option<Arc<ClientConfig>> {
        self.upstreams
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| Arc::clone(c))
    }
}

/// One `[[tls]]` entry, loaded.
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

/// Why a TLS connection was not accepted (the session's one log line says it).
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The handshake did not finish within the handshake timeout.
    #[error("TLS handshake timed out")]
    Timeout,
    /// The handshake failed: not TLS, an untrusted, expired or missing client certificate, …
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    /// The client certificate was verified but names no user.
    #[error("client certificate: {0}")]
    Identity(String),
}

impl ServerTls {
    /// Reads the files of `entry`.
    pub fn load(entry: &TlsConfig) -> Result<Self, TlsError> {
        let chain = certificates(&entry.certificate)?;
        let key = private_key(&entry.key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Rustls {
                what: "TLS versions".into(),
                source,
            })?;
        let builder = match &entry.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider());
                let verifier = match entry.client_certificate {
                    ClientCertificate::Required => verifier,
                    ClientCertificate::Optional => verifier.allow_unauthenticated(),
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| file_error(ca, format!("client CA: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|source| TlsError::Rustls {
                what: format!(
                    "[[tls]] {} with {}",
                    entry.certificate.display(),
                    entry.key.display()
                ),
                source,
            })?;
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Runs the TLS handshake on `stream` within `timeout`; returns the stream and the user
    /// its verified client certificate names, if it presented one.
    pub async fn accept(
        &self,
        stream: TcpStream,
        timeout: Duration,
    ) -> Result<(crate::stream::Stream, Option<String>), AcceptError> {
        let tls = tokio::time::timeout(timeout, self.acceptor.accept(stream))
            .await
            .map_err(|_| AcceptError::Timeout)?
            .map_err(AcceptError::Handshake)?;
        let user = match tls.get_ref().1.peer_certificates().and_then(<[_]>::first) {
            Some(leaf) => Some(user_of(leaf).map_err(AcceptError::Identity)?),
            None => None,
        };
        let stream = crate::stream::Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(tls)));
        Ok((stream, user))
    }
}

/// The user a client certificate names: its subject's common name (the first CN).
pub fn user_of(cert: &CertificateDer<'_>) -> Result<String, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("cannot parse: {e}"))?;
    let cn = parsed
        .subject()
        .iter_common_name()
        .next()
        .ok_or("the subject has no common name (CN) to take as the user name")?;
    let name = cn
        .as_str()
        .map_err(|e| format!("the subject's CN is not text: {e}"))?;
    if name.is_empty() || name.len() > 255 {
        return Err("the subject's CN must be 1 to 255 bytes long".into());
    }
    Ok(name.to_owned())
}

/// Client settings for a `+tls` proxy: its certificate must chain to the certificates in
/// `ca` (the system's trust store when `None`); `identity` is our certificate chain and key
/// for a proxy that asks for one.
pub fn client_config(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match ca {
        Some(path) => roots(path)?,
        None => system_roots(),
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            what: "TLS versions".into(),
            source,
        })?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(certificates(cert)?, private_key(key)?)
            .map_err(|source| TlsError::Rustls {
                what: format!(
                    "client certificate {} with {}",
                    cert.display(),
                    key.display()
                ),
                source,
            })?,
    };
    Ok(Arc::new(config))
}

/// The system's trust store (on Debian, ca-certificates' bundle); certificates it cannot
/// use are skipped.
fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!("system trust store: {e}");
    }
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(found.certs);
    store
}

/// Runs the client side of the TLS handshake with the proxy `host` over `stream`.
pub async fn connect(
    config: Arc<ClientConfig>,
    host: &str,
    stream: TcpStream,
) -> std::io::Result<crate::stream::Stream> {
    let name = ServerName::try_from(host.to_owned()).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{host}: not a TLS server name: {e}"),
        )
    })?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await?;
    Ok(crate::stream::Stream::Tls(Box::new(
        tokio_rustls::TlsStream::Client(tls),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contexts(listeners: &[&str]) -> Contexts {
        // No handshake happens: any loaded ServerTls stands for its listener.
        let provider = provider();
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(rustls::server::ResolvesServerCertUsingSni::new()));
        let server = Arc::new(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        });
        Contexts {
            listeners: listeners
                .iter()
                .map(|l| (l.parse().unwrap(), Arc::clone(&server)))
                .collect(),
            upstreams: Vec::new(),
        }
    }

    #[test]
    fn a_connection_finds_its_listener_by_local_address() {
        let c = contexts(&["0.0.0.0:1443", "127.0.0.1:2443", "[::1]:3443"]);
        let found = |local: &str| c.for_local(local.parse().unwrap()).is_some();
        assert!(found("192.0.2.7:1443"), "the IPv4 wildcard");
        assert!(found("127.0.0.1:2443"));
        assert!(found("[::1]:3443"));
        assert!(
            !found("[::1]:1443"),
            "not the IPv6 side of an IPv4 wildcard"
        );
        assert!(!found("127.0.0.2:2443"), "a specific address only");
        assert!(!found("192.0.2.7:1080"));
    }
}
