//! Following the change feed: how every server keeps its read model equal to the database when
//! several servers share one (PostgreSQL), and what `X-Agentvault-Index` waits for.
//!
//! Every mutating transaction takes the next change number and records what it changed (see
//! `agentvault_store::Change`). A background task on each server applies the changes after the
//! last one it applied, strictly in order: a change of one workspace reloads that workspace's
//! part of the model, a change spanning workspaces (or a gap in the numbers, or a lost
//! notification connection) reloads everything. It wakes on the database's notification (or this
//! server's own commit) and polls at least once a second, so a dropped notification delays a
//! change by at most a second and never loses it.
//!
//! The task holds the write lock while it loads and replaces, so it can never put back an older
//! state over a change this server has just committed and applied itself.

use std::time::{Duration, Instant};

use agentvault_core::{Error, ErrorKind, Result};
use agentvault_store::{Change, Store};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use crate::AppState;
use crate::error::ApiError;
use crate::read_model::{Snapshot, WorkspaceSlice};

/// How many changes one pass reads at most.
const BATCH: u32 = 1000;
/// How often the task looks at the feed when nothing wakes it.
const POLL: Duration = Duration::from_secs(1);
/// How many changes the feed keeps behind the newest (a server further behind reloads all).
const KEEP: i64 = 10_000;

/// Where this server's read model stands in the change feed.
pub struct Feed {
    applied: watch::Sender<i64>,
    /// Since when the model has been behind the database (None: caught up at the last look).
    behind_since: std::sync::Mutex<Option<(Instant, i64)>>,
}

impl Feed {
    pub fn new(applied: i64) -> Feed {
        Feed { applied: watch::Sender::new(applied), behind_since: std::sync::Mutex::new(None) }
    }

    /// The number of the newest change the read model holds (with every change before it).
    pub fn applied(&self) -> i64 {
        *self.applied.borrow()
    }

    /// Waits until change `index` is applied, at most `timeout`; false when it was not.
    pub async fn wait_for(&self, index: i64, timeout: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|applied| *applied >= index)).await.is_ok_and(|r| r.is_ok())
    }

    /// How many changes behind, and for how long, when it has been behind for longer than
    /// `bound`.
    pub fn lagging(&self, bound: Duration) -> Option<(i64, Duration)> {
        let behind = *self.behind_since.lock().unwrap_or_else(|p| p.into_inner());
        behind.map(|(since, latest)| (latest - self.applied(), since.elapsed())).filter(|(_, for_)| *for_ > bound)
    }

    fn observe(&self, latest: i64) {
        let mut behind = self.behind_since.lock().unwrap_or_else(|p| p.into_inner());
        if self.applied() >= latest {
            *behind = None;
        } else {
            let since = behind.map_or_else(Instant::now, |(since, _)| since);
            *behind = Some((since, latest));
        }
    }

    pub(crate) fn set_applied(&self, index: i64) {
        self.applied.send_if_modified(|applied| {
            let moved = index > *applied;
            *applied = (*applied).max(index);
            moved
        });
    }
}

/// The header that carries a change's number to the client and back.
pub const INDEX_HEADER: &str = "x-agentvault-index";
/// How long a request that sends the header waits for this server to apply that change.
const INDEX_WAIT: Duration = Duration::from_secs(2);

