//! Tokens: [`JoinToken`] (`K10<CA hash>::<id>.<secret>`, what an admin hands to a
//! joiner: the pin of the CA to trust and the credential to present), [`TokenStore`]
//! (the tokens a server accepts, kept as a JSON file holding only the SHA-256 of each
//! secret) and [`MemberSecrets`] (which joiner's secret owns which member name).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::files::{self, FileError};
use crate::secret::{self, constant_time_eq, sha256_hex, RandomError, ALPHABET};

/// How a join token starts.
pub const TOKEN_PREFIX: &str = "K10";
/// The length of a token id.
pub const ID_LEN: usize = 6;
/// The length of a token secret.
pub const SECRET_LEN: usize = 16;
/// How a CA hash starts (see [`ca_hash`](crate::ca_hash)).
const HASH_PREFIX: &str = "sha256:";

/// A token could not be parsed, stored, or was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The text does not start with `K10`.
    #[error("a join token starts with {TOKEN_PREFIX} (K10<CA hash>::<id>.<secret>)")]
    MissingPrefix,
    /// The `::` between the CA hash and the credential is missing.
    #[error("a join token is K10<CA hash>::<id>.<secret>, and this one has no `::`")]
    MissingSeparator,
    /// The CA hash is not 64 lowercase hex characters.
    #[error("the CA hash of a token is 64 lowercase hex characters (sha256 of the CA's public key); this one has {len} characters{}", if *.hex { "" } else { ", not all of them 0-9a-f" })]
    BadCaHash {
        /// How many characters it has.
        len: usize,
        /// Whether all of them are lowercase hex.
        hex: bool,
    },
    /// The `.` between the id and the secret is missing.
    #[error("a token credential is <id>.<secret>, and this one has no `.`")]
    MissingDot,
    /// The id is not 6 characters of `a-z0-9`.
    #[error("the token id is {ID_LEN} characters of a-z and 0-9; this one has {len} characters{}", if *.charset { "" } else { ", not all of them a-z0-9" })]
    BadId {
        /// How many characters it has.
        len: usize,
        /// Whether all of them are in `a-z0-9`.
        charset: bool,
    },
    /// The secret is not 16 characters of `a-z0-9` (never shown).
    #[error("the token secret is {SECRET_LEN} characters of a-z and 0-9; this one has {len} characters{}", if *.charset { "" } else { ", not all of them a-z0-9" })]
    BadSecret {
        /// How many characters it has.
        len: usize,
        /// Whether all of them are in `a-z0-9`.
        charset: bool,
    },
    /// No token has this id, or its secret is another.
    #[error("unknown token {id} (no such id, or a wrong secret)")]
    Unknown {
        /// The id presented.
        id: String,
    },
    /// The token has expired.
    #[error("token {id} expired at {expired}")]
    Expired {
        /// The token's id.
        id: String,
        /// When it expired.
        expired: DateTime<Utc>,
    },
    /// The token is for another use.
    #[error("token {id} is for {usage} only, not for {wanted}")]
    WrongUsage {
        /// The token's id.
        id: String,
        /// What the token is for.
        usage: TokenUsage,
        /// What it was presented for.
        wanted: TokenUsage,
    },
    /// Another joiner's secret owns this member name.
    #[error("the name {name:?} is taken by another member (who joined with another secret)")]
    NameTaken {
        /// The member name.
        name: String,
    },
    /// A token lifetime is out of range.
    #[error("invalid token lifetime {ttl:?}")]
    InvalidTtl {
        /// The lifetime asked for.
        ttl: Duration,
    },
    /// A store's file is not what this crate writes.
    #[error("{} is not a valid token file: {source}; fix or remove it", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A store's file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// The system's random source failed.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// A join token: the pin of the CA to trust and the credential to present.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The CA's pin, `sha256:<hex>` (as [`ca_hash`](crate::ca_hash) computes it).
    pub ca_hash: String,
    /// The token's id (6 characters `a-z0-9`), not secret.
    pub id: String,
    /// The token's secret (16 characters `a-z0-9`).
    pub secret: String,
}

