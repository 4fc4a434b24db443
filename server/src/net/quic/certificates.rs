//! The certificate the WebTransport endpoint presents. A host's own (`--tls-cert`, `--tls-key`)
//! is used as it is; without one the server makes its own, an ECDSA P-256 certificate valid for
//! 14 days, which is what Chromium accepts from a page that names its hash
//! (`serverCertificateHashes`; a 15-day one is refused), and replaces it long before it expires.
//! Pages fetch the hashes to trust from `GET /webtransport`; while a replacement is coming, both
//! are offered, so a page that fetched just before the switch still connects.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use wtransport::Identity;

use crate::config::{CertificateSource, RotationSchedule, TlsFiles};

/// Why there is no certificate to present.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("cannot read the certificate or key ({cert}, {key}): {message}")]
    Files { cert: PathBuf, key: PathBuf, message: String },
    #[error("cannot make a self-signed certificate for {names:?}: {message}")]
    SelfSigned { names: Vec<String>, message: String },
}

/// The certificates in use, shared by the endpoint (which presents one) and `/webtransport`
/// (which tells pages which hashes to trust).
#[derive(Clone, Default)]
pub struct Hashes(Arc<RwLock<Vec<[u8; 32]>>>);

impl Hashes {
    /// The SHA-256 hashes a page should trust: empty when the certificate is a host's own, which
    /// browsers check the usual way.
    pub fn current(&self) -> Vec<[u8; 32]> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set(&self, hashes: Vec<[u8; 32]>) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = hashes;
    }
}

/// The self-signed certificates' life: which one is presented, which comes next, and when to act.
pub struct Rotation {
    schedule: RotationSchedule,
    presented: Made,
    next: Option<Made>,
}

/// A certificate and when it was made.
struct Made {
    identity: Identity,
    at: SystemTime,
}

/// What the rotation asks of the endpoint.
pub enum Step {
    /// The successor is made and offered to pages beside the certificate in use.
    Announce,
    /// Present the successor from now on.
    Switch(Identity),
}

/// The identity to present first (setting the hashes to offer), and the rotation if the server
/// makes its own, for `names`.
pub async fn load(
    source: &CertificateSource,
    names: &[String],
    now: SystemTime,
    hashes: &Hashes,
) -> Result<(Identity, Option<Rotation>), CertificateError> {
    match source {
        CertificateSource::Files(files) => {
            let identity = load_files(files).await?;
            hashes.set(Vec::new());
            Ok((identity, None))
        }
        CertificateSource::SelfSigned { schedule } => {
            let made = Made { identity: self_signed(names)?, at: now };
            let identity = made.identity.clone_identity();
            hashes.set(vec![hash(&made.identity)]);
            Ok((identity, Some(Rotation { schedule: *schedule, presented: made, next: None })))
        }
    }
}

/// The host's certificate as WebTransport presents it.
pub async fn load_files(files: &TlsFiles) -> Result<Identity, CertificateError> {
    Identity::load_pemfiles(&files.cert, &files.key).await.map_err(|e| CertificateError::Files {
        cert: files.cert.clone(),
        key: files.key.clone(),
        message: e.to_string(),
    })
}

impl Rotation {
    /// When `step` is next due.
    pub fn due(&self) -> SystemTime {
        let switch = self.presented.at + self.schedule.present_for;
        match self.next {
            Some(_) => switch,
            None => switch.checked_sub(self.schedule.announce_before).unwrap_or(switch),
        }
    }

    /// Acts at `now` (once `due`), updating the hashes pages are given.
    pub fn step(&mut self, now: SystemTime, names: &[String], hashes: &Hashes) -> Result<Step, CertificateError> {
        match self.next.take() {
            None => {
                let next = Made { identity: self_signed(names)?, at: now };
                hashes.set(vec![hash(&self.presented.identity), hash(&next.identity)]);
                self.next = Some(next);
                Ok(Step::Announce)
            }
            Some(next) => {
                hashes.set(vec![hash(&next.identity)]);
                let identity = next.identity.clone_identity();
                self.presented = Made { identity: next.identity, at: now };
                Ok(Step::Switch(identity))
            }
        }
    }
}

fn self_signed(names: &[String]) -> Result<Identity, CertificateError> {
    Identity::self_signed(names.iter().map(String::as_str))
        .map_err(|e| CertificateError::SelfSigned { names: names.to_vec(), message: e.to_string() })
}

fn hash(identity: &Identity) -> [u8; 32] {
    identity.certificate_chain().as_slice().first().map_or([0; 32], |certificate| *certificate.hash().as_ref())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn names() -> Vec<String> {
        vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
    }

    #[tokio::test]
    async fn a_successor_is_announced_before_it_takes_over_and_then_alone_is_offered() {
        let schedule =
            RotationSchedule { present_for: Duration::from_secs(100), announce_before: Duration::from_secs(10) };
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hashes = Hashes::default();
        let source = CertificateSource::SelfSigned { schedule };
        let (first, rotation) = load(&source, &names(), start, &hashes).await.unwrap();
        let mut rotation = rotation.unwrap();
        let first_hash = hash(&first);
        assert_eq!(hashes.current(), vec![first_hash]);
        assert_eq!(rotation.due(), start + Duration::from_secs(90), "announced 10 s before the switch");
        assert!(matches!(rotation.step(rotation.due(), &names(), &hashes).unwrap(), Step::Announce));
        let offered = hashes.current();
        assert_eq!(offered.len(), 2);
        assert_eq!(offered[0], first_hash, "the certificate in use is still offered");
        assert_eq!(rotation.due(), start + Duration::from_secs(100));
        let Step::Switch(second) = rotation.step(rotation.due(), &names(), &hashes).unwrap() else {
            panic!("a switch")
        };
        assert_eq!(hashes.current(), vec![hash(&second)]);
        assert_eq!(hash(&second), offered[1], "the announced one takes over");
        assert_eq!(rotation.due(), start + Duration::from_secs(190));
    }

    #[tokio::test]
    async fn the_servers_own_certificate_is_valid_for_at_most_14_days() {
        let source = CertificateSource::SelfSigned { schedule: RotationSchedule::default() };
        let (identity, _) = load(&source, &names(), SystemTime::now(), &Hashes::default()).await.unwrap();
        let der = identity.certificate_chain().as_slice()[0].der().to_vec();
        let (_, certificate) = x509_parser::parse_x509_certificate(&der).unwrap();
        let validity = certificate.validity();
        let days = (validity.not_after.timestamp() - validity.not_before.timestamp()) as f64 / 86_400.0;
        assert!(days <= 14.0, "valid for {days} days: Chromium refuses more than 14 with serverCertificateHashes");
        assert!(RotationSchedule::default().present_for < Duration::from_secs(14 * 86_400), "replaced before expiry");
    }
}
