//! The `agentvault` binary: see `agentvault --help`.

// glibc's allocator spent ~15% of the server's CPU on the secret-read path under load
// (bench/RESULTS.md); mimalloc's thread-local heaps avoid most of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    agentvault_cli::main()
}
