//! The root keyring and envelope encryption of secret versions (docs/architecture.md, "Values").
//!
//! Each secret version is sealed with a fresh 256-bit data key (DEK) under AES-256-GCM with a
//! random 96-bit nonce; the associated data binds the ciphertext to `workspace | secret |
//! version`. The DEK is wrapped by the active root key (AES-256-GCM, associated data naming the
//! root key id and the same binding). All primitives come from `ring`; key and plaintext buffers
//! are zeroized on drop.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use agentvault_core::model::{Binding, Sealed};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

pub const KEY_LEN: usize = 32;

/// Errors of the crypto layer. None of them carries key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CryptoError {
    /// A root key is not 32 bytes.
    WrongKeyLength(usize),
    /// A root key is not valid base64.
    BadKeyEncoding,
    /// The keyring has no key.
    EmptyKeyring,
    /// A sealed value names a root key the keyring does not hold.
    UnknownRootKey(String),
    /// Authentication failed: wrong key, tampered bytes, or a ciphertext moved elsewhere.
    OpenFailed,
    /// The system random number generator failed.
    Random,
    /// Reading or writing a key file failed.
    Io(String),
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CryptoError::WrongKeyLength(n) => {
                write!(f, "a root key must be {KEY_LEN} bytes (base64 of 32 random bytes); this one is {n} bytes")
            }
            CryptoError::BadKeyEncoding => f.write_str("a root key is not valid base64"),
            CryptoError::EmptyKeyring => f.write_str("the root keyring holds no key"),
            CryptoError::UnknownRootKey(id) => write!(
                f,
                "a secret is sealed under root key {id}, which the keyring does not hold; add that key to the keyring"
            ),
            CryptoError::OpenFailed => f.write_str("a sealed value failed to authenticate"),
            CryptoError::Random => f.write_str("the system random number generator failed"),
            CryptoError::Io(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for CryptoError {}

pub type Result<T> = std::result::Result<T, CryptoError>;

/// Fills a fixed-size array with bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    SystemRandom::new().fill(&mut out).map_err(|_| CryptoError::Random)?;
    Ok(out)
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Constant-time equality of two byte strings of equal length.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One 256-bit root key (key-encryption key) and its id.
struct RootKey {
    id: String,
    material: Zeroizing<[u8; KEY_LEN]>,
    aead: LessSafeKey,
}

impl RootKey {
    fn new(bytes: &[u8]) -> Result<RootKey> {
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::WrongKeyLength(bytes.len()));
        }
        let mut material = Zeroizing::new([0u8; KEY_LEN]);
        material.copy_from_slice(bytes);
        let mut id_input = Zeroizing::new(b"agentvault root key id\0".to_vec());
        id_input.extend_from_slice(bytes);
        let digest = sha256(&id_input);
        let id = format!("rk_{}", hex(&digest[..8]));
        Ok(RootKey { id, aead: aead_key(&material[..])?, material })
    }
}

fn aead_key(bytes: &[u8]) -> Result<LessSafeKey> {
    let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| CryptoError::WrongKeyLength(bytes.len()))?;
    Ok(LessSafeKey::new(unbound))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The root keys agentvault knows. The first is active: new data keys are wrapped under it;
/// the others stay to open data keys wrapped before a rotation.
pub struct Keyring {
    keys: Vec<RootKey>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring").field("ids", &self.ids()).finish_non_exhaustive()
    }
}

impl Keyring {
    /// A keyring of raw keys; the first is active. Duplicates are dropped.
    pub fn from_raw_keys(keys: &[&[u8]]) -> Result<Keyring> {
        let mut ring: Vec<RootKey> = Vec::new();
        for k in keys {
            let key = RootKey::new(k)?;
            if !ring.iter().any(|r| r.id == key.id) {
                ring.push(key);
            }
        }
        if ring.is_empty() {
            return Err(CryptoError::EmptyKeyring);
        }
        Ok(Keyring { keys: ring })
    }

