//! Running schemathesis against a server: its configuration (the ids of seeded objects for the
//! path parameters, the operations left out) and the command.

use std::path::Path;
use std::process::Command;

/// The pinned schemathesis release `scripts/test` installs.
pub const VERSION: &str = "4.32.5";

/// schemathesis, run as a module of the `python3` that `scripts/test` installed it for (its
/// console script is not on the PATH everywhere: pyenv, for one, needs a rehash first).
fn schemathesis() -> Command {
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "schemathesis.cli"]);
    cmd
}

/// Whether schemathesis is installed.
pub fn installed() -> bool {
    schemathesis().arg("--version").output().is_ok_and(|o| o.status.success())
}

/// What a run needs to know about the seeded workspace.
pub struct Seeded<'a> {
    pub ws: &'a str,
    pub agent: &'a str,
    pub key_id: &'a str,
    /// The token of that API key, for the agent read path.
    pub key_token: &'a str,
    pub secret: &'a str,
    pub function: &'a str,
}

/// A `schemathesis.toml` that fills the path parameters with the seeded objects' ids, accepts
/// 422 (well-formed but naming something that does not exist) from schema-valid requests, and
/// turns off the positive-data check where validity depends on more than the schema can say.
pub fn config(seeded: &Seeded<'_>, admin: &str) -> String {
    let Seeded { ws, agent, key_id, key_token, secret, function } = seeded;
    format!(
        r#"headers = {{ Authorization = "Bearer {admin}" }}

[parameters]
ws = "{ws}"
agent_id = "{agent}"
key_id = "{key_id}"

# Every check runs but those about credentials and deletions (the run keeps one credential and
# deletes nothing).
[checks.ignored_auth]
enabled = false

[checks.use_after_free]
enabled = false

[checks.ensure_resource_availability]
enabled = false

[checks.positive_data_acceptance]
expected-statuses = ["2XX", "401", "403", "404", "409", "422", "429"]

# Where validity depends on more than the schema can say, the positive-data check is off: a
# function's code must compile and its description say when to call it (drafts too); an
# invocation's arguments must be its declared parameters; `keep` names keys of the current value; the audit
# filters name known actions and times; an update needs something to change.
# Agents read with an API key.
[[operations]]
include-path-regex = "/v1/agents/"
parameters = {{ name = "{secret}" }}
headers = {{ Authorization = "Bearer {key_token}" }}

[[operations]]
include-path-regex = "/functions/"
parameters = {{ name = "{function}" }}
checks.positive_data_acceptance.enabled = false

[[operations]]
include-path-regex = "/secrets/"
include-method = "PATCH"
parameters = {{ name = "{secret}" }}
checks.positive_data_acceptance.enabled = false

[[operations]]
include-path-regex = "/secrets/"
parameters = {{ name = "{secret}" }}

[[operations]]
include-path-regex = "/functions$|/draft-runs$|/audit$|/agents/[^/]+$|/api-keys$|/members/[^/]+$|/me/tokens$"
checks.positive_data_acceptance.enabled = false
"#
    )
}

/// `schemathesis run` against the server's own document, bounded in examples and time.
pub fn run(dir: &Path, base: &str, token: &str, seeded: &Seeded<'_>) -> std::process::Output {
    let config_file = dir.join("schemathesis.toml");
    std::fs::write(&config_file, config(seeded, token)).unwrap();
    schemathesis()
        .current_dir(dir)
        .env("SCHEMATHESIS_HOOKS", "")
        .arg("--config-file")
        .arg(&config_file)
        .args(["run", &format!("{base}/api/v1/openapi.json"), "--url", base])
        // Deleting or revoking the seeded objects and the credential would end the run early;
        // signing up and signing out need a browser's state.
        .args(["--exclude-method", "DELETE"])
        .args([
            "--exclude-path-regex",
            "^/(setup|api/v1/setup|api/v1/auth/.*|api/v1/me/password|api/v1/invitations/.*)$",
        ])
        .args(["--max-examples", "20", "--max-time", "60", "--seed", "20261126", "--workers", "1"])
        .args(["--generation-database", "none", "--no-color", "--report", "junit", "--report-dir"])
        .arg(dir.join("report"))
        .output()
        .unwrap()
}