/// Read your writes on any server: a request carrying `X-Agentvault-Index: N` is answered only
/// once this server has applied change N (else, after two seconds, `503 index_not_reached`; this
/// returns that answer). See [`mark_change`] for the other half.
pub async fn await_index(st: &AppState, headers: &HeaderMap) -> Option<Response> {
    let value = headers.get(INDEX_HEADER)?;
    let index = value.to_str().ok().and_then(|v| v.trim().parse::<i64>().ok()).filter(|n| *n >= 0);
    let Some(index) = index else {
        return Some(
            ApiError(Error::invalid(
                "X-Agentvault-Index",
                "X-Agentvault-Index must be the change number (a non-negative integer) from an earlier response",
            ))
            .into_response(),
        );
    };
    if st.feed.wait_for(index, INDEX_WAIT).await {
        return None;
    }
    Some(
        ApiError(Error::new(
            ErrorKind::Unavailable,
            "index_not_reached",
            format!(
                "this server has applied the changes up to {}, not yet change {index}, after waiting {} s; \
                 retry, or send the request to the server that made the change",
                st.feed.applied(),
                INDEX_WAIT.as_secs()
            ),
        ))
        .into_response(),
    )
}

/// Whether a request may change something (its answer then carries the change index).
pub fn changes(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Every response to a change carries the number of the newest change this server has committed
/// (its own write's, or a later one), for the client to send along.
pub fn mark_change(st: &AppState, resp: &mut Response) {
    if let Ok(v) = HeaderValue::from_str(&st.store.committed_change().to_string()) {
        resp.headers_mut().insert(INDEX_HEADER, v);
    }
}

/// Everything the read model is built from.
pub async fn load_snapshot(store: &dyn Store) -> Result<Snapshot> {
    Ok(Snapshot {
        workspaces: store.list_workspaces().await?,
        agents: store.load_all_agents().await?,
        secrets: store.load_current_secrets(None).await?,
        api_keys: store.load_api_keys(None).await?,
        admin_tokens: store.load_admin_tokens().await?,
        functions: store.load_functions(None).await?,
        deployed: store.load_deployed_functions(None).await?,
    })
}

async fn load_workspace(store: &dyn Store, workspace_id: &str) -> Result<WorkspaceSlice> {
    Ok(WorkspaceSlice {
        workspace: store.get_workspace(workspace_id).await?,
        agents: store.list_agents(workspace_id).await?,
        secrets: store.load_current_secrets(Some(workspace_id)).await?,
        api_keys: store.load_api_keys(Some(workspace_id)).await?,
        functions: store.load_functions(Some(workspace_id)).await?,
        deployed: store.load_deployed_functions(Some(workspace_id)).await?,
    })
}

/// Follows the feed for the life of the server.
pub async fn follow(st: AppState) {
    let mut missed = false;
    let mut passes: u64 = 0;
    loop {
        match catch_up(&st, missed).await {
            Ok(()) => missed = false,
            Err(e) => {
                // The database is away: read everything again once it is back.
                tracing::warn!(error = %e, "applying changes from the database failed; retrying");
                missed = true;
                tokio::time::sleep(POLL).await;
                continue;
            }
        }
        passes += 1;
        if passes.is_multiple_of(600) {
            let before = st.feed.applied() - KEEP;
            if before > 0
                && let Err(e) = st.store.prune_changes(before).await
            {
                tracing::warn!(error = %e, "pruning the change feed failed");
            }
        }
        missed |= st.store.wait_for_changes(POLL).await;
    }
}

/// Applies every change committed since the last one applied.
async fn catch_up(st: &AppState, reload_all: bool) -> Result<()> {
    if reload_all {
        return reload_everything(st).await;
    }
    loop {
        let latest = st.store.latest_change().await?;
        st.feed.observe(latest);
        let applied = st.feed.applied();
        if latest <= applied {
            return Ok(());
        }
        let changes = st.store.changes_since(applied, BATCH).await?;
        if !is_contiguous(applied, &changes) {
            tracing::info!(applied, latest, "the change feed has moved past this server; reloading everything");
            return reload_everything(st).await;
        }
        apply(st, &changes).await?;
        st.metrics.changes_applied.inc_by(changes.len() as u64);
        st.feed.observe(latest);
    }
}

/// The changes follow `applied` with no number missing.
fn is_contiguous(applied: i64, changes: &[Change]) -> bool {
    !changes.is_empty() && changes.iter().zip(applied + 1..).all(|(c, expected)| c.seq == expected)
}

async fn apply(st: &AppState, changes: &[Change]) -> Result<()> {
    let Some(last) = changes.last().map(|c| c.seq) else { return Ok(()) };
    if changes.iter().any(|c| c.workspace_id.is_none() && !c.mine) {
        return reload_everything(st).await;
    }
    // This server's own changes are in its model already (the services update it after the
    // commit, under the write lock) and its workers were recycled where needed.
    let mut workspaces: Vec<&str> =
        changes.iter().filter(|c| !c.mine).filter_map(|c| c.workspace_id.as_deref()).collect();
    workspaces.sort_unstable();
    workspaces.dedup();
    {
        let _lock = st.write_lock.lock().await;
        for ws in workspaces {
            let slice = load_workspace(st.store.as_ref(), ws).await?;
            st.model.replace_workspace(ws, slice);
        }
        // Admin tokens belong to no workspace; setting up the first admin ends them.
        st.model.replace_admin_tokens(st.store.load_admin_tokens().await?);
        // Which secrets are injected-only (the egress proxy's own table, small).
        st.egress.replace_injections(st.store.load_injections().await?);
    }
    // A function changed (maybe on another server): this server's workers of that agent start
    // afresh, as they do where the change was made.
    for c in changes.iter().filter(|c| !c.mine) {
        if let Some(agent) = &c.agent_id
            && c.actions.iter().any(|a| a.starts_with("function.") && a != "function.invoke")
        {
            st.runtime.forget_agent(agent);
        }
    }
    st.refresh_gauges();
    st.feed.set_applied(last);
    st.metrics.change_index.set(st.feed.applied());
    Ok(())
}

async fn reload_everything(st: &AppState) -> Result<()> {
    let _lock = st.write_lock.lock().await;
    let latest = st.store.latest_change().await?;
    let snapshot = load_snapshot(st.store.as_ref()).await?;
    st.model.replace_all(snapshot);
    st.egress.replace_injections(st.store.load_injections().await?);
    drop(_lock);
    st.refresh_gauges();
    st.feed.set_applied(latest);
    st.feed.observe(latest);
    st.metrics.change_index.set(st.feed.applied());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seq: i64) -> Change {
        Change { seq, workspace_id: Some("ws".into()), agent_id: None, actions: vec![], mine: false }
    }

    #[test]
    fn a_gap_or_an_empty_page_is_not_contiguous() {
        assert!(is_contiguous(4, &[change(5), change(6)]));
        assert!(!is_contiguous(4, &[change(6)]), "change 5 was pruned");
        assert!(!is_contiguous(4, &[change(5), change(7)]));
        assert!(!is_contiguous(4, &[]), "latest said there is more");
    }

    #[tokio::test]
    async fn waiting_for_an_index_ends_when_it_is_applied_or_at_the_timeout() {
        let feed = std::sync::Arc::new(Feed::new(3));
        assert!(feed.wait_for(3, Duration::from_millis(1)).await);
        assert!(!feed.wait_for(4, Duration::from_millis(20)).await);
        let f = feed.clone();
        let waiter = tokio::spawn(async move { f.wait_for(5, Duration::from_secs(5)).await });
        feed.set_applied(5);
        assert!(waiter.await.unwrap());
        feed.set_applied(2);
        assert_eq!(feed.applied(), 5, "the applied index never goes back");
    }

    #[test]
    fn lag_is_reported_only_past_the_bound() {
        let feed = Feed::new(10);
        feed.observe(10);
        assert_eq!(feed.lagging(Duration::ZERO), None);
        feed.observe(15);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(feed.lagging(Duration::ZERO).map(|(n, _)| n), Some(5));
        assert_eq!(feed.lagging(Duration::from_secs(60)), None);
        feed.set_applied(15);
        feed.observe(15);
        assert_eq!(feed.lagging(Duration::ZERO), None);
    }
}
