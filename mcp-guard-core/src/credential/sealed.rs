//! The encrypted credential file: every record sealed with XChaCha20-Poly1305.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead as _, Payload};
use chacha20poly1305::{KeyInit as _, XChaCha20Poly1305, XNonce};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{Credential, CredentialError, CredentialKey, CredentialMode, CredentialStore};

const FORMAT: &str = "mcp-guard-credentials/1";
const CHECK_PLAINTEXT: &[u8] = b"mcp-guard credential store key check";
const NONCE_LEN: usize = 24;

/// A 256-bit key that seals a [`SealedFileStore`]. Zeroed on drop; never printed.
#[derive(Clone)]
pub struct StoreKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreKey([REDACTED])")
    }
}

impl StoreKey {
    /// A fresh random key.
    ///
    /// # Errors
    /// The operating system's random source failed.
    pub fn generate() -> Result<Self, SealedStoreError> {
        let mut k = Zeroizing::new([0u8; 32]);
        crate::random::fill(&mut *k).map_err(|e| SealedStoreError::Io {
            path: PathBuf::from("<random source>"),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(Self(k))
    }

    /// A key from its base64 text (32 bytes once decoded); `origin` names where it came
    /// from in errors (a file or an environment variable).
    ///
    /// # Errors
    /// [`SealedStoreError::BadKey`] when the text is not base64 of exactly 32 bytes.
    pub fn from_base64(text: &str, origin: &str) -> Result<Self, SealedStoreError> {
        let bytes = Zeroizing::new(B64.decode(text.trim()).map_err(|_| SealedStoreError::BadKey {
            origin: origin.to_owned(),
            reason: "not base64".into(),
        })?);
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| SealedStoreError::BadKey {
                origin: origin.to_owned(),
                reason: format!("{} bytes, need 32", bytes.len()),
            })?;
        Ok(Self(Zeroizing::new(arr)))
    }

    /// The key as base64 text (for writing a key file).
    fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(B64.encode(*self.0))
    }

    /// Reads a key file, refusing one that group or others may read.
    ///
    /// # Errors
    /// [`SealedStoreError::KeyPermissions`], [`SealedStoreError::BadKey`], I/O.
    pub fn read_file(path: &Path) -> Result<Self, SealedStoreError> {
        let meta = std::fs::metadata(path).map_err(|e| io(path, e))?;
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SealedStoreError::KeyPermissions {
                path: path.to_owned(),
                mode,
            });
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| io(path, e))?);
        Self::from_base64(&text, &path.display().to_string())
    }

    /// Writes this key to a new file created with mode 0600 (fails if it exists).
    ///
    /// # Errors
    /// I/O, including the file already existing.
    pub fn write_new_file(&self, path: &Path) -> Result<(), SealedStoreError> {
        write_key_file(path, self, false)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&*self.0).into())
    }
}

fn write_key_file(path: &Path, key: &StoreKey, replace: bool) -> Result<(), SealedStoreError> {
    let mut opts = OpenOptions::new();
    opts.write(true).mode(0o600);
    if replace {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(path).map_err(|e| io(path, e))?;
    let mut text = key.to_base64();
    text.push('\n');
    f.write_all(text.as_bytes()).map_err(|e| io(path, e))?;
    f.sync_all().map_err(|e| io(path, e))?;
    Ok(())
}

/// Where a [`SealedFileStore`]'s key comes from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum KeySource {
    /// A key file (base64 text, mode 0600), created with a fresh key on the first write.
    File(PathBuf),
    /// An environment variable holding the key as base64.
    Env(String),
    /// A key held by the caller (tests, embedding).
    Value(StoreKey),
}

impl KeySource {
    fn describe(&self) -> String {
        match self {
            Self::File(p) => format!("key file {}", p.display()),
            Self::Env(v) => format!("environment variable {v}"),
            Self::Value(_) => "the given key".into(),
        }
    }

    fn load(&self) -> Result<Option<StoreKey>, SealedStoreError> {
        match self {
            Self::File(p) => match std::fs::symlink_metadata(p) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                _ => StoreKey::read_file(p).map(Some),
            },
            Self::Env(v) => match std::env::var(v) {
                Ok(text) => {
                    let text = Zeroizing::new(text);
                    StoreKey::from_base64(&text, &format!("environment variable {v}")).map(Some)
                }
                Err(_) => Ok(None),
            },
            Self::Value(k) => Ok(Some(k.clone())),
        }
    }
}

