//! The audit pipeline's serial stage, driven without HTTP.
//!
//! Every agent read waits for its record to be durable; whatever part of that path runs on one
//! thread at a time caps the read rate of the whole server however many cores it has. This
//! program feeds a typical stream of read records (a few agents reading a few secrets over and
//! over) to the SQLite backend in the batches the group commit hands it, and reports:
//!
//! - `append`: records/s through `append_audit` alone — the journal append that the group-commit
//!   leader runs while every other reader waits;
//! - `into the table`: records/s until the background mover has put every record into audit
//!   segments (the other serial stage: one thread writes them);
//! - CPU µs per record of the whole process, and bytes the database grew by per record.
//!
//! Usage: `audit_stage [RECORDS] [BATCH]` (default 1,000,000 records in batches of 32). Run by
//! `bench/run.sh`; on its own: `cargo run --release -p agentvault-bench --bin audit_stage`.

use std::path::Path;
use std::time::Instant;

use agentvault_core::audit::{Action, AuditEvent, AuditFilter, Outcome};
use agentvault_core::model::Actor;
use agentvault_store::{SqliteStore, Store};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The stream: `AGENTS` agents each reading `SECRETS` secrets with one of `KEYS` API keys.
const AGENTS: usize = 4;
const SECRETS: usize = 8;
const KEYS: usize = 2;
const WORKSPACE: &str = "ws_0123456789abcdef0123456789ab";

fn events(n: usize, start_ms: i64) -> Vec<AuditEvent> {
    let agents: Vec<String> = (0..AGENTS).map(|i| format!("agt_{i:02}3456789abcdef0123456789ab")).collect();
    let keys: Vec<String> = (0..KEYS).map(|i| format!("key_{i:02}3456789abcdef0123456789ab")).collect();
    let secrets: Vec<String> = (0..SECRETS).map(|i| format!("service_{i}_api_key")).collect();
    (0..n)
        .map(|i| {
            // About 2,000 reads per second of wall time: timestamps advance in small steps.
            let at = start_ms + (i / 2) as i64;
            AuditEvent::new(at, WORKSPACE, Actor::ApiKey(keys[i % KEYS].clone()), Action::SecretRead, Outcome::Success)
                .secret(&secrets[i % SECRETS])
                .agent(&agents[(i / SECRETS) % AGENTS])
                .detail(format!("version={} env=live value=default", 1 + i % 3))
        })
        .collect()
}

/// CPU seconds this process has used (all threads).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    ticks as f64 / 100.0
}

/// The database's files (the journal, which only holds records until they are moved, aside).
fn size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| !e.file_name().to_string_lossy().contains("audit-journal"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let records: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let batch: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(32).max(1);
    let dir = std::env::temp_dir().join(format!("agentvault-audit-stage-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = SqliteStore::open(&dir.join("agentvault.db")).await?;
    let stream = events(records, 1_790_000_000_000);
    let batches: Vec<Vec<AuditEvent>> = stream.chunks(batch).map(<[AuditEvent]>::to_vec).collect();
    drop(stream);
    let before = size(&dir);

    let cpu = cpu_seconds();
    let started = Instant::now();
    for b in batches {
        store.append_audit(b).await?;
    }
    let appended = started.elapsed();
    // Listing settles the journal first: every record is in the table when it answers.
    let page = store.list_audit(WORKSPACE, &AuditFilter { limit: 1, ..AuditFilter::default() }).await?;
    let moved = started.elapsed();
    let cpu = cpu_seconds() - cpu;
    if page.len() != 1 {
        return Err("the records did not reach the table".into());
    }
    store.close().await;
    let grown = size(&dir).saturating_sub(before);
    let _ = std::fs::remove_dir_all(&dir);

    let n = records as f64;
    println!("audit stage: {records} records in batches of {batch}");
    println!("append_records_per_s={:.0}", n / appended.as_secs_f64());
    println!("into_table_records_per_s={:.0}", n / moved.as_secs_f64());
    println!("cpu_us_per_record={:.2}", cpu * 1e6 / n);
    println!("bytes_per_record={:.1}", grown as f64 / n);
    Ok(())
}