impl fmt::Debug for JoinToken {
    /// Shows the hash and the id, never the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_hash", &self.ca_hash)
            .field("id", &self.id)
            .field("secret", &"[elided]")
            .finish()
    }
}

impl JoinToken {
    /// A fresh token for the CA pinned by `ca_hash` (`sha256:<hex>`).
    pub fn generate(ca_hash: &str) -> Result<JoinToken, TokenError> {
        Ok(JoinToken {
            ca_hash: format!("{HASH_PREFIX}{}", hash_hex(ca_hash)?),
            id: secret::random_string(ID_LEN)?,
            secret: secret::random_string(SECRET_LEN)?,
        })
    }

    /// The credential a client sends as `Authorization: Bearer <id>.<secret>`.
    pub fn bearer(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

/// The hex of a CA hash, given as `sha256:<hex>` or as the bare hex.
fn hash_hex(ca_hash: &str) -> Result<&str, TokenError> {
    let hex = ca_hash.strip_prefix(HASH_PREFIX).unwrap_or(ca_hash);
    let is_hex = hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if hex.len() != 64 || !is_hex {
        return Err(TokenError::BadCaHash {
            len: hex.len(),
            hex: is_hex,
        });
    }
    Ok(hex)
}

impl FromStr for JoinToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<JoinToken, TokenError> {
        let rest = s
            .trim()
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(TokenError::MissingPrefix)?;
        let (hash, credential) = rest.split_once("::").ok_or(TokenError::MissingSeparator)?;
        let hex = hash_hex(hash)?;
        let (id, secret) = parse_bearer(credential)?;
        Ok(JoinToken {
            ca_hash: format!("{HASH_PREFIX}{hex}"),
            id,
            secret,
        })
    }
}

impl fmt::Display for JoinToken {
    /// `K10<hex>::<id>.<secret>`: the token in full, secret included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self
            .ca_hash
            .strip_prefix(HASH_PREFIX)
            .unwrap_or(&self.ca_hash);
        write!(f, "{TOKEN_PREFIX}{hex}::{}", self.bearer())
    }
}

/// Splits a bearer credential `<id>.<secret>` into its id and secret, checking both.
pub fn parse_bearer(s: &str) -> Result<(String, String), TokenError> {
    let (id, secret) = s.trim().split_once('.').ok_or(TokenError::MissingDot)?;
    let in_alphabet = |t: &str| t.bytes().all(|b| ALPHABET.contains(&b));
    if id.len() != ID_LEN || !in_alphabet(id) {
        return Err(TokenError::BadId {
            len: id.len(),
            charset: in_alphabet(id),
        });
    }
    if secret.len() != SECRET_LEN || !in_alphabet(secret) {
        return Err(TokenError::BadSecret {
            len: secret.len(),
            charset: in_alphabet(secret),
        });
    }
    Ok((id.to_string(), secret.to_string()))
}

/// What a token may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenUsage {
    /// Joining: a cluster or node presents it to have its signing request signed.
    Join,
    /// Administration: a bearer credential for the API (an admin).
    Admin,
}

impl fmt::Display for TokenUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenUsage::Join => "join",
            TokenUsage::Admin => "admin",
        })
    }
}

/// What is known of a stored token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The token's id.
    pub id: String,
    /// What it may be used for.
    pub usage: TokenUsage,
    /// What it is for, in the words of whoever created it.
    pub description: String,
    /// When it was created.
    pub created: DateTime<Utc>,
    /// When it expires; `None`: never.
    pub expires: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize)]
struct StoredToken {
    #[serde(flatten)]
    info: TokenInfo,
    secret_sha256: String,
}

#[derive(Default, Serialize, Deserialize)]
struct TokenFile {
    tokens: Vec<StoredToken>,
}