/// Why the sealed store could not be read or written. Never holds a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealedStoreError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key file may be read by group or others.
    #[error(
        "key file {} has mode {mode:o}: it must be readable by its owner only (chmod 600 {})",
        path.display(),
        path.display()
    )]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key text is malformed.
    #[error("the credential store key from {origin} is invalid: {reason}")]
    BadKey {
        /// Where it came from.
        origin: String,
        /// What is wrong (never the key).
        reason: String,
    },
    /// The store exists but no key is available.
    #[error("credential store {} exists but there is no key ({key}); without it the store cannot be opened", path.display())]
    NoKey {
        /// The store file.
        path: PathBuf,
        /// Where the key was looked for.
        key: String,
    },
    /// The key does not open the store.
    #[error("the key ({key}) does not open credential store {}: wrong key? Nothing was changed", path.display())]
    WrongKey {
        /// The store file.
        path: PathBuf,
        /// Where the key came from.
        key: String,
    },
    /// A record failed authentication (tampered with, or moved to another key).
    #[error("credential store {}: the record for {record} fails authentication (tampered or swapped)", path.display())]
    Tampered {
        /// The store file.
        path: PathBuf,
        /// Which record (names only).
        record: String,
    },
    /// The file is not a credential store of this version.
    #[error("credential store {}: {reason}", path.display())]
    Malformed {
        /// The store file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io(path: &Path, e: std::io::Error) -> SealedStoreError {
    SealedStoreError::Io {
        path: path.to_owned(),
        source: e,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRecord {
    server: String,
    mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    principal: Option<String>,
    name: String,
    /// base64(nonce || ciphertext).
    sealed: String,
    /// Seconds since the Unix epoch.
    updated: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    format: String,
    /// base64(nonce || ciphertext) of a fixed text: tells a wrong key from tampering.
    check: String,
    records: Vec<FileRecord>,
}

/// What `list` shows of a record: its key and when it was set, never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredEntry {
    /// Which credential.
    pub key: CredentialKey,
    /// When it was last set.
    pub updated: SystemTime,
}

fn mode_str(m: CredentialMode) -> &'static str {
    match m {
        CredentialMode::Personal => "personal",
        CredentialMode::Shared => "shared",
    }
}

/// The associated data binding a record's ciphertext to its key, length-prefixed so no
/// two keys encode alike.
fn aad(key: &CredentialKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    for part in [
        FORMAT,
        &*key.server,
        mode_str(key.mode),
        key.principal.as_deref().unwrap_or(""),
        &*key.name,
    ] {
        out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

fn seal(key: &StoreKey, plaintext: &[u8], aad: &[u8]) -> Result<String, SealedStoreError> {
    let mut nonce = [0u8; NONCE_LEN];
    crate::random::fill(&mut nonce).map_err(|e| SealedStoreError::Io {
        path: PathBuf::from("<random source>"),
        source: std::io::Error::other(e.to_string()),
    })?;
    let ct = key
        .cipher()
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad })
        .map_err(|_| SealedStoreError::BadKey {
            origin: "sealing".into(),
            reason: "encryption failed".into(),
        })?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    Ok(B64.encode(out))
}

/// `None` when the ciphertext does not authenticate under `key` with `aad`.
fn open(key: &StoreKey, sealed: &str, aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let raw = B64.decode(sealed).ok()?;
    if raw.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ct) = raw.split_at(NONCE_LEN);
    key.cipher()
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
        .map(Zeroizing::new)
}

fn record_key(r: &FileRecord) -> Option<CredentialKey> {
    match (r.mode.as_str(), &r.principal) {
        ("shared", None) => Some(CredentialKey::shared(r.server.as_str(), r.name.as_str())),
        ("personal", Some(p)) => Some(CredentialKey::personal(
            r.server.as_str(),
            p.as_str(),
            r.name.as_str(),
        )),
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime_ns: i128,
    ino: u64,
}

/// The file as last read, with the key that opened its check value: a key rotation
/// rewrites the file, so the key is read again only when the file changes.
struct Snapshot {
    key: StoreKey,
    records: BTreeMap<CredentialKey, FileRecord>,
}

type Parsed = Arc<Snapshot>;

/// The default credential store: one JSON file whose records are each sealed with
/// XChaCha20-Poly1305 under a 256-bit key, with a random 192-bit nonce per record and
/// the record's (server, mode, principal, name) as associated data, so a record moved
/// to another key fails to open.
///
/// Writes are atomic (a temporary file, `fsync`, `rename`) under an exclusive lock on
/// `<store>.lock`, so the gateway and the `credentials` commands can share the file. The
/// gateway re-reads the file, and the key with it, when the file changes (a key rotation
/// always rewrites it). Values are decrypted only when handed out.
///
/// # Security
/// A wrong key is detected before anything is written (a sealed check value), and the
/// error names the file. A key file readable by group or others is refused.
pub struct SealedFileStore {
    path: PathBuf,
    key: KeySource,
    cache: Mutex<Option<(Stamp, Parsed)>>,
}

impl fmt::Debug for SealedFileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedFileStore")
            .field("path", &self.path)
            .field("key", &self.key.describe())
            .finish_non_exhaustive()
    }
}

