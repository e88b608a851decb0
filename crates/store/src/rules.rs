//! The domain rules a store enforces inside its transactions, as pure functions: a backend reads
//! what a rule needs, asks it, and writes nothing when it refuses.

use crate::audit_segment::same;
use agentvault_core::audit::{Action, AuditEventRef, Outcome};
use agentvault_core::model::Millis;
use agentvault_core::model::{ADMIN_TOKEN_ID_PREFIX, KeyScope, PERSONAL_TOKEN_ID_PREFIX, Role};
use agentvault_core::{Error, Result};

/// A workspace never loses its last admin: refuses (409 `last_admin`) demoting (`new_role`
/// `Some(Role::Member)`) or removing (`new_role` `None`) the member whose role is `current` when
/// the workspace has `admins` admins in all.
pub fn keeps_an_admin(current: Role, new_role: Option<Role>, admins: i64) -> Result<()> {
    if current != Role::Admin || new_role == Some(Role::Admin) || admins > 1 {
        return Ok(());
    }
    let what = if new_role.is_some() { "demoted" } else { "removed" };
    Err(Error::conflict(
        "last_admin",
        format!("the last admin of a workspace cannot be {what}; make someone else an admin first"),
    ))
}

/// A change based on version `expected` of a secret applies only while the secret is still at
/// that version (409 `version_conflict` otherwise), so no update is lost.
pub fn expected_version(current: i64, expected: u32) -> Result<()> {
    if current == i64::from(expected) {
        return Ok(());
    }
    Err(Error::conflict(
        "version_conflict",
        "the secret was changed by someone else meanwhile; reload it and try again",
    ))
}

/// Every agent named in an access list or a key scope must be one of the workspace's `known`
/// agents (422 `unknown_agent` otherwise, and nothing is stored).
pub fn known_agents(requested: &[String], known: &[String]) -> Result<()> {
    match requested.iter().find(|a| !known.contains(a)) {
        None => Ok(()),
        Some(agent) => Err(Error::unprocessable(
            "unknown_agent",
            format!("agent {agent} does not exist in this workspace; nothing was changed"),
        )
        .with_field("agents")),
    }
}

/// The agents an API key is limited to (none for a key of every agent).
pub fn scope_agents(scope: &KeyScope) -> Vec<String> {
    match scope {
        KeyScope::All => Vec::new(),
        KeyScope::Agents(set) => set.iter().cloned().collect(),
    }
}

/// The id of the personal access token that the bootstrap (admin) token `admin_token_id`
/// becomes when the first admin is created: the same random part, under the token prefix.
pub fn bootstrap_token_id(admin_token_id: &str) -> String {
    let random = admin_token_id.strip_prefix(ADMIN_TOKEN_ID_PREFIX).unwrap_or(admin_token_id);
    format!("{PERSONAL_TOKEN_ID_PREFIX}{random}")
}

/// A secret's last successful read by an agent, as `secret_last_reads` keeps it.
pub struct LastRead<'a> {
    pub workspace_id: &'a str,
    pub secret_name: &'a str,
    pub agent_id: &'a str,
    pub at: Millis,
}

/// The updates a batch of audit records makes to `secret_last_reads`: for every agent's
/// successful read, the newest time per workspace, secret and agent (a batch of reads of a few
/// secrets by a few agents makes a few updates, however many reads it holds).
pub fn last_reads_in<'a>(events: impl IntoIterator<Item = AuditEventRef<'a>>) -> Vec<LastRead<'a>> {
    let mut out: Vec<LastRead<'a>> = Vec::new();
    for e in events {
        let (Action::SecretRead, Outcome::Success, Some(secret_name), Some(agent_id)) =
            (e.action, e.outcome, e.secret_name, e.agent_id)
        else {
            continue;
        };
        match out.iter_mut().find(|r| {
            same(r.secret_name, secret_name) && same(r.agent_id, agent_id) && same(r.workspace_id, e.workspace_id)
        }) {
            Some(r) => r.at = r.at.max(e.at),
            None => out.push(LastRead { workspace_id: e.workspace_id, secret_name, agent_id, at: e.at }),
        }
    }
    out
}