/// The tokens a server accepts, kept in a JSON file (0600, rewritten atomically) that
/// holds the SHA-256 of each secret, never the secret. Another process (`oakestra
/// token create`) may change the file: every call looks at it again, and reads it again
/// only when it changed (the authenticator verifies a bearer token per request).
pub struct TokenStore {
    path: PathBuf,
    /// Serializes this process's read-modify-write cycles.
    lock: Mutex<()>,
    /// The file as last read, and the stamp it had.
    cache: Mutex<Option<(Option<FileStamp>, Arc<TokenFile>)>>,
}

impl fmt::Debug for TokenStore {
    /// The file, never the hashes it holds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What tells one version of a file from another: atomic rewrites (a new file renamed
/// over the old) give a new inode, and any write a new modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    inode: u64,
    modified: std::time::SystemTime,
    len: u64,
}

/// The stamp of `path`, `None` when it does not exist.
fn stamp_of(path: &Path) -> Result<Option<FileStamp>, TokenError> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(FileStamp {
            inode: m.ino(),
            modified: m.modified().map_err(|e| FileError::new(path, "read", e))?,
            len: m.len(),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FileError::new(path, "read", e).into()),
    }
}

impl TokenStore {
    /// The store kept in `path`; a missing file is an empty store (created on the first
    /// [`create`](Self::create)). A file that is not a token store is an error.
    pub fn open(path: &Path) -> Result<TokenStore, TokenError> {
        read_json::<TokenFile>(path)?;
        Ok(TokenStore {
            path: path.to_path_buf(),
            lock: Mutex::new(()),
            cache: Mutex::new(None),
        })
    }

    /// The tokens as the file holds them now (read again only when it changed).
    fn current(&self) -> Result<Arc<TokenFile>, TokenError> {
        let stamp = stamp_of(&self.path)?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached, file)) = cache.as_ref() {
            if *cached == stamp {
                return Ok(file.clone());
            }
        }
        // Read after the stamp: what is read is at least as new as the stamp says.
        let file = Arc::new(read_json::<TokenFile>(&self.path)?);
        *cache = Some((stamp, file.clone()));
        Ok(file)
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates a token for `usage`, pinned to `ca_hash`, expiring after `ttl` (never
    /// when `None`). Returns it with its secret: the only time the secret is known.
    pub fn create(
        &self,
        usage: TokenUsage,
        ca_hash: &str,
        ttl: Option<Duration>,
        description: &str,
    ) -> Result<JoinToken, TokenError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut file: TokenFile = read_json(&self.path)?;
        let created = Utc::now();
        let expires = ttl
            .map(|ttl| {
                chrono::Duration::from_std(ttl)
                    .ok()
                    .and_then(|d| created.checked_add_signed(d))
                    .ok_or(TokenError::InvalidTtl { ttl })
            })
            .transpose()?;
        let token = loop {
            let token = JoinToken::generate(ca_hash)?;
            if file.tokens.iter().all(|t| t.info.id != token.id) {
                break token;
            }
        };
        file.tokens.push(StoredToken {
            info: TokenInfo {
                id: token.id.clone(),
                usage,
                description: description.to_string(),
                created,
                expires,
            },
            secret_sha256: sha256_hex(token.secret.as_bytes()),
        });
        write_json(&self.path, &file)?;
        Ok(token)
    }

    /// Every token, without secrets.
    pub fn list(&self) -> Result<Vec<TokenInfo>, TokenError> {
        Ok(self
            .current()?
            .tokens
            .iter()
            .map(|t| t.info.clone())
            .collect())
    }

    /// Deletes the token `id`; `false` when there was none.
    pub fn delete(&self, id: &str) -> Result<bool, TokenError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut file: TokenFile = read_json(&self.path)?;
        let before = file.tokens.len();
        file.tokens.retain(|t| t.info.id != id);
        if file.tokens.len() == before {
            return Ok(false);
        }
        write_json(&self.path, &file)?;
        Ok(true)
    }

    /// Checks a bearer credential `<id>.<secret>` presented for `usage` at `now`:
    /// [`Unknown`](TokenError::Unknown) when no token has this id and secret (the
    /// secret's hash is compared in constant time),
    /// [`Expired`](TokenError::Expired), [`WrongUsage`](TokenError::WrongUsage).
    pub fn verify(
        &self,
        bearer: &str,
        usage: TokenUsage,
        now: DateTime<Utc>,
    ) -> Result<TokenInfo, TokenError> {
        let (id, secret) = parse_bearer(bearer)?;
        let presented = sha256_hex(secret.as_bytes());
        let file = self.current()?;
        let token = file
            .tokens
            .iter()
            .find(|t| t.info.id == id)
            .filter(|t| constant_time_eq(t.secret_sha256.as_bytes(), presented.as_bytes()))
            .ok_or(TokenError::Unknown { id })?;
        let info = token.info.clone();
        if let Some(expired) = info.expires.filter(|e| *e <= now) {
            return Err(TokenError::Expired {
                id: info.id,
                expired,
            });
        }
        if info.usage != usage {
            return Err(TokenError::WrongUsage {
                id: info.id,
                usage: info.usage,
                wanted: usage,
            });
        }
        Ok(info)
    }
}