impl SealedFileStore {
    /// The store at `path`, sealed with the key from `key`. Nothing is read yet: a
    /// missing file is an empty store.
    pub fn new(path: impl Into<PathBuf>, key: KeySource) -> Self {
        Self {
            path: path.into(),
            key,
            cache: Mutex::new(None),
        }
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".lock");
        p.into()
    }

    fn key(&self) -> Result<StoreKey, SealedStoreError> {
        self.key.load()?.ok_or_else(|| SealedStoreError::NoKey {
            path: self.path.clone(),
            key: self.key.describe(),
        })
    }

    /// Reads and verifies the file: `None` when it does not exist.
    fn read(&self, key: Option<&StoreKey>) -> Result<Option<(Stamp, StoreFile)>, SealedStoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&self.path, e)),
        };
        let meta = std::fs::metadata(&self.path).map_err(|e| io(&self.path, e))?;
        let stamp = Stamp {
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ino: meta.ino(),
        };
        let file: StoreFile = serde_json::from_slice(&bytes).map_err(|e| SealedStoreError::Malformed {
            path: self.path.clone(),
            reason: format!("not a credential store ({e})"),
        })?;
        if file.format != FORMAT {
            return Err(SealedStoreError::Malformed {
                path: self.path.clone(),
                reason: format!("unknown format {:?} (expected {FORMAT:?})", file.format),
            });
        }
        let key = match key {
            Some(k) => k.clone(),
            None => self.key()?,
        };
        if open(&key, &file.check, FORMAT.as_bytes()).is_none_or(|p| p.as_slice() != CHECK_PLAINTEXT) {
            return Err(SealedStoreError::WrongKey {
                path: self.path.clone(),
                key: self.key.describe(),
            });
        }
        Ok(Some((stamp, file)))
    }

    fn parsed(&self) -> Result<Option<Parsed>, SealedStoreError> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&self.path, e)),
        };
        let now = Stamp {
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ino: meta.ino(),
        };
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((stamp, parsed)) = &*cache
            && *stamp == now
        {
            return Ok(Some(parsed.clone()));
        }
        let key = self.key()?;
        let Some((stamp, file)) = self.read(Some(&key))? else {
            *cache = None;
            return Ok(None);
        };
        let parsed = Arc::new(Snapshot {
            key,
            records: self.index(file)?,
        });
        *cache = Some((stamp, parsed.clone()));
        Ok(Some(parsed))
    }

    fn index(&self, file: StoreFile) -> Result<BTreeMap<CredentialKey, FileRecord>, SealedStoreError> {
        let mut map = BTreeMap::new();
        for r in file.records {
            let k = record_key(&r).ok_or_else(|| SealedStoreError::Malformed {
                path: self.path.clone(),
                reason: format!("record {}/{} has an invalid mode/principal", r.server, r.name),
            })?;
            map.insert(k, r);
        }
        Ok(map)
    }

    /// The credential for `key`, decrypted.
    ///
    /// # Errors
    /// Wrong or missing key, a tampered record, I/O.
    pub fn get_sync(&self, key: &CredentialKey) -> Result<Option<SecretString>, SealedStoreError> {
        let Some(parsed) = self.parsed()? else {
            return Ok(None);
        };
        let Some(rec) = parsed.records.get(key) else {
            return Ok(None);
        };
        self.open_record(&parsed.key, key, rec).map(Some)
    }

    fn open_record(
        &self,
        store_key: &StoreKey,
        key: &CredentialKey,
        rec: &FileRecord,
    ) -> Result<SecretString, SealedStoreError> {
        let tampered = || SealedStoreError::Tampered {
            path: self.path.clone(),
            record: key.to_string(),
        };
        let plain = open(store_key, &rec.sealed, &aad(key)).ok_or_else(tampered)?;
        let text = std::str::from_utf8(&plain).map_err(|_| tampered())?;
        // Exact capacity, so turning it into a boxed str does not reallocate and leave
        // an unzeroed copy behind.
        let mut owned = String::with_capacity(text.len());
        owned.push_str(text);
        Ok(SecretString::from(owned))
    }

    /// Every stored credential's key and date (never values), sorted.
    ///
    /// # Errors
    /// Wrong or missing key, I/O.
    pub fn list(&self) -> Result<Vec<StoredEntry>, SealedStoreError> {
        let Some(parsed) = self.parsed()? else {
            return Ok(Vec::new());
        };
        Ok(parsed
            .records
            .iter()
            .map(|(k, r)| StoredEntry {
                key: k.clone(),
                updated: UNIX_EPOCH + std::time::Duration::from_secs(r.updated),
            })
            .collect())
    }

    fn locked(&self) -> Result<File, SealedStoreError> {
        let path = self.lock_path();
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        f.lock().map_err(|e| io(&path, e))?;
        Ok(f)
    }

    /// Runs `change` on the records under the store's write lock and writes the result
    /// atomically. The key is created (key files only) when the store does not exist yet.
    fn modify<T>(
        &self,
        change: impl FnOnce(&StoreKey, &mut BTreeMap<CredentialKey, FileRecord>) -> Result<T, SealedStoreError>,
    ) -> Result<T, SealedStoreError> {
        let _lock = self.locked()?;
        let existing = self.read(None)?;
        let (key, mut map) = match existing {
            Some((_, file)) => (self.key()?, self.index(file)?),
            None => (self.key_or_create()?, BTreeMap::new()),
        };
        let out = change(&key, &mut map)?;
        self.write_file(&key, &map)?;
        Ok(out)
    }

    fn key_or_create(&self) -> Result<StoreKey, SealedStoreError> {
        if let Some(k) = self.key.load()? {
            return Ok(k);
        }
        match &self.key {
            KeySource::File(p) => {
                let k = StoreKey::generate()?;
                k.write_new_file(p)?;
                Ok(k)
            }
            _ => Err(SealedStoreError::NoKey {
                path: self.path.clone(),
                key: self.key.describe(),
            }),
        }
    }

    fn write_file(
        &self,
        key: &StoreKey,
        map: &BTreeMap<CredentialKey, FileRecord>,
    ) -> Result<(), SealedStoreError> {
        let file = StoreFile {
            format: FORMAT.into(),
            check: seal(key, CHECK_PLAINTEXT, FORMAT.as_bytes())?,
            records: map.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| SealedStoreError::Malformed {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(format!(".tmp-{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| io(&tmp, e))?;
            f.write_all(&bytes).map_err(|e| io(&tmp, e))?;
            f.sync_all().map_err(|e| io(&tmp, e))?;
            std::fs::rename(&tmp, &self.path).map_err(|e| io(&self.path, e))?;
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty())
                && let Ok(d) = File::open(dir)
            {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = None;
        result
    }

    /// Stores (or replaces) the credential for `key`, sealed under a fresh nonce.
    ///
    /// # Errors
    /// Wrong key (nothing is written), I/O.
    pub fn set(&self, key: &CredentialKey, value: &SecretString) -> Result<(), SealedStoreError> {
        #[expect(
            clippy::disallowed_methods,
            reason = "sealing the value is the one place the store reads it"
        )]
        let plain = secrecy::ExposeSecret::expose_secret(value).as_bytes();
        let updated = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.modify(|store_key, map| {
            let sealed = seal(store_key, plain, &aad(key))?;
            map.insert(
                key.clone(),
                FileRecord {
                    server: key.server.to_string(),
                    mode: mode_str(key.mode).into(),
                    principal: key.principal.as_deref().map(str::to_owned),
                    name: key.name.to_string(),
                    sealed,
                    updated,
                },
            );
            Ok(())
        })
    }

    /// Removes the credential for `key`; returns whether one was stored.
    ///
    /// # Errors
    /// Wrong key (nothing is written), I/O.
    pub fn remove(&self, key: &CredentialKey) -> Result<bool, SealedStoreError> {
        if !self.path.exists() {
            return Ok(false);
        }
        self.modify(|_, map| Ok(map.remove(key).is_some()))
    }

    /// Re-seals every record under `new` and writes the store in one atomic rename.
    /// Every record is opened with the current key first; if any fails, nothing changes.
    ///
    /// With a key file, use [`rotate_key_file`](Self::rotate_key_file), which also
    /// replaces the file recoverably. Returns the number of records re-sealed.
    ///
    /// # Errors
    /// Wrong key, a tampered record, I/O.
    pub fn rotate_to(&self, new: &StoreKey) -> Result<usize, SealedStoreError> {
        let _lock = self.locked()?;
        self.reseal(new)
    }

    fn reseal(&self, new: &StoreKey) -> Result<usize, SealedStoreError> {
        let Some((_, file)) = self.read(None)? else {
            return Ok(0);
        };
        let old = self.key()?;
        let map = self.index(file)?;
        let mut out = BTreeMap::new();
        for (k, r) in &map {
            let value = self.open_record(&old, k, r)?;
            #[expect(clippy::disallowed_methods, reason = "re-sealing under the new key")]
            let plain = secrecy::ExposeSecret::expose_secret(&value).as_bytes();
            let mut r = r.clone();
            r.sealed = seal(new, plain, &aad(k))?;
            out.insert(k.clone(), r);
        }
        self.write_file(new, &out)?;
        Ok(out.len())
    }

    /// Rotates a key-file store: a new random key is written to `<key file>.next`
    /// (0600), every record is re-sealed under it and the store replaced atomically,
    /// then `<key file>.next` is renamed over the key file. If the process stops between
    /// the two renames, the next open finds the store sealed under `.next` and
    /// completes the rotation ([`recover_rotation`](Self::recover_rotation)).
    ///
    /// # Errors
    /// Not a key-file store, wrong key, a tampered record, I/O.
    pub fn rotate_key_file(&self) -> Result<usize, SealedStoreError> {
        let KeySource::File(key_path) = &self.key else {
            return Err(SealedStoreError::BadKey {
                origin: self.key.describe(),
                reason: "rotate with a key file, or give the new key with rotate_to".into(),
            });
        };
        let _lock = self.locked()?;
        self.recover_locked()?;
        let next = next_key_path(key_path);
        let new = StoreKey::generate()?;
        write_key_file(&next, &new, true)?;
        let n = match self.reseal(&new) {
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_file(&next);
                return Err(e);
            }
        };
        std::fs::rename(&next, key_path).map_err(|e| io(key_path, e))?;
        Ok(n)
    }

    /// Completes a key rotation cut short between its two renames (see
    /// [`rotate_key_file`](Self::rotate_key_file)); does nothing otherwise.
    ///
    /// # Errors
    /// I/O.
    pub fn recover_rotation(&self) -> Result<(), SealedStoreError> {
        if !matches!(self.key, KeySource::File(_)) || !self.path.exists() {
            return Ok(());
        }
        let _lock = self.locked()?;
        self.recover_locked()
    }

    fn recover_locked(&self) -> Result<(), SealedStoreError> {
        let KeySource::File(key_path) = &self.key else {
            return Ok(());
        };
        let next = next_key_path(key_path);
        if !next.exists() {
            return Ok(());
        }
        let current = self.read(None);
        if let Err(SealedStoreError::WrongKey { .. }) = current {
            let candidate = StoreKey::read_file(&next)?;
            if self.read(Some(&candidate)).is_ok() {
                std::fs::rename(&next, key_path).map_err(|e| io(key_path, e))?;
                *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = None;
                tracing::warn!(key_file = %key_path.display(), "completed an interrupted credential key rotation");
            }
        } else if current.is_ok() {
            // The store still opens with the current key: the rotation never replaced
            // it, so the leftover key is dropped. (On any other error it is kept.)
            let _ = std::fs::remove_file(&next);
        }
        Ok(())
    }
}

