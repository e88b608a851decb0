//! `agentvault serve`.

use std::io::{IsTerminal, Write};

use agentvault_server::{AppState, Bootstrap};
use agentvault_store::Store;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, ConfigArgs};
use crate::root_key::{load_keyring, lock_data_dir};

pub fn init_logging(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Keeps secrets out of core dumps and away from other processes of the same user
/// (`/proc/<pid>/mem`, `/proc/<pid>/environ`, ptrace), and makes every file the server creates
/// (database, WAL, key file) readable by its owner only.
#[allow(unsafe_code)]
pub fn harden_process() {
    let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: umask, setrlimit and prctl take plain values and a pointer to a live, initialised
    // struct; none of them touches memory Rust owns.
    let (a, b) = unsafe {
        libc::umask(0o077);
        (libc::setrlimit(libc::RLIMIT_CORE, &no_core), libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0))
    };
    if a != 0 || b != 0 {
        tracing::warn!("could not disable core dumps for the server process");
    }
}

pub async fn run(args: ConfigArgs) -> Result<(), String> {
    let config = Config::resolve(args)?;
    init_logging(&config.log);
    harden_process();
    let _lock = lock_data_dir(&config.data_dir)?;
    let keyring = load_keyring(&config)?;
    let store = config.open_store().await?;
    let given = std::env::var("AGENTVAULT_BOOTSTRAP_TOKEN").ok().filter(|t| !t.is_empty());
    let boot = agentvault_server::bootstrap(store.as_ref(), given.as_deref()).await.map_err(crate::describe)?;
    let setup_code = if store.count_users().await.map_err(crate::describe)? == 0 {
        Some(new_setup_code(store.as_ref()).await.map_err(crate::describe)?)
    } else {
        None
    };
    let state = AppState::start(store.clone(), keyring, config.server.clone()).await.map_err(crate::describe)?;
    let tls = match &config.tls {
        Some((cert, key)) => Some(agentvault_server::load_tls(cert, key).await?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;

    let mut out = std::io::stdout().lock();
    match boot {
        Bootstrap::NewToken(token) => {
            let _ = writeln!(
                out,
                "\nagentvault: first start. The admin token (shown this once; store it now):\n\n    {token}\n\n\
                 Use it as `Authorization: Bearer <token>`.\n"
            );
        }
        Bootstrap::TokenFromEnv => {
            let _ =
                writeln!(out, "agentvault: first start; the admin token is the value of AGENTVAULT_BOOTSTRAP_TOKEN");
        }
        Bootstrap::UsersExist { ignored_env, removed } => {
            if ignored_env {
                tracing::warn!(
                    "AGENTVAULT_BOOTSTRAP_TOKEN is set but ignored: users exist, so no bootstrap token is \
                     created or honoured any more; remove the variable"
                );
            }
            if removed > 0 {
                tracing::warn!(removed, "removed admin tokens left from before the first user existed");
            }
        }
        Bootstrap::Existing => {}
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    if let Some(code) = setup_code {
        // A browser cannot open 0.0.0.0 or [::] everywhere: name this machine instead.
        let shown = if addr.ip().is_unspecified() { format!("localhost:{}", addr.port()) } else { addr.to_string() };
        let _ = writeln!(
            out,
            "agentvault: no user exists yet. Create the first admin at {scheme}://{shown}/setup with the setup code {code}\n\
             (or POST /api/v1/setup, or `agentvault user create --email ... --role admin` with the server stopped)."
        );
    }
    let shutdown = shutdown_signal()?;
    let _ = writeln!(out, "agentvault listening on {scheme}://{addr}");
    let _ = out.flush();
    drop(out);
    match &config.database {
        crate::config::Database::Sqlite(path) => {
            tracing::info!(%addr, database = %path.display(), "agentvault started")
        }
        crate::config::Database::Postgres(url, _) => tracing::info!(%addr, database = %url, "agentvault started"),
    }

    let result = agentvault_server::serve(listener, state, tls, shutdown).await;
    store.close().await;
    tracing::info!("agentvault stopped");
    result.map_err(|e| format!("server error: {e}"))
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed here, before the server says it is
/// listening, so a signal can never arrive while the default action (exit at once) still holds.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("cannot handle SIGINT: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down: finishing requests and writing the audit log");
    })
}
/// A fresh one-time setup code (`ABCDE-FGHJK`); only its hash is stored, replacing any earlier one.
async fn new_setup_code(store: &dyn Store) -> agentvault_core::Result<String> {
    // No 0/O or 1/I: the code is read off a terminal and typed.
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let bytes = agentvault_crypto::random_bytes::<10>().map_err(agentvault_core::Error::internal)?;
    let chars: String = bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect();
    let code = format!("{}-{}", &chars[..5], &chars[5..]);
    let normalized = agentvault_server::service::auth::normalize_code(&code);
    store
        .set_one_time_code(
            agentvault_server::service::auth::SETUP_CODE,
            &agentvault_server::auth::hash_token(&normalized),
            agentvault_server::now_millis(),
        )
        .await?;
    Ok(code)
}