/// The result of [`MemberSecrets::claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The name was free: it now belongs to this secret.
    New,
    /// The name already belonged to this secret (the member joins again).
    Known,
}

#[derive(Default, Serialize, Deserialize)]
struct MemberFile {
    /// Member name -> hex SHA-256 of the secret that claimed it.
    members: BTreeMap<String, String>,
}

/// Which secret owns which member name, kept in a JSON file (0600, rewritten
/// atomically) holding SHA-256 of each secret. Every holder of a join token may join,
/// but only under a name nobody else holds: the first claim of a name binds it to the
/// claimer's secret.
#[derive(Debug)]
pub struct MemberSecrets {
    path: PathBuf,
    lock: Mutex<()>,
}

impl MemberSecrets {
    /// The names kept in `path`; a missing file holds none.
    pub fn open(path: &Path) -> Result<MemberSecrets, TokenError> {
        read_json::<MemberFile>(path)?;
        Ok(MemberSecrets {
            path: path.to_path_buf(),
            lock: Mutex::new(()),
        })
    }

    /// Claims `name` with `secret`: [`Claim::New`] when the name was free (it is now
    /// bound to the secret), [`Claim::Known`] when it is already bound to this secret,
    /// [`TokenError::NameTaken`] when another secret holds it.
    pub fn claim(&self, name: &str, secret: &str) -> Result<Claim, TokenError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut file: MemberFile = read_json(&self.path)?;
        let presented = sha256_hex(secret.as_bytes());
        match file.members.get(name) {
            Some(stored) if constant_time_eq(stored.as_bytes(), presented.as_bytes()) => {
                Ok(Claim::Known)
            }
            Some(_) => Err(TokenError::NameTaken {
                name: name.to_string(),
            }),
            None => {
                file.members.insert(name.to_string(), presented);
                write_json(&self.path, &file)?;
                Ok(Claim::New)
            }
        }
    }

    /// Frees `name` (its member was removed); `false` when nobody held it.
    pub fn forget(&self, name: &str) -> Result<bool, TokenError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut file: MemberFile = read_json(&self.path)?;
        if file.members.remove(name).is_none() {
            return Ok(false);
        }
        write_json(&self.path, &file)?;
        Ok(true)
    }
}