fn next_key_path(key: &Path) -> PathBuf {
    let mut p = key.to_path_buf().into_os_string();
    p.push(".next");
    p.into()
}

#[async_trait]
impl CredentialStore for SealedFileStore {
    async fn get(&self, key: &CredentialKey) -> Result<Option<Credential>, CredentialError> {
        self.get_sync(key)
            .map(|v| v.map(Credential::new))
            .map_err(CredentialError::backend)
    }
}

/// Writes go to the file under its lock, synchronously (a small file; the OAuth
/// writes are rare: a sign-in, a refresh).
#[async_trait]
impl super::CredentialWriter for SealedFileStore {
    async fn put(&self, key: &CredentialKey, value: &SecretString) -> Result<(), CredentialError> {
        self.set(key, value).map_err(CredentialError::backend)
    }

    async fn delete(&self, key: &CredentialKey) -> Result<bool, CredentialError> {
        self.remove(key).map_err(CredentialError::backend)
    }

    async fn keys(&self, server: &str) -> Result<Vec<CredentialKey>, CredentialError> {
        Ok(self
            .list()
            .map_err(CredentialError::backend)?
            .into_iter()
            .map(|e| e.key)
            .filter(|k| *k.server == *server)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reveal(s: &SecretString) -> String {
        #[expect(clippy::disallowed_methods, reason = "test reads the value")]
        secrecy::ExposeSecret::expose_secret(s).to_owned()
    }

    #[test]
    fn round_trip_no_plaintext_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let store = SealedFileStore::new(dir.path().join("c.json"), KeySource::File(dir.path().join("k")));
        let k = CredentialKey::personal("gh", "alice", "TOKEN");
        store.set(&k, &SecretString::from("canary-value-123456")).unwrap();
        store.set(&k, &SecretString::from("canary-value-654321")).unwrap();
        assert_eq!(
            reveal(&store.get_sync(&k).unwrap().unwrap()),
            "canary-value-654321"
        );
        let bytes = std::fs::read(dir.path().join("c.json")).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("canary"));
        let mode = std::fs::metadata(dir.path().join("k")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(store.list().unwrap().len(), 1);
        assert!(store.remove(&k).unwrap());
        assert!(store.get_sync(&k).unwrap().is_none());
    }

    #[test]
    fn swapped_records_fail_authentication() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let store = SealedFileStore::new(&path, KeySource::File(dir.path().join("k")));
        let a = CredentialKey::personal("gh", "alice", "TOKEN");
        let b = CredentialKey::personal("gh", "bob", "TOKEN");
        store.set(&a, &SecretString::from("alice-secret-1")).unwrap();
        store.set(&b, &SecretString::from("bob-secret-22")).unwrap();
        let mut file: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let recs = file["records"].as_array_mut().unwrap();
        let s0 = recs[0]["sealed"].clone();
        recs[0]["sealed"] = recs[1]["sealed"].clone();
        recs[1]["sealed"] = s0;
        std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
        let err = store.get_sync(&a).unwrap_err();
        assert!(matches!(err, SealedStoreError::Tampered { .. }), "{err}");
    }

