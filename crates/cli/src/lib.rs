//! The `agentvault` command line: `serve` and `rotate-root-key`.

mod config;
mod keys;
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
    /// Re-wrap every data key under a new root key. The server must be stopped.
    ///
    /// With the generated key file (or --root-key-file), a new key is generated, every data key
    /// is re-wrapped under it, and the old key is removed from the file. With AGENTVAULT_ROOT_KEY,
    /// put the new key first in the list (NEW,OLD), run this, then drop OLD.
    RotateRootKey(ConfigArgs),
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
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agentvault: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve::run(args)),
        Command::RotateRootKey(args) => runtime.block_on(keys::rotate(args)),
        Command::User(UserCommand::Create(args)) => runtime.block_on(users::create(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("agentvault: {msg}");
            ExitCode::FAILURE
        }
    }
}
