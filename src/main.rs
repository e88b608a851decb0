//! The `agentvault` binary: see `agentvault --help`.
fn main() -> std::process::ExitCode {
    agentvault_cli::main()
}
