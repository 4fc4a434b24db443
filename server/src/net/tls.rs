//! The host's certificate on the TCP port (`--tls-cert`, `--tls-key`): HTTPS and `wss://`
//! through rustls on ring, with HTTP/2 or HTTP/1.1 for pages chosen by ALPN (browsers open their
//! WebSockets on HTTP/1.1 connections of their own). The files are read again when they change
//! (looked at every `CHECK_EVERY`) or on SIGHUP: new connections get the new certificate, open
//! ones keep theirs, and WebTransport is told to present it too. A pair that does not load (a
//! renewal caught half written, a key that does not match the certificate) is refused with an
//! error in the log, and the certificate in use stays.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// How often the files are looked at for a renewal.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// ALPN protocols offered, most preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a certificate pair could not be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot use the certificate {} with the key {}: {message}", files.cert.display(), files.key.display())]
pub struct TlsError {
    files: TlsFiles,
    message: String,
}

/// The TCP port's TLS: the acceptor, and the certificate it presents, replaceable.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    current: Arc<Current>,
    files: TlsFiles,
}

/// The certificate new handshakes get.
struct Current(RwLock<Arc<CertifiedKey>>);

impl fmt::Debug for Current {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Current")
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner)))
    }
}

impl Tls {
    /// Reads `files` and makes the acceptor that presents them.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let current = Arc::new(Current(RwLock::new(Arc::new(certified_key(files)?))));
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError { files: files.clone(), message: e.to_string() })?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Self { acceptor: TlsAcceptor::from(Arc::new(config)), current, files: files.clone() })
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reads the files again and presents them from now on.
    fn reload(&self) -> Result<(), TlsError> {
        let key = certified_key(&self.files)?;
        *self.current.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
        Ok(())
    }

    /// Reloads the certificate whenever its files change or SIGHUP comes, and counts each
    /// successful reload on `reloaded` (WebTransport follows it). Runs until aborted. It listens
    /// for SIGHUP from the call on, not from the first poll: a reload asked for while the server
    /// starts is not lost.
    pub fn watch(self, reloaded: watch::Sender<u64>) -> impl Future<Output = ()> + Send {
        let hangup = hangup();
        self.reload_on_change_or(hangup, reloaded)
    }

    async fn reload_on_change_or(self, mut hangup: Hangup, reloaded: watch::Sender<u64>) {
        let mut seen = stamp(&self.files);
        let mut check = tokio::time::interval(CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let asked = tokio::select! {
                _ = check.tick() => false,
                () = next_hangup(&mut hangup) => true,
            };
            let now = stamp(&self.files);
            if !asked && now == seen {
                continue;
            }
            match self.reload() {
                Ok(()) => {
                    seen = now;
                    tracing::info!(cert = %self.files.cert.display(), "certificate reloaded; open connections keep theirs");
                    reloaded.send_modify(|count| *count += 1);
                }
                // Tried again at the next change (a renewal may be half written).
                Err(e) => {
                    seen = now;
                    tracing::error!("{e}; the certificate in use stays");
                }
            }
        }
    }
}

/// Writes a self-signed certificate for `names` (ECDSA P-256, valid 14 days) and its key into
/// `dir`, the key readable by its owner only: `easel cert dev`, for local testing and tests. No
/// browser trusts it unless told to.
pub fn write_dev_certificate(dir: &Path, names: &[String]) -> Result<TlsFiles, DevCertificateError> {
    let identity = wtransport::Identity::self_signed(names.iter().map(String::as_str))
        .map_err(|e| DevCertificateError::Make(e.to_string()))?;
    let files = TlsFiles { cert: dir.join("easel-dev-cert.pem"), key: dir.join("easel-dev-key.pem") };
    let chain: String = identity.certificate_chain().as_slice().iter().map(|c| c.to_pem()).collect();
    let write = |path: &Path, text: &str, mode: u32| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        #[cfg(not(unix))]
        let _ = mode;
        options
            .open(path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()))
            .map_err(|source| DevCertificateError::Write { path: path.to_path_buf(), source })
    };
    write(&files.cert, &chain, 0o644)?;
    write(&files.key, &identity.private_key().to_secret_pem(), 0o600)?;
    Ok(files)
}

/// Why `easel cert dev` could not write a certificate.
#[derive(Debug, thiserror::Error)]
pub enum DevCertificateError {
    #[error("cannot make a certificate: {0}")]
    Make(String),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// The certificate chain and key in `files`, checked to belong together.
fn certified_key(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let refuse = |message: String| TlsError { files: files.clone(), message };
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|e| refuse(format!("reading the certificate: {e}")))?;
    if chain.is_empty() {
        return Err(refuse("no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| refuse(format!("reading the key: {e}")))?;
    CertifiedKey::from_der(chain, key, &ring_provider()).map_err(|e| refuse(e.to_string()))
}

/// rustls on ring, as wtransport's QUIC: aws-lc-rs, whose provider adds post-quantum key
/// exchange (hence ring's is marked deprecated), needs cmake and nasm to build.
#[allow(deprecated)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// What tells a renewal: both files' modification times and sizes.
fn stamp(files: &TlsFiles) -> [Option<(SystemTime, u64)>; 2] {
    [&files.cert, &files.key].map(|path| {
        let metadata = std::fs::metadata(path).ok()?;
        Some((metadata.modified().ok()?, metadata.len()))
    })
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup() -> Hangup {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup()).map_err(|e| tracing::warn!("cannot listen for SIGHUP: {e}")).ok()
}

#[cfg(not(unix))]
fn hangup() -> Hangup {}

#[cfg(unix)]
async fn next_hangup(hangup: &mut Hangup) {
    match hangup {
        Some(signal) => {
            if signal.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) {
    std::future::pending().await
}
