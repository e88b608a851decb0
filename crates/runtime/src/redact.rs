//! Redaction of the secret values a worker's functions read, from everything that leaves an
//! invocation.
//!
//! A [`Redactor`] belongs to one worker process and remembers every value any invocation in that
//! worker read, for the worker's whole life: a function may keep a value in a module-level
//! variable and return it on a later call. Each value is recognised as raw text and in the forms
//! Python and JSON write it: `repr` (either quote, escaped controls and non-printables), `ascii`,
//! `json.dumps` with and without `ensure_ascii` (surrogate pairs for astral characters), and the
//! `repr` of its UTF-8 `bytes`. A value the code transforms (reversed, split, encoded) cannot be
//! recognised.

use std::fmt::Write as _;

use agentvault_core::SecretValue;
use serde_json::Value;
use zeroize::Zeroizing;

/// The values read in one worker, and what replaces each.
#[derive(Default)]
pub struct Redactor {
    /// (needle, replacement), longest needle first. Zeroized when the worker goes.
    needles: Vec<(Zeroizing<String>, String)>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} values, [redacted])", self.needles.len())
    }
}

impl Redactor {
    /// Remembers a value read as `name`, in every form listed in the module documentation.
    pub fn add(&mut self, name: &str, value: &SecretValue) {
        let replacement = format!("[redacted:{name}]");
        let texts: Vec<&str> = match value {
            SecretValue::Single(v) => vec![v.as_str()],
            SecretValue::Kv(pairs) => pairs.iter().map(|(_, v)| v.as_str()).collect(),
        };
        for text in texts {
            if text.is_empty() {
                continue;
            }
            for form in forms(text) {
                if !form.is_empty() && !self.needles.iter().any(|(n, _)| **n == *form) {
                    self.needles.push((form, replacement.clone()));
                }
            }
        }
        self.needles.sort_by_key(|n| std::cmp::Reverse(n.0.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// The text with every remembered value replaced.
    pub fn text(&self, s: &str) -> String {
        let mut out = s.to_owned();
        for (needle, replacement) in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), replacement);
            }
        }
        out
    }

    /// Redacts every string of a JSON document in place, object keys included.
    pub fn json(&self, v: &mut Value) {
        if self.is_empty() {
            return;
        }
        match v {
            Value::String(s) => {
                let r = self.text(s);
                if r != *s {
                    *s = r;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.json(i)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (k, mut item) in entries {
                    self.json(&mut item);
                    map.insert(self.text(&k), item);
                }
            }
            _ => {}
        }
    }
}

/// The texts that stand for `text` once Python or JSON has quoted it (without the quotes).
/// Python picks the quote of a `repr` by the whole string, which may hold more than the value,
/// so the forms with either quote escaped are both remembered.
fn forms(text: &str) -> Vec<Zeroizing<String>> {
    let mut out = vec![Zeroizing::new(text.to_owned()), json_str(text, false), json_str(text, true)];
    for quote in ['\'', '"'] {
        out.push(python_str(text, false, quote));
        out.push(python_str(text, true, quote));
        out.push(python_bytes(text.as_bytes(), quote));
    }
    out
}

/// The body of Python's `repr(text)` (`ascii(text)` when `ascii`) between `quote`s.
fn python_str(text: &str, ascii: bool, quote: char) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(text.len() + 8));
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            c if c.is_ascii() || ascii || !python_printable(c) => {
                let n = u32::from(c);
                let _ = match n {
                    0..=0xff => write!(out, "\\x{n:02x}"),
                    0x100..=0xffff => write!(out, "\\u{n:04x}"),
                    _ => write!(out, "\\U{n:08x}"),
                };
            }
            c => out.push(c),
        }
    }
    out
}