    /// Parses base64 keys separated by commas, whitespace or new lines (`#` starts a comment
    /// line). The first key is active.
    pub fn parse(text: &str) -> Result<Keyring> {
        let mut raw: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            for item in line.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty()) {
                let bytes = B64.decode(item).map_err(|_| CryptoError::BadKeyEncoding)?;
                raw.push(Zeroizing::new(bytes));
            }
        }
        let refs: Vec<&[u8]> = raw.iter().map(|k| k.as_slice()).collect();
        Keyring::from_raw_keys(&refs)
    }

    /// A keyring holding one freshly generated key.
    pub fn generate() -> Result<Keyring> {
        let key = Zeroizing::new(random_bytes::<KEY_LEN>()?);
        Keyring::from_raw_keys(&[&key[..]])
    }

    /// Reads a key file (see [`parse`](Self::parse)). Returns the keyring and a warning when
    /// the file can be read by other users.
    pub fn load_file(path: &Path) -> Result<(Keyring, Option<String>)> {
        let text = Zeroizing::new(
            fs::read_to_string(path)
                .map_err(|e| CryptoError::Io(format!("cannot read root key file {}: {e}", path.display())))?,
        );
        let mode = fs::metadata(path).map(|m| m.permissions().mode()).unwrap_or(0);
        let warning = (mode & 0o077 != 0).then(|| {
            format!(
                "root key file {} has mode {:o}; it should be readable by its owner only (chmod 600)",
                path.display(),
                mode & 0o777
            )
        });
        Ok((Keyring::parse(&text)?, warning))
    }

    /// Writes the keyring to `path` with mode 0600, atomically (a temporary file renamed over).
    pub fn write_file(&self, path: &Path) -> Result<()> {
        let io = |e: std::io::Error| CryptoError::Io(format!("cannot write root key file {}: {e}", path.display()));
        let tmp = path.with_extension("tmp");
        let _ = fs::remove_file(&tmp);
        let mut text = Zeroizing::new(String::from(
            "# agentvault root keyring: base64 keys, one a line; the first is active.\n# Keep this file secret and backed up: without it no value can be decrypted.\n",
        ));
        for k in &self.keys {
            text.push_str(&B64.encode(&k.material[..]));
            text.push('\n');
        }
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }

    /// The id of the active root key.
    pub fn active_id(&self) -> &str {
        &self.keys[0].id
    }

    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.keys.iter().any(|k| k.id == id)
    }

    /// A keyring with a freshly generated key in front (active) and the current keys behind it.
    pub fn with_new_active_key(&self) -> Result<Keyring> {
        let fresh = Zeroizing::new(random_bytes::<KEY_LEN>()?);
        let mut all: Vec<&[u8]> = vec![&fresh[..]];
        all.extend(self.keys.iter().map(|k| &k.material[..]));
        Keyring::from_raw_keys(&all)
    }

    /// A keyring of the active key only (after every data key has been re-wrapped).
    pub fn active_only(&self) -> Result<Keyring> {
        Keyring::from_raw_keys(&[&self.keys[0].material[..]])
    }

    fn key(&self, id: &str) -> Result<&RootKey> {
        self.keys.iter().find(|k| k.id == id).ok_or_else(|| CryptoError::UnknownRootKey(id.to_owned()))
    }

    /// Seals `plaintext` for `binding` under a fresh data key wrapped by the active root key.
    pub fn seal(&self, binding: Binding<'_>, plaintext: &[u8]) -> Result<Sealed> {
        let dek = Zeroizing::new(random_bytes::<KEY_LEN>()?);
        let ciphertext = seal_with(&aead_key(&dek[..])?, &value_aad(binding), plaintext)?;
        let root = &self.keys[0];
        let wrapped_dek = seal_with(&root.aead, &dek_aad(&root.id, binding), &dek[..])?;
        Ok(Sealed { root_key_id: root.id.clone(), wrapped_dek, ciphertext })
    }

    /// Opens a sealed value; fails if anything was changed or the value was moved to another
    /// workspace, secret or version.
    pub fn open(&self, binding: Binding<'_>, sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>> {
        self.data_key(binding, sealed)?.open(binding, sealed)
    }

    /// Unwraps the data key of `sealed`, to open it (again) without the root key.
    pub fn data_key(&self, binding: Binding<'_>, sealed: &Sealed) -> Result<DataKey> {
        let dek = self.unwrap_dek(binding, sealed)?;
        Ok(DataKey { aead: aead_key(&dek[..])? })
    }

    /// Re-wraps the data key of `sealed` under the active root key; the value ciphertext is
    /// untouched.
    pub fn rewrap(&self, binding: Binding<'_>, sealed: &Sealed) -> Result<Sealed> {
        let dek = self.unwrap_dek(binding, sealed)?;
        let root = &self.keys[0];
        let wrapped_dek = seal_with(&root.aead, &dek_aad(&root.id, binding), &dek[..])?;
        Ok(Sealed { root_key_id: root.id.clone(), wrapped_dek, ciphertext: sealed.ciphertext.clone() })
    }

    fn unwrap_dek(&self, binding: Binding<'_>, sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>> {
        let root = self.key(&sealed.root_key_id)?;
        let dek = open_with(&root.aead, &dek_aad(&root.id, binding), &sealed.wrapped_dek)?;
        if dek.len() != KEY_LEN {
            return Err(CryptoError::OpenFailed);
        }
        Ok(dek)
    }
}