    #[test]
    fn wrong_key_is_clear_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let store = SealedFileStore::new(&path, KeySource::Value(StoreKey::generate().unwrap()));
        store
            .set(
                &CredentialKey::shared("s", "N"),
                &SecretString::from("value-1234567"),
            )
            .unwrap();
        let before = std::fs::read(&path).unwrap();
        let other = SealedFileStore::new(&path, KeySource::Value(StoreKey::generate().unwrap()));
        let err = other
            .set(
                &CredentialKey::shared("s", "M"),
                &SecretString::from("value-7654321"),
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("does not open credential store"),
            "{err}"
        );
        assert!(err.to_string().contains("c.json"), "{err}");
        assert!(other.get_sync(&CredentialKey::shared("s", "N")).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn refuses_loose_key_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let kp = dir.path().join("k");
        StoreKey::generate().unwrap().write_new_file(&kp).unwrap();
        std::fs::set_permissions(&kp, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = StoreKey::read_file(&kp).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn rotation_reseals_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let kp = dir.path().join("k");
        let store = SealedFileStore::new(&path, KeySource::File(kp.clone()));
        let k = CredentialKey::shared("s", "N");
        store.set(&k, &SecretString::from("value-1234567")).unwrap();
        let old_key = std::fs::read(&kp).unwrap();
        let old_file = std::fs::read(&path).unwrap();
        assert_eq!(store.rotate_key_file().unwrap(), 1);
        assert_ne!(std::fs::read(&kp).unwrap(), old_key);
        assert_ne!(std::fs::read(&path).unwrap(), old_file);
        assert_eq!(reveal(&store.get_sync(&k).unwrap().unwrap()), "value-1234567");
        // An interrupted rotation: the store is sealed under `.next`, the key file is old.
        let current = std::fs::read(&kp).unwrap();
        let next = StoreKey::generate().unwrap();
        write_key_file(&next_key_path(&kp), &next, true).unwrap();
        store.reseal(&next).unwrap();
        assert!(matches!(
            store.get_sync(&k),
            Err(SealedStoreError::WrongKey { .. })
        ));
        store.recover_rotation().unwrap();
        assert_ne!(std::fs::read(&kp).unwrap(), current);
        assert_eq!(reveal(&store.get_sync(&k).unwrap().unwrap()), "value-1234567");
    }
}
