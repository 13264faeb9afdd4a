//! Secrets sealed with a passphrase, for keeping a tier's CA key and tokens in a store
//! that others can read (several roots on one etcd).
//!
//! The key is derived from the passphrase with PBKDF2-HMAC-SHA256 over a random salt;
//! the data is sealed with AES-256-GCM under a fresh random nonce, with associated data
//! the caller chooses (the store key, so a sealed value cannot be moved to another key).
//! [`Sealed`] is the envelope as stored: algorithm names, the iteration count, the salt,
//! the nonce and the ciphertext (base64), as JSON.

use std::sync::Mutex;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::pbkdf2;
use serde::{Deserialize, Serialize};

use crate::secret;

/// PBKDF2 iterations of new envelopes.
pub const ITERATIONS: u32 = 200_000;
/// The range of iteration counts an envelope may ask for: fewer is too weak to accept,
/// more would let whoever wrote the envelope make every reader spin.
const ITERATION_RANGE: std::ops::RangeInclusive<u32> = 10_000..=5_000_000;
/// Salt length in bytes.
const SALT_LEN: usize = 16;
/// The name of the key derivation in the envelope.
const KDF: &str = "pbkdf2-hmac-sha256";
/// The name of the cipher in the envelope.
const CIPHER: &str = "aes-256-gcm";

/// Why a value could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The passphrase is not the one the value was sealed with, or the value was
    /// changed or moved to another key.
    #[error(
        "it does not open with this passphrase (another passphrase sealed it, or it was altered)"
    )]
    WrongPassphrase,
    /// The envelope is not one this version writes.
    #[error("not a sealed envelope: {0}")]
    Malformed(String),
    /// No random bytes.
    #[error(transparent)]
    Random(#[from] secret::RandomError),
}

/// A sealed value as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// `pbkdf2-hmac-sha256`.
    pub kdf: String,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// The salt, base64.
    pub salt: String,
    /// `aes-256-gcm`.
    pub cipher: String,
    /// The nonce, base64.
    pub nonce: String,
    /// Ciphertext and tag, base64.
    pub ciphertext: String,
}

/// Seals and opens values with one passphrase. The derived key is kept for the salt it
/// was last derived for: a tier that rewrites the same stored value keeps its salt and
/// derives once.
pub struct Sealer {
    passphrase: Vec<u8>,
    derived: Mutex<Option<Derived>>,
}

/// A key derived from the passphrase, and what it was derived with.
struct Derived {
    salt: Vec<u8>,
    iterations: u32,
    key: [u8; 32],
}

impl std::fmt::Debug for Sealer {
    /// Never the passphrase.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer with `passphrase`.
    pub fn new(passphrase: &str) -> Sealer {
        Sealer {
            passphrase: passphrase.as_bytes().to_vec(),
            derived: Mutex::new(None),
        }
    }

