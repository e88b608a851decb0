//! The audit listing at scale, without HTTP: fills a database with RECORDS read records of one
//! workspace (a typical stream: a few agents reading a few secrets with two API keys, one read in
//! a thousand denied), merges the segments as the server's upkeep does, and times filtered pages
//! the way the console and the API ask for them — by secret, by agent, by outcome, by a time range,
//! each from the newest record and from a cursor deep in the log — and an export of a time range
//! through the export stream's batches (never more than one batch in memory).
//!
//! Prints the p50 and p99 of each query over ROUNDS runs, the database's bytes per record, and how
//! fast the records went in.
//!
//! Usage: `audit_listing [RECORDS] [ROUNDS]` (default 10,000,000 and 30). With
//! `AGENTVAULT_BENCH_DATABASE_URL=postgres://…` it runs on that (empty) PostgreSQL database
//! instead of a new SQLite file.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentvault_core::audit::{Action, AuditEvent, AuditFilter, Outcome};
use agentvault_core::model::{Actor, Workspace};
use agentvault_store::{DatabaseUrl, ExportPosition, PostgresStore, SqliteStore, Store};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const AGENTS: usize = 4;
const SECRETS: usize = 8;
const WORKSPACE: &str = "ws_0123456789abcdef0123456789ab";
const START_MS: i64 = 1_790_000_000_000;
/// Records a second of the stream's own time.
const PER_SECOND: i64 = 2_000;

fn agent(i: usize) -> String {
    format!("agt_{i:02}3456789abcdef0123456789ab")
}

fn record(i: usize) -> AuditEvent {
    let outcome = if i % 1000 == 999 { Outcome::Denied } else { Outcome::Success };
    AuditEvent::new(
        START_MS + i as i64 * 1000 / PER_SECOND,
        WORKSPACE,
        Actor::ApiKey(format!("key_{:02}3456789abcdef0123456789ab", i % 2)),
        Action::SecretRead,
        outcome,
    )
    .secret(&format!("service_{}_api_key", i % SECRETS))
    .agent(&agent((i / SECRETS) % AGENTS))
    .detail(format!("version={} env=live value=default", 1 + i % 3))
}

fn size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

fn quantile(times: &mut [Duration], q: f64) -> f64 {
    times.sort_unstable();
    let i = ((times.len() as f64 - 1.0) * q).round() as usize;
    times[i].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let records: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(30).max(1);
    let dir = std::env::temp_dir().join(format!("agentvault-audit-listing-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (store, backend): (Arc<dyn Store>, &str) = match std::env::var("AGENTVAULT_BENCH_DATABASE_URL") {
        Ok(url) => (Arc::new(PostgresStore::open(&DatabaseUrl::parse(&url)?, 8).await?), "postgresql"),
        Err(_) => (Arc::new(SqliteStore::open(&dir.join("agentvault.db")).await?), "sqlite"),
    };
    let ws = Workspace { id: WORKSPACE.into(), name: "bench".into(), created_at: START_MS };
    store
        .create_workspace(
            &ws,
            None,
            &AuditEvent::new(START_MS, WORKSPACE, Actor::System, Action::WorkspaceCreate, Outcome::Success),
        )
        .await?;

    // Fill: batches of 64 (a busy group commit), built a million at a time.
    let started = Instant::now();
    let mut done = 0;
    while done < records {
        let n = (records - done).min(1_000_000);
        let stream: Vec<AuditEvent> = (done..done + n).map(record).collect();
        let mut stream = stream.into_iter();
        loop {
            let b: Vec<AuditEvent> = stream.by_ref().take(64).collect();
            if b.is_empty() {
                break;
            }
            store.append_audit(b).await?;
        }
        done += n;
    }
    store.list_audit(WORKSPACE, &AuditFilter { limit: 1, ..AuditFilter::default() }).await?;
    let filled = started.elapsed();
    let started = Instant::now();
    let mut merged = 0;
    loop {
        let m = store.compact_audit(None, 4096).await?;
        merged += m;
        if m == 0 {
            break;
        }
    }
    let compacted = started.elapsed();
    println!("backend={backend}");
    println!("records={records}");
    println!("fill_records_per_s={:.0}", records as f64 / filled.as_secs_f64());
    println!("compaction_s={:.1} segments_merged_away={merged}", compacted.as_secs_f64());
    if backend == "sqlite" {
        println!("bytes_per_record={:.1}", size(&dir) as f64 / records as f64);
    }

    // A cursor about 90% of the way back into the log.
    let deep_cursor = {
        let all = store.list_audit(WORKSPACE, &AuditFilter { limit: 1, ..AuditFilter::default() }).await?;
        all.first().map(|r| r.seq - (records as i64 * 9 / 10)).unwrap_or(1)
    };
    let span_ms = records as i64 * 1000 / PER_SECOND;
    let base = AuditFilter { limit: 50, ..AuditFilter::default() };
    let queries: Vec<(&str, AuditFilter)> = vec![
        ("newest", base.clone()),
        ("by_secret", AuditFilter { secret_name: Some("service_3_api_key".into()), ..base.clone() }),
        (
            "by_secret_prefix",
            AuditFilter { secret_name: Some("service_3".into()), secret_prefix: true, ..base.clone() },
        ),
        ("by_agent", AuditFilter { agent_id: Some(agent(2)), ..base.clone() }),
        ("by_outcome_denied", AuditFilter { outcome: Some(Outcome::Denied), ..base.clone() }),
        (
            "by_time_range",
            AuditFilter {
                since: Some(START_MS + span_ms / 2),
                until: Some(START_MS + span_ms / 2 + 60_000),
                ..base.clone()
            },
        ),
        (
            "by_secret_deep",
            AuditFilter {
                secret_name: Some("service_3_api_key".into()),
                before_seq: Some(deep_cursor),
                ..base.clone()
            },
        ),
        ("by_agent_deep", AuditFilter { agent_id: Some(agent(1)), before_seq: Some(deep_cursor), ..base.clone() }),
        (
            "by_outcome_denied_deep",
            AuditFilter { outcome: Some(Outcome::Denied), before_seq: Some(deep_cursor), ..base.clone() },
        ),
        (
            "by_agent_and_secret_oldest_first",
            AuditFilter {
                agent_id: Some(agent(0)),
                secret_name: Some("service_1_api_key".into()),
                oldest_first: true,
                ..base.clone()
            },
        ),
    ];
    for (name, filter) in &queries {
        let mut times = Vec::with_capacity(rounds);
        let mut found = 0;
        for _ in 0..rounds {
            let t = Instant::now();
            found = store.list_audit(WORKSPACE, filter).await?.len();
            times.push(t.elapsed());
        }
        println!(
            "listing_{name}_p50_ms={:.2} listing_{name}_p99_ms={:.2} listing_{name}_found={found}",
            quantile(&mut times, 0.5),
            quantile(&mut times, 0.99)
        );
    }

    // Export of everything, batch by batch: memory stays at one batch.
    let started = Instant::now();
    let mut position = ExportPosition::default();
    let mut exported = 0usize;
    loop {
        let batch = store.audit_export_batch(position, 1000).await?;
        if batch.rows.is_empty() && batch.segments.is_empty() {
            break;
        }
        if let Some(r) = batch.rows.last() {
            position.rows = r.seq;
        }
        exported += batch.rows.len();
        for (first, recs) in &batch.segments {
            position.segments = *first;
            exported += recs.len();
        }
    }
    println!("export_records_per_s={:.0} exported={exported}", exported as f64 / started.elapsed().as_secs_f64());
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