/// The body of Python's `repr(data)` for `bytes`, between `quote`s.
fn python_bytes(data: &[u8], quote: char) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(data.len() + 8));
    for &b in data {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b if char::from(b) == quote => {
                out.push('\\');
                out.push(quote);
            }
            b' '..=b'~' => out.push(char::from(b)),
            b => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

/// The body of `json.dumps(text)` (`ensure_ascii`: every non-ASCII character as `\uXXXX`,
/// astral ones as a surrogate pair), as Python and serde write it.
fn json_str(text: &str, ensure_ascii: bool) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(text.len() + 8));
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\0'..='\u{1f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            ' '..='~' => out.push(c),
            c if ensure_ascii => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Python's `str.isprintable` for one non-ASCII character: false for controls, separators
/// other than the space, format characters, private use and noncharacters. (Characters that
/// are unassigned in Python's Unicode database are taken as printable.)
fn python_printable(c: char) -> bool {
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let n = u32::from(c);
    const NOT_PRINTABLE: &[(u32, u32)] = &[
        // Format characters (Cf).
        (0x00ad, 0x00ad),
        (0x0600, 0x0605),
        (0x061c, 0x061c),
        (0x06dd, 0x06dd),
        (0x070f, 0x070f),
        (0x0890, 0x0891),
        (0x08e2, 0x08e2),
        (0x180e, 0x180e),
        (0x200b, 0x200f),
        (0x202a, 0x202e),
        (0x2060, 0x2064),
        (0x2066, 0x206f),
        (0xfeff, 0xfeff),
        (0xfff9, 0xfffb),
        (0x110bd, 0x110bd),
        (0x110cd, 0x110cd),
        (0x13430, 0x1343f),
        (0x1bca0, 0x1bca3),
        (0x1d173, 0x1d17a),
        (0xe0001, 0xe0001),
        (0xe0020, 0xe007f),
        // Private use (Co) and noncharacters.
        (0xe000, 0xf8ff),
        (0xfdd0, 0xfdef),
        (0xf0000, 0x10ffff),
    ];
    if n & 0xfffe == 0xfffe {
        return false;
    }
    !NOT_PRINTABLE.iter().any(|(lo, hi)| (*lo..=*hi).contains(&n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_a_value_is_replaced() {
        let mut r = Redactor::default();
        r.add("stripe_api_key", &SecretValue::Single("sk_live_1".into()));
        r.add(
            "oauth",
            &SecretValue::Kv(vec![("client_id".into(), "cid".into()), ("client_secret".into(), "a'b\nc".into())]),
        );
        let mut doc = serde_json::json!({
            "result": "key sk_live_1 and sk_live_12",
            "logs": [{"content": "repr: 'a\\'b\\nc'"}],
            "sk_live_1": ["cid", "a'b\nc"],
        });
        r.json(&mut doc);
        let text = doc.to_string();
        assert!(!text.contains("sk_live_1\""), "{text}");
        assert!(!text.contains("cid\""), "{text}");
        assert_eq!(doc["result"], "key [redacted:stripe_api_key] and [redacted:stripe_api_key]2");
        assert_eq!(doc["logs"][0]["content"], "repr: '[redacted:oauth]'");
        assert_eq!(doc["[redacted:stripe_api_key]"], serde_json::json!(["[redacted:oauth]", "[redacted:oauth]"]));
    }

    #[test]
    fn debug_shows_no_value() {
        let mut r = Redactor::default();
        r.add("k", &SecretValue::Single("hunter22".into()));
        assert!(!format!("{r:?}").contains("hunter22"));
    }

    /// Python itself writes each tricky value in every form a function is likely to use; the
    /// redactor must replace each output entirely, leaving only the quotes around it.
    #[test]
    fn every_form_python_writes_is_replaced_entirely() {
        let values = [
            "pa'ss\"word",
            "only'single",
            "only\"double",
            "back\\slash",
            "line\nbreak\ttab\rret",
            "abc\u{1b}def",
            "p\u{e4}ssw\u{f6}rd",
            "\u{20ac}uro-\u{e4}",
            "emoji\u{1f600}x",
            "zero\u{200b}width",
            "nbsp\u{a0}x",
            "del\u{7f}x",
            "\u{85}next",
            "\u{8}\u{c}bf",
            "soft\u{ad}hyphen",
            "private\u{e000}use",
            "mix'\"\\\n\u{1b}\u{e4}\u{20ac}\u{1f600}\u{200b}end",
        ];
        let script = r#"
import json, sys
values = json.load(sys.stdin)
out = []
for i, v in enumerate(values):
    b = v.encode()
    for kind, text in [
        ("repr", repr(v)), ("ascii", ascii(v)), ("json", json.dumps(v)),
        ("json_utf8", json.dumps(v, ensure_ascii=False)), ("bytes", repr(b)), ("str_bytes", str(b)),
        ("list", repr([v])), ("dict", repr({"k": v})), ("format", "<%r>" % (v,)), ("fstring", f"<{v!r}>"),
        ("embedded", repr("x'\"" + v)), ("ascii_list", ascii([v])), ("dumps_list", json.dumps([v])),
    ]:
        out.append([i, kind, text])
json.dump(out, sys.stdout)
"#;
        let mut child = std::process::Command::new(crate::python())
            .args(["-I", "-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 is needed for this test");
        let input = serde_json::to_vec(&values).unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), &input).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        let outputs: Vec<(usize, String, String)> = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(outputs.len(), values.len() * 13);
        let wrappers =
            ["''", "\"\"", "b''", "b\"\"", "['']", "[\"\"]", "{'k': ''}", "{'k': \"\"}", "<''>", "<\"\">", "'x\\'\"'"];
        for (i, kind, text) in outputs {
            let mut r = Redactor::default();
            r.add("v", &SecretValue::Single(values[i].into()));
            let redacted = r.text(&text);
            assert_eq!(redacted.matches("[redacted:v]").count(), 1, "{kind} of {:?}: {text} -> {redacted}", values[i]);
            let rest = redacted.replace("[redacted:v]", "");
            assert!(wrappers.contains(&rest.as_str()), "{kind} of {:?}: {text} -> {redacted}", values[i]);
        }
    }

    #[test]
    fn a_value_inside_a_longer_string_is_found_with_either_quote() {
        let mut r = Redactor::default();
        r.add("k", &SecretValue::Single("it's".into()));
        // repr("it's") is "it's", but repr("it's \"x\"") escapes the single quote.
        assert_eq!(r.text(r#"'say it\'s "x"'"#), r#"'say [redacted:k] "x"'"#);
        assert_eq!(r.text(r#""it's""#), r#""[redacted:k]""#);
    }
}