/// Runs of adjacent small segments to merge, as the segments' first sequence numbers
/// (`segments`: first sequence number and record count of a workspace's segments, in order). A
/// segment of at least half of `target` records is left as it is and ends a run; a run grows
/// while its records fit in `target`. Runs of one segment are left out.
pub fn compaction_runs(segments: &[(i64, i64)], target: i64) -> Vec<Vec<i64>> {
    let mut runs = Vec::new();
    let mut run: Vec<i64> = Vec::new();
    let mut total = 0;
    let mut close = |run: &mut Vec<i64>| {
        if run.len() > 1 {
            runs.push(std::mem::take(run));
        } else {
            run.clear();
        }
    };
    for &(first, records) in segments {
        if records * 2 >= target {
            close(&mut run);
            total = 0;
            continue;
        }
        if total + records > target {
            close(&mut run);
            total = 0;
        }
        run.push(first);
        total += records;
    }
    close(&mut run);
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_of_reads_makes_one_last_read_update_per_reader() {
        use agentvault_core::audit::AuditEvent;
        use agentvault_core::model::Actor;
        let read = |at: Millis, secret: &str, agent: &str, outcome: Outcome| {
            AuditEvent::new(at, "ws_1", Actor::ApiKey("key_1".into()), Action::SecretRead, outcome)
                .secret(secret)
                .agent(agent)
        };
        let batch = [
            read(3, "stripe", "agt_a", Outcome::Success),
            read(9, "stripe", "agt_a", Outcome::Success),
            read(5, "stripe", "agt_a", Outcome::Success),
            read(11, "stripe", "agt_a", Outcome::Denied),
            read(4, "stripe", "agt_b", Outcome::Success),
            read(6, "openai", "agt_a", Outcome::NotFound),
            AuditEvent::new(7, "ws_1", Actor::User("usr_1".into()), Action::SecretReveal, Outcome::Success)
                .secret("openai"),
        ];
        let got: Vec<_> = last_reads_in(batch.iter().map(AuditEvent::view))
            .iter()
            .map(|r| (r.secret_name, r.agent_id, r.at))
            .collect();
        assert_eq!(got, [("stripe", "agt_a", 9), ("stripe", "agt_b", 4)]);
    }

    #[test]
    fn the_last_admin_stays() {
        assert_eq!(keeps_an_admin(Role::Admin, None, 1).unwrap_err().code, "last_admin");
        assert_eq!(keeps_an_admin(Role::Admin, Some(Role::Member), 1).unwrap_err().code, "last_admin");
        assert!(keeps_an_admin(Role::Admin, Some(Role::Admin), 1).is_ok());
        assert!(keeps_an_admin(Role::Admin, None, 2).is_ok());
        assert!(keeps_an_admin(Role::Member, None, 1).is_ok());
        assert!(keeps_an_admin(Role::Member, None, 0).is_ok());
    }

    #[test]
    fn versions_and_agents() {
        assert!(expected_version(3, 3).is_ok());
        assert_eq!(expected_version(4, 3).unwrap_err().code, "version_conflict");
        let known = vec!["agt_a".to_owned(), "agt_b".to_owned()];
        assert!(known_agents(&["agt_b".to_owned()], &known).is_ok());
        let e = known_agents(&["agt_a".to_owned(), "agt_x".to_owned()], &known).unwrap_err();
        assert_eq!(e.code, "unknown_agent");
        assert!(e.message.contains("agt_x"));
    }

    #[test]
    fn the_bootstrap_token_keeps_its_random_part() {
        assert_eq!(bootstrap_token_id("adm_0123abcd"), "pat_0123abcd");
    }

    #[test]
    fn compaction_merges_adjacent_small_segments_up_to_the_target() {
        let segments = [(1, 10), (20, 10), (40, 60), (100, 10), (120, 45), (300, 45), (310, 20), (320, 1)];
        // 60 is at least half of 100: it stays and splits the runs; 100 + 20 > 100 starts a new run.
        assert_eq!(compaction_runs(&segments, 100), vec![vec![1, 20], vec![100, 120, 300], vec![310, 320]]);
        assert_eq!(compaction_runs(&segments[5..], 100), vec![vec![300, 310, 320]]);
        assert!(compaction_runs(&[(1, 10)], 100).is_empty());
        assert!(compaction_runs(&[], 100).is_empty());
    }
}
