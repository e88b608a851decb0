//! Redaction of the secret values a function read, from everything that leaves an invocation.

use agentvault_core::SecretValue;
use serde_json::Value;
use zeroize::Zeroizing;

/// The values read during one invocation, and what replaces each.
#[derive(Default)]
pub struct Redactor {
    /// (needle, replacement), longest needle first.
    needles: Vec<(Zeroizing<String>, String)>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} values, [redacted])", self.needles.len())
    }
}

impl Redactor {
    /// Remembers a value read as `name`: the raw text of each value, and the forms it takes
    /// when Python or JSON quote it (escaped newlines, quotes and backslashes).
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
            let json = serde_json::to_string(text).unwrap_or_default();
            let forms = [
                text.to_owned(),
                text.escape_debug().to_string(),
                json.get(1..json.len().saturating_sub(1)).unwrap_or_default().to_owned(),
            ];
            for form in forms {
                if !form.is_empty() && !self.needles.iter().any(|(n, _)| **n == form) {
                    self.needles.push((Zeroizing::new(form), replacement.clone()));
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
}
