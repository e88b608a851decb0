//! The README's walk-through, run as written: every `sh` block from "A walk through the API" to
//! the end of "Agents' functions", pasted into one bash shell against a freshly started server.
//! Only the admin token, the setup code and the address are replaced by this server's.

use std::process::Command;

use crate::support::{DataDir, setup_code};

/// The `sh` blocks of the README from heading `from` to the end of the section `through`, in order.
fn sh_blocks(readme: &str, from: &str, through: &str) -> Vec<String> {
    let start = readme.find(from).unwrap_or_else(|| panic!("README has no heading {from:?}"));
    let last = start + readme[start..].find(through).unwrap_or_else(|| panic!("README has no heading {through:?}"));
    let end = readme[last + through.len()..].find("\n## ").map_or(readme.len(), |i| last + through.len() + i);
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme[start..end].lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an sh block is not closed");
    blocks
}

#[test]
fn the_readme_walk_through_runs_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let blocks = sh_blocks(&readme, "## A walk through the API", "## Agents' functions");
    assert!(blocks.len() >= 4, "the walk-through's blocks: {blocks:?}");

    let data = DataDir::new();
    let s = data.start();
    // What the README shows of the first start is what the server prints.
    let code = setup_code(&s);
    let setup_line = s.stdout.lines().find(|l| l.contains("setup code")).unwrap();
    assert!(setup_line.contains(&format!("at {}/setup with the setup code {code}", s.base)), "{}", s.stdout);
    assert!(
        readme.contains("Create the first admin at http://127.0.0.1:8437/setup with the setup code K7QPM-2XWZA"),
        "the README's start-up message is out of date"
    );

    // One script, with a marker between the blocks so each block's output can be told apart.
    let mut script = String::from("set -euo pipefail\n");
    for (i, block) in blocks.iter().enumerate() {
        assert!(!block.contains("<key_id>") && !block.contains("cargo run"), "block {i} cannot run as pasted");
        script.push_str(&format!("echo; echo '=== block {i}'\n{block}"));
    }
    let script =
        script.replace("http://127.0.0.1:8437", &s.base).replace("ava_3xQ…", &data.token).replace("K7QPM-2XWZA", &code);
    let cwd = tempfile::tempdir().unwrap();
    let out = Command::new("bash").arg("-c").arg(&script).current_dir(cwd.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the walk-through failed ({}):\n{stdout}\nstderr:\n{stderr}", out.status);

    // Every step succeeded: the only error body is the last block's deliberate read with the
    // revoked key.
    let outputs: Vec<&str> = stdout.split("=== block ").skip(1).collect();
    assert_eq!(outputs.len(), blocks.len(), "{stdout}");
    let (last, earlier) = outputs.split_last().unwrap();
    for (i, o) in earlier.iter().enumerate() {
        assert!(!o.contains("\"error\":{"), "block {i} got an error:\n{o}");
    }
    assert_eq!(last.matches("\"error\":{").count(), 1, "{last}");
    assert!(last.contains("\"code\":\"unauthenticated\""), "the revoked key still reads: {last}");
    assert!(stdout.contains(r#"{"name":"stripe_api_key","type":"single","value":"sk_live_456"}"#), "{stdout}");
    assert!(stdout.contains(r#""value":{"client_id":"abc","client_secret":"s3cret"}"#), "{stdout}");
    assert!(stdout.contains(r#""result":"Payment of 250 created""#), "{stdout}");
    assert!(stdout.contains(r#""state":{"charged":350}"#), "{stdout}");

    // And the last steps took effect.
    let ws = s.default_ws();
    s.get(&format!("/api/v1/workspaces/{ws}/secrets/stripe_api_key")).expect_error(404, "secret_not_found");
    let keys = s.get(&format!("/api/v1/workspaces/{ws}/api-keys")).expect(200).clone();
    let keys = keys["items"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert!(!keys[0]["revoked_at"].is_null(), "{keys:?}");
}