/// Reads a store's JSON file; a missing file is the empty store.
fn read_json<T: DeserializeOwned + Default>(path: &Path) -> Result<T, TokenError> {
    match files::read_optional(path)? {
        None => Ok(T::default()),
        Some(text) => serde_json::from_str(&text).map_err(|source| TokenError::Corrupt {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes a store's JSON file (0600, atomically; `write_private` makes its directory).
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), TokenError> {
    let mut text = serde_json::to_string_pretty(value).expect("token files serialize");
    text.push('\n');
    files::write_private(path, text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::mode_of;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const SECRET: &str = "abcdefghij012345";

    #[test]
    fn join_token_parse_table() {
        let good = format!("K10{HEX}::abc123.{SECRET}");
        type Check = fn(&TokenError) -> bool;
        let cases: Vec<(String, Result<(), Check>)> = vec![
            (good.clone(), Ok(())),
            (format!(" {good}\n"), Ok(())),
            (
                format!("{HEX}::abc123.{SECRET}"),
                Err(|e| matches!(e, TokenError::MissingPrefix)),
            ),
            (
                format!("K11{HEX}::abc123.{SECRET}"),
                Err(|e| matches!(e, TokenError::MissingPrefix)),
            ),
            (
                format!("K10{}::abc123.{SECRET}", &HEX[1..]),
                Err(|e| matches!(e, TokenError::BadCaHash { len: 63, hex: true })),
            ),
            (
                format!("K10{}::abc123.{SECRET}", HEX.to_uppercase()),
                Err(|e| {
                    matches!(
                        e,
                        TokenError::BadCaHash {
                            len: 64,
                            hex: false
                        }
                    )
                }),
            ),
            (
                format!("K10{HEX}abc123.{SECRET}"),
                Err(|e| matches!(e, TokenError::MissingSeparator)),
            ),
            (
                format!("K10{HEX}:abc123.{SECRET}"),
                Err(|e| matches!(e, TokenError::MissingSeparator)),
            ),
            (
                format!("K10{HEX}::abc123{SECRET}"),
                Err(|e| matches!(e, TokenError::MissingDot)),
            ),
            (
                format!("K10{HEX}::abc12.{SECRET}"),
                Err(|e| {
                    matches!(
                        e,
                        TokenError::BadId {
                            len: 5,
                            charset: true
                        }
                    )
                }),
            ),
            (
                format!("K10{HEX}::ABC123.{SECRET}"),
                Err(|e| {
                    matches!(
                        e,
                        TokenError::BadId {
                            len: 6,
                            charset: false
                        }
                    )
                }),
            ),
            (
                format!("K10{HEX}::abc123.{}", &SECRET[1..]),
                Err(|e| {
                    matches!(
                        e,
                        TokenError::BadSecret {
                            len: 15,
                            charset: true
                        }
                    )
                }),
            ),
            (
                format!("K10{HEX}::abc123.abcdefghij01234_"),
                Err(|e| {
                    matches!(
                        e,
                        TokenError::BadSecret {
                            len: 16,
                            charset: false
                        }
                    )
                }),
            ),
        ];
        for (text, expected) in cases {
            match (text.parse::<JoinToken>(), expected) {
                (Ok(token), Ok(())) => {
                    assert_eq!(token.ca_hash, format!("sha256:{HEX}"));
                    assert_eq!(token.id, "abc123");
                    assert_eq!(token.secret, SECRET);
                }
                (Err(e), Err(check)) => {
                    assert!(check(&e), "{text:?}: unexpected error {e:?}");
                    let message = e.to_string();
                    assert!(
                        !message.contains("abcdefghij"),
                        "the secret is echoed: {message}"
                    );
                }
                (got, _) => panic!("{text:?}: got {got:?}"),
            }
        }
    }

    #[test]
    fn tokens_display_round_trip_and_bearers_parse() {
        let token = JoinToken::generate(&format!("sha256:{HEX}")).unwrap();
        let text = token.to_string();
        assert!(text.starts_with(&format!("K10{HEX}::")), "{text}");
        assert_eq!(text.len(), 3 + 64 + 2 + ID_LEN + 1 + SECRET_LEN);
        assert_eq!(text.parse::<JoinToken>().unwrap(), token);
        assert_eq!(
            parse_bearer(&token.bearer()).unwrap(),
            (token.id.clone(), token.secret.clone())
        );
        assert!(!format!("{token:?}").contains(&token.secret));
        assert!(matches!(
            JoinToken::generate("sha256:abc"),
            Err(TokenError::BadCaHash { len: 3, .. })
        ));
    }

    fn store(dir: &tempfile::TempDir) -> TokenStore {
        TokenStore::open(&dir.path().join("state/tokens.json")).unwrap()
    }

    #[test]
    fn the_store_verifies_usage_expiry_and_deletion_and_keeps_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let hash = format!("sha256:{HEX}");
        let now = Utc::now();
        let join = store
            .create(TokenUsage::Join, &hash, None, "nodes")
            .unwrap();
        let admin = store
            .create(
                TokenUsage::Admin,
                &hash,
                Some(Duration::from_secs(3600)),
                "ci",
            )
            .unwrap();
        assert_eq!(join.ca_hash, hash);
        assert_eq!(mode_of(store.path()), 0o600);
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(!text.contains(&join.secret) && !text.contains(&admin.secret));

        let info = store.verify(&join.bearer(), TokenUsage::Join, now).unwrap();
        assert_eq!(
            (info.id.as_str(), info.description.as_str()),
            (join.id.as_str(), "nodes")
        );
        assert!(matches!(
            store.verify(&join.bearer(), TokenUsage::Admin, now),
            Err(TokenError::WrongUsage {
                usage: TokenUsage::Join,
                wanted: TokenUsage::Admin,
                ..
            })
        ));
        store
            .verify(&admin.bearer(), TokenUsage::Admin, now)
            .unwrap();
        let later = now + chrono::Duration::hours(2);
        assert!(matches!(
            store.verify(&admin.bearer(), TokenUsage::Admin, later),
            Err(TokenError::Expired { .. })
        ));
        let wrong_secret = format!("{}.{SECRET}", join.id);
        assert!(matches!(
            store.verify(&wrong_secret, TokenUsage::Join, now),
            Err(TokenError::Unknown { .. })
        ));

        let listed: Vec<String> = store.list().unwrap().into_iter().map(|t| t.id).collect();
        assert_eq!(listed, vec![join.id.clone(), admin.id.clone()]);
        assert!(store.delete(&join.id).unwrap());
        assert!(!store.delete(&join.id).unwrap());
        assert!(matches!(
            store.verify(&join.bearer(), TokenUsage::Join, now),
            Err(TokenError::Unknown { .. })
        ));
    }

    #[test]
    fn a_store_sees_tokens_another_instance_created_and_refuses_a_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let server = store(&dir);
        let cli = store(&dir);
        let token = cli.create(TokenUsage::Admin, HEX, None, "").unwrap();
        server
            .verify(&token.bearer(), TokenUsage::Admin, Utc::now())
            .unwrap();
        std::fs::write(server.path(), "not json").unwrap();
        let err = TokenStore::open(server.path()).unwrap_err();
        assert!(matches!(err, TokenError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("tokens.json"), "{err}");
    }

    #[test]
    fn member_names_belong_to_the_first_secret_that_claims_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("members.json");
        let members = MemberSecrets::open(&path).unwrap();
        assert_eq!(members.claim("n1", "s1").unwrap(), Claim::New);
        assert_eq!(members.claim("n1", "s1").unwrap(), Claim::Known);
        let err = members.claim("n1", "s2").unwrap_err();
        assert!(
            matches!(&err, TokenError::NameTaken { name } if name == "n1"),
            "{err}"
        );
        assert_eq!(members.claim("n2", "s2").unwrap(), Claim::New);
        assert_eq!(mode_of(&path), 0o600);
        assert!(!std::fs::read_to_string(&path).unwrap().contains("s1"));
        // Another instance (another process) sees the claims; a forgotten name is free.
        let again = MemberSecrets::open(&path).unwrap();
        assert_eq!(again.claim("n1", "s1").unwrap(), Claim::Known);
        assert!(again.forget("n1").unwrap());
        assert!(!again.forget("n1").unwrap());
        assert_eq!(members.claim("n1", "s2").unwrap(), Claim::New);
    }
}
