//! Random secrets and digests: serial numbers, token ids and secrets from the system's
//! random source, SHA-256 in lowercase hex, and comparisons that take the same time
//! wherever the inputs differ.

use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// The alphabet of token ids and secrets.
pub(crate) const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// The system's random source failed (it does not on a working Linux system).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the system's random number generator failed")]
pub struct RandomError;

/// Fills `buf` from the system's random source.
pub(crate) fn fill(buf: &mut [u8]) -> Result<(), RandomError> {
    SystemRandom::new().fill(buf).map_err(|_| RandomError)
}

/// A random string of `len` characters of `[a-z0-9]`, without bias (bytes beyond the
/// largest multiple of the alphabet's size are drawn again): for secrets a member keeps.
pub fn random_string(len: usize) -> Result<String, RandomError> {
    let limit = 256 - 256 % ALPHABET.len();
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 32];
    while out.len() < len {
        fill(&mut buf)?;
        for &b in &buf {
            if out.len() == len {
                break;
            }
            if usize::from(b) < limit {
                out.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            }
        }
    }
    Ok(out)
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lowercase hex of the SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Whether `a` equals `b`, looking at every byte whatever the first difference (the
/// lengths are not secret: both sides are hex digests).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_strings_use_the_alphabet_and_differ() {
        let a = random_string(16).unwrap();
        let b = random_string(16).unwrap();
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|c| ALPHABET.contains(&c)), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn digests_and_comparisons() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let cases: [(&[u8], &[u8], bool); 4] = [
            (b"abc", b"abc", true),
            (b"abc", b"abd", false),
            (b"abc", b"ab", false),
            (b"", b"", true),
        ];
        for (a, b, equal) in cases {
            assert_eq!(constant_time_eq(a, b), equal, "{a:?} {b:?}");
        }
    }
}