    /// The key for `salt` and `iterations` (derived again only when they changed).
    fn key(&self, salt: &[u8], iterations: u32) -> LessSafeKey {
        let mut derived = self.derived.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = match derived.as_ref() {
            Some(d) if d.salt == salt && d.iterations == iterations => d.key,
            _ => {
                let mut key = [0u8; 32];
                let rounds = std::num::NonZeroU32::new(iterations).expect("checked range");
                pbkdf2::derive(
                    pbkdf2::PBKDF2_HMAC_SHA256,
                    rounds,
                    salt,
                    &self.passphrase,
                    &mut key,
                );
                *derived = Some(Derived {
                    salt: salt.to_vec(),
                    iterations,
                    key,
                });
                key
            }
        };
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &bytes).expect("a 32-byte key"))
    }

    /// Seal `plaintext`, bound to `aad`. The salt is the one last used (a new random
    /// one the first time).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Sealed, SealError> {
        let current = self
            .derived
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|d| (d.salt.clone(), d.iterations));
        let (salt, iterations) = match current {
            Some(kept) => kept,
            None => {
                let mut salt = vec![0u8; SALT_LEN];
                secret::fill(&mut salt)?;
                (salt, ITERATIONS)
            }
        };
        let key = self.key(&salt, iterations);
        let mut nonce = [0u8; NONCE_LEN];
        secret::fill(&mut nonce)?;
        let mut data = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut data,
        )
        .map_err(|_| SealError::Malformed("sealing failed".into()))?;
        Ok(Sealed {
            kdf: KDF.into(),
            iterations,
            salt: B64.encode(&salt),
            cipher: CIPHER.into(),
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(data),
        })
    }

    /// Open `sealed`, which must have been sealed bound to `aad` with this passphrase.
    pub fn open(&self, aad: &[u8], sealed: &Sealed) -> Result<Vec<u8>, SealError> {
        if sealed.kdf != KDF || sealed.cipher != CIPHER {
            return Err(SealError::Malformed(format!(
                "{} with {}: this version reads {KDF} with {CIPHER}",
                sealed.kdf, sealed.cipher
            )));
        }
        if !ITERATION_RANGE.contains(&sealed.iterations) {
            return Err(SealError::Malformed(format!(
                "{} iterations: outside {ITERATION_RANGE:?}",
                sealed.iterations
            )));
        }
        let field = |name: &str, text: &str| {
            B64.decode(text)
                .map_err(|e| SealError::Malformed(format!("{name}: {e}")))
        };
        let salt = field("salt", &sealed.salt)?;
        let nonce: [u8; NONCE_LEN] = field("nonce", &sealed.nonce)?
            .try_into()
            .map_err(|_| SealError::Malformed(format!("nonce: not {NONCE_LEN} bytes")))?;
        let mut data = field("ciphertext", &sealed.ciphertext)?;
        let key = self.key(&salt, sealed.iterations);
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut data,
            )
            .map_err(|_| SealError::WrongPassphrase)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_with_its_passphrase_and_key_only() {
        let sealer = Sealer::new("K10abc::id.secret");
        let sealed = sealer.seal(b"/root", b"the CA key").unwrap();
        assert!(!sealed.ciphertext.contains("CA key"));
        assert_eq!(sealer.open(b"/root", &sealed).unwrap(), b"the CA key");
        // A second seal keeps the salt (one derivation) but not the nonce.
        let again = sealer.seal(b"/root", b"the CA key").unwrap();
        assert_eq!(again.salt, sealed.salt);
        assert_ne!(again.nonce, sealed.nonce);

        // Another process with the same passphrase opens it.
        assert_eq!(
            Sealer::new("K10abc::id.secret")
                .open(b"/root", &sealed)
                .unwrap(),
            b"the CA key"
        );
        let wrong = Sealer::new("another");
        assert!(matches!(
            wrong.open(b"/root", &sealed),
            Err(SealError::WrongPassphrase)
        ));
        assert!(matches!(
            sealer.open(b"/cluster", &sealed),
            Err(SealError::WrongPassphrase)
        ));
        let mut altered = sealed.clone();
        altered.ciphertext = B64.encode(b"something else entirely, long enough");
        assert!(matches!(
            sealer.open(b"/root", &altered),
            Err(SealError::WrongPassphrase)
        ));
    }

    #[test]
    fn malformed_envelopes_are_refused_before_any_work() {
        let sealer = Sealer::new("p");
        let good = sealer.seal(b"k", b"v").unwrap();
        let cases: Vec<(&str, Sealed)> = vec![
            (
                "kdf",
                Sealed {
                    kdf: "scrypt".into(),
                    ..good.clone()
                },
            ),
            (
                "iterations",
                Sealed {
                    iterations: u32::MAX,
                    ..good.clone()
                },
            ),
            (
                "iterations",
                Sealed {
                    iterations: 1,
                    ..good.clone()
                },
            ),
            (
                "salt",
                Sealed {
                    salt: "not base64!".into(),
                    ..good.clone()
                },
            ),
            (
                "nonce",
                Sealed {
                    nonce: B64.encode([0u8; 3]),
                    ..good.clone()
                },
            ),
        ];
        for (what, sealed) in cases {
            let err = sealer.open(b"k", &sealed).unwrap_err();
            assert!(
                matches!(&err, SealError::Malformed(m) if m.contains(what) || what == "kdf"),
                "{what}: {err}"
            );
        }
    }
}
