//! The function runtime: checks and runs agents' Python functions with the host's `python3`.
//!
//! Each agent has its own warm worker processes ([`Runtime`]); a worker talks to the server over
//! its stdin/stdout with length-prefixed JSON frames, and `conv.utils.get_secret` is a request on
//! that channel, answered by a [`SecretSource`] that already knows the agent. Workers start in a
//! bubblewrap sandbox when it is available ([`sandbox`]), always with a cleared environment,
//! resource limits and a seccomp filter; what an invocation returns is redacted ([`redact`]).

pub mod egress;
mod pool;
#[cfg(test)]
mod pool_tests;
pub mod redact;
pub mod sandbox;

pub use egress::{EgressHandler, InvocationTag, WorkerIdentity};
pub use pool::{FunctionError, Invocation, LogEntry, Outcome, Runtime, RuntimeOptions, SecretAnswer, SecretSource};
pub use sandbox::{Limits, SandboxMode};

use std::process::Stdio;
use std::time::Duration;

use agentvault_core::model::SecretRef;
use agentvault_core::{Error, Result};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// The checker run by [`check_function`]; it parses, it never executes the code.
const CHECKER: &str = include_str!("check.py");

/// How long a check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The Python interpreter (`AGENTVAULT_PYTHON`, or `python3` on the `PATH`).
pub fn python() -> String {
    std::env::var("AGENTVAULT_PYTHON").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "python3".to_owned())
}

/// What the check learnt of a valid function.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// The secrets it names (`get_secret('<literal>')` calls), in line order.
    pub refs: Vec<SecretRef>,
    /// The declared parameters that have no default in the definition: a call must pass them.
    pub required: Vec<String>,
}

/// Checks that `code` compiles and defines `def <name>(conv, <params>...)`; returns the secrets
/// it names and the parameters a call must pass. A failure is a 422 `invalid_code` error whose
/// message names the line.
pub async fn check_function(code: &str, name: &str, params: &[String]) -> Result<Checked> {
    let declared = serde_json::Value::from(params.to_vec()).to_string();
    let mut child = Command::new(python())
        // -I: isolated (no user site, no environment variables read); -S: no site module.
        .args(["-I", "-S", "-c", CHECKER, name, &declared])
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            Error::unavailable(format!(
                "cannot start {} ({e}); agentvault needs Python 3.10 or newer to check and run functions",
                python()
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(code.as_bytes()).await.map_err(|e| Error::internal(format!("writing to python3: {e}")))?;
    }
    let output = tokio::time::timeout(CHECK_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| Error::unavailable("checking the function took too long; try again"))?
        .map_err(|e| Error::internal(format!("running python3: {e}")))?;
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).map_err(|_| {
        Error::internal(format!("the Python checker failed: {}", String::from_utf8_lossy(&output.stderr).trim()))
    })?;
    if answer["ok"].as_bool() == Some(true) {
        let required = answer["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str())
            .filter(|p| params.iter().any(|q| q == p))
            .map(str::to_owned)
            .collect();
        return Ok(Checked { refs: secret_refs(&answer["refs"]), required });
    }
    let message = answer["message"].as_str().unwrap_or("the code is not valid");
    let text = match answer["line"].as_u64() {
        Some(line) => format!("line {line}: {message}"),
        None => message.to_owned(),
    };
    Err(Error::unprocessable("invalid_code", text).with_field("code"))
}

/// The checker's `refs`: `[[name, line], ...]`; names that are not secret names are left out
/// (such a call can only fail with `InvalidInput`).
fn secret_refs(refs: &serde_json::Value) -> Vec<SecretRef> {
    let mut out: Vec<SecretRef> = refs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let secret = r.get(0)?.as_str()?;
            let line = u32::try_from(r.get(1)?.as_u64()?).ok()?;
            agentvault_core::validate::secret_name(secret).ok()?;
            Some(SecretRef { secret: secret.to_owned(), line })
        })
        .collect();
    out.truncate(SECRET_REFS_MAX);
    out
}

/// At most this many references are kept per function.
const SECRET_REFS_MAX: usize = 500;

#[cfg(test)]
mod tests {
    use super::*;

    async fn check(code: &str, params: &[&str]) -> std::result::Result<Vec<SecretRef>, String> {
        let params: Vec<String> = params.iter().map(|p| p.to_string()).collect();
        check_function(code, "create_payment", &params).await.map(|c| c.refs).map_err(|e| e.message.to_string())
    }

    #[tokio::test]
    async fn parameters_without_a_default_are_required() {
        let code = "def create_payment(conv, amount, currency='usd', *, note, memo=None):\n    return ''\n";
        let params: Vec<String> = ["amount", "currency", "note", "memo"].iter().map(|p| p.to_string()).collect();
        let checked = check_function(code, "create_payment", &params).await.unwrap();
        assert_eq!(checked.required, ["amount", "note"]);
    }

    #[tokio::test]
    async fn the_secrets_a_function_names_are_listed_with_their_lines() {
        let code = "import agentvault\n\ndef create_payment(conv, amount):\n    key = conv.utils.get_secret('stripe_api_key')\n    \
                    oauth = agentvault.get_secret(\"booking_oauth\")['client_secret']\n    name = 'x'\n    \
                    other = conv.utils.get_secret(name)\n    bad = conv.utils.get_secret('Not A Name')\n    \
                    return get_secret('stripe_api_key') + conv.utils.get_secret('stripe_api_key')\n";
        let refs = check(code, &["amount"]).await.unwrap();
        let got: Vec<(&str, u32)> = refs.iter().map(|r| (r.secret.as_str(), r.line)).collect();
        assert_eq!(got, [("stripe_api_key", 4), ("booking_oauth", 5), ("stripe_api_key", 9)]);
    }

    #[tokio::test]
    async fn valid_functions_pass() {
        let code = "import json\n\ndef create_payment(conv: Conversation, amount, currency='usd'):\n    return json.dumps({})\n";
        check(code, &["amount"]).await.unwrap();
        check(code, &["amount", "currency"]).await.unwrap();
        check("def create_payment(conv, **kwargs):\n    return ''\n", &["amount"]).await.unwrap();
    }

    #[tokio::test]
    async fn problems_are_reported_with_their_line() {
        let cases = [
            ("def create_payment(conv):\n    return (\n", "line 2"),
            ("def helper(conv):\n    pass\n", "does not define a function named create_payment"),
            ("def create_payment(amount, conv):\n    pass\n", "first parameter"),
            ("async def create_payment(conv):\n    pass\n", "not async def"),
            ("def create_payment(conv):\n    pass\n", "amount is not a parameter"),
            ("def create_payment(conv, amount, note):\n    pass\n", "note of create_payment has no default"),
        ];
        for (code, expected) in cases {
            let err = check(code, &["amount"]).await.unwrap_err();
            assert!(err.contains(expected), "{code:?}: {err}");
        }
    }

    #[tokio::test]
    async fn the_code_is_never_run() {
        let dir = std::env::temp_dir().join(format!("agentvault-check-{}", std::process::id()));
        let code =
            format!("open({:?}, 'w').write('ran')\ndef create_payment(conv):\n    pass\n", dir.display().to_string());
        check(&code, &[]).await.unwrap();
        assert!(!dir.exists(), "checking executed module-level code");
    }
}
