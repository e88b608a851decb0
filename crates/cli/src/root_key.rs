//! The data directory, its lock, the root keyring, and root key rotation.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use agentvault_core::audit::{Action, AuditEvent, Outcome};
use agentvault_core::model::{Actor, Binding};
use agentvault_crypto::Keyring;
use agentvault_store::SealedVersion;
use zeroize::Zeroizing;

use crate::config::{Config, ConfigArgs, KeySource};

/// Creates the data directory (mode 0700) and takes its lock, held while the returned file lives:
/// one process at a time works on a data directory.
pub fn lock_data_dir(dir: &Path) -> Result<fs::File, String> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create the data directory {}: {e}", dir.display()))?;
    }
    let path = dir.join("agentvault.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => {
            Err(format!("another agentvault process is using the data directory {}; stop it first", dir.display()))
        }
        Err(fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

/// Loads the keyring; generates the default key file on the very first start only.
pub fn load_keyring(config: &Config) -> Result<Keyring, String> {
    match &config.key_source {
        KeySource::Env => {
            let text = Zeroizing::new(std::env::var("AGENTVAULT_ROOT_KEY").unwrap_or_default());
            Keyring::parse(&text).map_err(|e| format!("AGENTVAULT_ROOT_KEY is invalid: {e}"))
        }
        KeySource::File(path) => load_file(path),
        KeySource::Generated(path) if path.exists() => load_file(path),
        KeySource::Generated(path) => {
            // (With PostgreSQL a server with a key of its own is refused at start instead: the
            // database records the key its data is sealed under.)
            if matches!(&config.database, crate::config::Database::Sqlite(path) if path.exists()) {
                return Err(format!(
                    "the data directory has a database but no root key file {}; restore the key file, or give the key with AGENTVAULT_ROOT_KEY or --root-key-file",
                    path.display()
                ));
            }
            let ring = Keyring::generate().map_err(|e| e.to_string())?;
            ring.write_file(path).map_err(|e| e.to_string())?;
            tracing::warn!(
                path = %path.display(),
                "generated a new root key in the data directory; this suits a single machine. In production keep the root key \
                 elsewhere (AGENTVAULT_ROOT_KEY or --root-key-file) and back it up: without it no value can be decrypted"
            );
            Ok(ring)
        }
    }
}

/// Loads a keyring that must exist already (never generates one): from AGENTVAULT_ROOT_KEY or a
/// key file.
pub fn load_existing_keyring(source: &KeySource) -> Result<Keyring, String> {
    match source {
        KeySource::Env => {
            let text = Zeroizing::new(std::env::var("AGENTVAULT_ROOT_KEY").unwrap_or_default());
            Keyring::parse(&text).map_err(|e| format!("AGENTVAULT_ROOT_KEY is invalid: {e}"))
        }
        KeySource::File(path) | KeySource::Generated(path) if path.exists() => load_file(path),
        KeySource::File(path) | KeySource::Generated(path) => Err(format!(
            "there is no root key file {}; give the root key the data is sealed under with AGENTVAULT_ROOT_KEY or \
             --root-key-file",
            path.display()
        )),
    }
}

fn load_file(path: &Path) -> Result<Keyring, String> {
    let (ring, warning) = Keyring::load_file(path).map_err(|e| e.to_string())?;
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    Ok(ring)
}

/// `agentvault rotate-root-key`.
pub async fn rotate(args: ConfigArgs) -> Result<(), String> {
    let config = Config::resolve(args)?;
    crate::serve::init_logging(&config.log);
    crate::serve::harden_process();
    if !config.database_exists() {
        return Err(format!("there is no agentvault database in {}; nothing to rotate", config.data_dir.display()));
    }
    // The data directory's lock guards the SQLite file, which one process at a time may use. On
    // PostgreSQL the servers keep running: the database serializes the re-wrap with their
    // writes, and the change feed makes each of them reload what was re-wrapped.
    let on_postgres = matches!(config.database, crate::config::Database::Postgres(..));
    let _lock = if on_postgres { None } else { Some(lock_data_dir(&config.data_dir)?) };
    let current = if on_postgres { load_existing_keyring(&config.key_source)? } else { load_keyring(&config)? };
    let (ring, file) = match &config.key_source {
        // Servers that are running hold their own copy of the keyring: the new key must reach
        // them before any data key uses it, so on PostgreSQL the keyring is used as given
        // (its first key is the new one) and never rewritten here.
        _ if on_postgres => (current, None),
        KeySource::Env => (current, None),
        KeySource::File(p) | KeySource::Generated(p) => {
            let next = current.with_new_active_key().map_err(|e| e.to_string())?;
            // The new key is written (beside the old ones) before any data key uses it.
            next.write_file(p).map_err(|e| e.to_string())?;
            (next, Some(p.clone()))
        }
    };
    let store = config.open_store().await?;
    let versions = store.all_sealed_versions().await.map_err(crate::describe)?;
    let mut rewrapped: Vec<SealedVersion> = Vec::new();
    let mut per_workspace: BTreeMap<String, usize> = BTreeMap::new();
    for v in &versions {
        if v.sealed.root_key_id == ring.active_id() {
            continue;
        }
        let env_id = v.env.map(|e| e.binding_id(&v.secret_id));
        let secret_id = env_id.as_deref().unwrap_or(&v.secret_id);
        let binding = Binding { workspace_id: &v.workspace_id, secret_id, version: v.version };
        let sealed = ring
            .rewrap(binding, &v.sealed)
            .map_err(|e| format!("secret {} version {}: {e}; nothing was changed", v.secret_id, v.version))?;
        *per_workspace.entry(v.workspace_id.clone()).or_default() += 1;
        rewrapped.push(SealedVersion { sealed, ..v.clone() });
    }
    let now = agentvault_server::now_millis();
    let audit: Vec<AuditEvent> = per_workspace
        .iter()
        .map(|(ws, n)| {
            AuditEvent::new(now, ws, Actor::System, Action::RootKeyRotate, Outcome::Success)
                .target(ring.active_id())
                .detail(format!("rewrapped={n}"))
        })
        .collect();
    store.replace_wrapped_keys(&rewrapped, ring.active_id(), &audit).await.map_err(crate::describe)?;
    // The egress CA's key is sealed under the root key too.
    if let Some((_, sealed)) = store.get_egress_ca().await.map_err(crate::describe)?
        && sealed.root_key_id != ring.active_id()
    {
        let sealed = ring
            .rewrap(agentvault_server::egress::inject::CA_BINDING, &sealed)
            .map_err(|e| format!("the egress CA key: {e}; the old root keys were kept"))?;
        store.rewrap_egress_ca(&sealed).await.map_err(crate::describe)?;
    }
    if let Some(p) = &file {
        // Every data key is now under the active key: retire the old ones.
        ring.active_only().and_then(|r| r.write_file(p)).map_err(|e| e.to_string())?;
        let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o600));
    }
    println!("re-wrapped {} of {} data keys under root key {}", rewrapped.len(), versions.len(), ring.active_id());
    match file {
        Some(p) => println!("the key file {} now holds only the new key", p.display()),
        None if on_postgres => println!(
            "every data key is under root key {}; once every server runs with it first in its keyring, remove the \
             other keys from the keyrings (restarting the servers one at a time)",
            ring.active_id()
        ),
        None => println!(
            "every data key is under the first key of AGENTVAULT_ROOT_KEY; you can remove the other keys from it"
        ),
    }
    store.close().await;
    Ok(())
}
