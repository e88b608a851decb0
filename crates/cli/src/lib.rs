//! The `agentvault` command line: `serve`, `rotate-root-key`, `migrate-store` and the terminal client.

mod client;
mod config;
mod migrate_store;
mod root_key;
mod serve;
mod users;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use config::{Config, ConfigArgs};

#[derive(Parser)]
#[command(name = "agentvault", version, about = "A secrets vault and function runtime for conversational AI agents")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (JSON API) on the configured data directory.
    Serve(ConfigArgs),
    /// Re-wrap every data key under a new root key. On SQLite the server must be stopped.
    ///
    /// With the generated key file (or --root-key-file), a new key is generated, every data key
    /// is re-wrapped under it, and the old key is removed from the file. With AGENTVAULT_ROOT_KEY,
    /// put the new key first in the list (NEW,OLD), run this, then drop OLD. With PostgreSQL
    /// (--database-url) it runs while the servers do: the keyring (AGENTVAULT_ROOT_KEY or
    /// --root-key-file) is used as given, its first key the new one, and never rewritten.
    RotateRootKey(ConfigArgs),
    /// Move a whole installation from its SQLite database into a new, empty PostgreSQL database
    /// (secrets stay sealed as they are). The server must be stopped.
    MigrateStore(migrate_store::MigrateStoreArgs),
    /// Sign in to a running server with a personal access token (stored with mode 0600).
    Login {
        #[command(flatten)]
        remote: client::Remote,
        /// Read the token from standard input instead of a prompt
        #[arg(long)]
        token_stdin: bool,
    },
    /// Agents of a workspace on a running server.
    Agents {
        #[command(flatten)]
        remote: client::Remote,
        #[command(subcommand)]
        cmd: client::AgentsCmd,
    },
    /// Secrets of a workspace on a running server (values from a prompt, a file or stdin).
    Secrets {
        #[command(flatten)]
        remote: client::Remote,
        #[command(subcommand)]
        cmd: client::SecretsCmd,
    },
    /// An agent's functions on a running server: list, push a Python file, run one.
    Fn {
        #[command(flatten)]
        remote: client::Remote,
        #[command(subcommand)]
        cmd: client::FnCmd,
    },
    /// API keys of a workspace on a running server.
    Keys {
        #[command(flatten)]
        remote: client::Remote,
        #[command(subcommand)]
        cmd: client::KeysCmd,
    },
    /// Members of a workspace on a running server, and invitations to join it.
    Members {
        #[command(flatten)]
        remote: client::Remote,
        #[command(subcommand)]
        cmd: client::MembersCmd,
    },
    /// The audit log of a workspace on a running server, oldest first; -f to follow.
    Audit {
        #[command(flatten)]
        remote: client::Remote,
        #[command(flatten)]
        args: client::AuditArgs,
    },
    /// Manage users on the data directory (with the server stopped).
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from a prompt or stdin, never from an argument.
    Create(users::CreateUser),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The terminal client is plain blocking HTTP: no runtime needed.
    let client_result = match cli.command {
        Command::Login { remote, token_stdin } => Some(client::login(&remote, token_stdin)),
        Command::Agents { remote, cmd } => Some(client::agents(&remote, cmd)),
        Command::Secrets { remote, cmd } => Some(client::secrets(&remote, cmd)),
        Command::Keys { remote, cmd } => Some(client::keys(&remote, cmd)),
        Command::Fn { remote, cmd } => Some(client::functions(&remote, cmd)),
        Command::Members { remote, cmd } => Some(client::members(&remote, cmd)),
        Command::Audit { remote, args } => Some(client::audit(&remote, args)),
        other => return run_local(other),
    };
    match client_result {
        Some(Ok(())) | None => ExitCode::SUCCESS,
        Some(Err(msg)) => {
            eprintln!("agentvault: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// An error as a command prints it. An internal error's message points to the server log, which
/// a command does not have: its context is shown instead.
pub(crate) fn describe(e: agentvault_core::Error) -> String {
    match e.internal_context() {
        Some(context) => {
            format!("agentvault hit an unexpected error: {}", context.strip_prefix("internal: ").unwrap_or(context))
        }
        None => e.message.into_owned(),
    }
}

fn run_local(command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agentvault: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match command {
        Command::Serve(args) => runtime.block_on(serve::run(args)),
        Command::RotateRootKey(args) => runtime.block_on(root_key::rotate(args)),
        Command::MigrateStore(args) => runtime.block_on(migrate_store::run(args)),
        Command::User(UserCommand::Create(args)) => runtime.block_on(users::create(args)),
        _ => Err("this command has no handler in this build of agentvault; please report it".to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("agentvault: {msg}");
            ExitCode::FAILURE
        }
    }
}