/// The unwrapped data key of one sealed value: opening the value with it costs one AES-GCM
/// decryption, without unwrapping the key again. The value's binding is still checked.
pub struct DataKey {
    aead: LessSafeKey,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// Opens `sealed` (the value this key was unwrapped from) for `binding`.
    pub fn open(&self, binding: Binding<'_>, sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>> {
        open_with(&self.aead, &value_aad(binding), &sealed.ciphertext)
    }
}

fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u32).to_be_bytes());
    out.extend_from_slice(field);
}

fn binding_bytes(label: &[u8], root_key_id: Option<&str>, b: Binding<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    push_field(&mut out, label);
    if let Some(id) = root_key_id {
        push_field(&mut out, id.as_bytes());
    }
    push_field(&mut out, b.workspace_id.as_bytes());
    push_field(&mut out, b.secret_id.as_bytes());
    out.extend_from_slice(&b.version.to_be_bytes());
    out
}

fn value_aad(b: Binding<'_>) -> Vec<u8> {
    binding_bytes(b"agentvault/v1/value", None, b)
}

fn dek_aad(root_key_id: &str, b: Binding<'_>) -> Vec<u8> {
    binding_bytes(b"agentvault/v1/dek", Some(root_key_id), b)
}

/// `nonce || ciphertext || tag`
fn seal_with(key: &LessSafeKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let nonce_bytes = random_bytes::<NONCE_LEN>()?;
    // Sized up front so that sealing in place never reallocates (and leaves no plaintext behind).
    let mut body = Vec::with_capacity(plaintext.len() + AES_256_GCM.tag_len());
    body.extend_from_slice(plaintext);
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce_bytes), Aad::from(aad), &mut body)
        .map_err(|_| CryptoError::OpenFailed)?;
    let mut out = Vec::with_capacity(NONCE_LEN + body.len());
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(&body);
    Ok(out)
}

fn open_with(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
        return Err(CryptoError::OpenFailed);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::OpenFailed)?;
    let mut buf = Zeroizing::new(body.to_vec());
    let len = key.open_in_place(nonce, Aad::from(aad), &mut buf).map_err(|_| CryptoError::OpenFailed)?.len();
    buf.truncate(len);
    Ok(buf)
}

#[cfg(test)]
mod tests;
