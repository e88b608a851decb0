//! Secret values: a single string or key/value pairs. Values are wiped from memory on drop and
//! never printed by `Debug`.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::validate::{self, KV_PAIRS_MAX, VALUE_MAX_BYTES};

/// Whether a secret holds one string or key/value pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecretKind {
    Single,
    Kv,
}

impl SecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::Single => "single",
            SecretKind::Kv => "kv",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "single" => Some(SecretKind::Single),
            "kv" => Some(SecretKind::Kv),
            _ => None,
        }
    }
}

/// A secret value. `Debug` prints `[redacted]`; the memory is zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretValue {
    Single(String),
    /// Pairs sorted by key, keys unique.
    Kv(Vec<(String, String)>),
}

impl SecretValue {
    pub fn kind(&self) -> SecretKind {
        match self {
            SecretValue::Single(_) => SecretKind::Single,
            SecretValue::Kv(_) => SecretKind::Kv,
        }
    }

    /// The key names of a key/value secret (not secret themselves).
    pub fn keys(&self) -> Option<Vec<String>> {
        match self {
            SecretValue::Single(_) => None,
            SecretValue::Kv(pairs) => Some(pairs.iter().map(|(k, _)| k.clone()).collect()),
        }
    }

    /// Checks the value rules (README "Rules") and returns the encoded value (the bytes that get sealed).
    pub fn validate_and_encode(&self) -> Result<Zeroizing<Vec<u8>>> {
        match self {
            SecretValue::Single(s) if s.is_empty() => {
                return Err(Error::invalid("value", "a single value must not be empty"));
            }
            SecretValue::Single(_) => {}
            SecretValue::Kv(pairs) => {
                if pairs.is_empty() {
                    return Err(Error::invalid("value", "key/value pairs need at least one pair"));
                }
                if pairs.len() > KV_PAIRS_MAX {
                    return Err(Error::invalid(
                        "value",
                        format!("{} key/value pairs given; the limit is {KV_PAIRS_MAX}", pairs.len()),
                    ));
                }
                for (k, _) in pairs {
                    validate::kv_key(k)?;
                }
            }
        }
        let encoded = self.encode();
        if encoded.len() > VALUE_MAX_BYTES {
            return Err(Error::too_large(
                "value_too_large",
                format!("the encoded value is {} bytes; the limit is {VALUE_MAX_BYTES} bytes", encoded.len()),
            )
            .with_field("value"));
        }
        Ok(encoded)
    }

    /// The JSON encoding of the value: a JSON string, or a JSON object of strings.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        // Serializing strings into a Vec cannot fail.
        Zeroizing::new(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Decodes what [`encode`](Self::encode) produced, for a secret of `kind`.
    pub fn decode(kind: SecretKind, bytes: &[u8]) -> Result<SecretValue> {
        let v: SecretValue =
            serde_json::from_slice(bytes).map_err(|_| Error::internal("a stored secret value does not decode"))?;
        if v.kind() != kind {
            return Err(Error::internal("a stored secret value has the wrong type"));
        }
        Ok(v)
    }
}

impl Drop for SecretValue {
    fn drop(&mut self) {
        match self {
            SecretValue::Single(s) => s.zeroize(),
            SecretValue::Kv(pairs) => {
                for (k, v) in pairs.iter_mut() {
                    k.zeroize();
                    v.zeroize();
                }
            }
        }
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretValue::Single(_) => f.write_str("SecretValue::Single([redacted])"),
            SecretValue::Kv(pairs) => write!(f, "SecretValue::Kv({} pairs, [redacted])", pairs.len()),
        }
    }
}

impl Serialize for SecretValue {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            SecretValue::Single(v) => s.serialize_str(v),
            SecretValue::Kv(pairs) => {
                let mut m = s.serialize_map(Some(pairs.len()))?;
                for (k, v) in pairs {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
    }
}

const VALUE_SHAPE: &str =
    "value must be a string (a single value) or an object whose values are strings (key/value pairs)";

/// Deserializes a value with error messages that never echo the input: a serde type error would
/// otherwise quote the offending value, which could be a credential.
impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

macro_rules! reject_scalars {
    ($msg:expr; $($name:ident: $t:ty),*) => {
        $(fn $name<E: de::Error>(self, _: $t) -> std::result::Result<Self::Value, E> {
            Err(E::custom($msg))
        })*
    };
}

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = SecretValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an object of strings")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<SecretValue, E> {
        Ok(SecretValue::Single(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<SecretValue, E> {
        Ok(SecretValue::Single(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<SecretValue, A::Error> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let PlainString(value) = map.next_value::<PlainString>()?;
            pairs.push((key, value));
            if pairs.len() > KV_PAIRS_MAX * 10 {
                return Err(de::Error::custom("too many key/value pairs"));
            }
        }
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = pairs.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(de::Error::custom(format!("key '{}' appears twice", w[0].0.escape_default())));
        }
        Ok(SecretValue::Kv(pairs))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> std::result::Result<SecretValue, A::Error> {
        Err(de::Error::custom(VALUE_SHAPE))
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<SecretValue, E> {
        Err(E::custom(VALUE_SHAPE))
    }

    reject_scalars!(VALUE_SHAPE; visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64);
}

/// A string inside a key/value secret, with an error that does not quote the input.
struct PlainString(String);

impl<'de> Deserialize<'de> for PlainString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        const MSG: &str = "every value of a key/value secret must be a string";
        impl<'de> Visitor<'de> for V {
            type Value = PlainString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<PlainString, E> {
                Ok(PlainString(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<PlainString, E> {
                Ok(PlainString(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, _: A) -> std::result::Result<PlainString, A::Error> {
                Err(de::Error::custom(MSG))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> std::result::Result<PlainString, A::Error> {
                Err(de::Error::custom(MSG))
            }
            fn visit_unit<E: de::Error>(self) -> std::result::Result<PlainString, E> {
                Err(E::custom(MSG))
            }
            reject_scalars!(MSG; visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64);
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_kv_round_trip() {
        let s: SecretValue = serde_json::from_str(r#""sk_live_abc""#).unwrap();
        assert_eq!(s.kind(), SecretKind::Single);
        let enc = s.validate_and_encode().unwrap();
        assert_eq!(SecretValue::decode(SecretKind::Single, &enc).unwrap(), s);

        let kv: SecretValue = serde_json::from_str(r#"{"client_secret":"b","client_id":"a"}"#).unwrap();
        assert_eq!(kv.keys().unwrap(), vec!["client_id", "client_secret"]);
        let enc = kv.validate_and_encode().unwrap();
        assert_eq!(SecretValue::decode(SecretKind::Kv, &enc).unwrap(), kv);
        assert!(SecretValue::decode(SecretKind::Single, &enc).is_err());
    }

    #[test]
    fn errors_never_quote_the_input() {
        for body in
            [r#"12345678"#, r#"["sk_live_leak"]"#, r#"{"k": 987654}"#, r#"{"k": ["sk_live_leak"]}"#, "true", "null"]
        {
            let err = serde_json::from_str::<SecretValue>(body).unwrap_err().to_string();
            assert!(!err.contains("sk_live_leak") && !err.contains("987654") && !err.contains("12345678"), "{err}");
        }
    }

    #[test]
    fn rules_are_enforced() {
        assert!(SecretValue::Single(String::new()).validate_and_encode().is_err());
        assert!(SecretValue::Kv(vec![]).validate_and_encode().is_err());
        let many = (0..101).map(|i| (format!("k{i:03}"), "v".to_string())).collect();
        assert!(SecretValue::Kv(many).validate_and_encode().is_err());
        assert!(SecretValue::Kv(vec![("bad key".into(), "v".into())]).validate_and_encode().is_err());
        let dup = serde_json::from_str::<SecretValue>(r#"{"a":"1","a":"2"}"#);
        assert!(dup.is_err());
        let big = SecretValue::Single("x".repeat(VALUE_MAX_BYTES));
        let err = big.validate_and_encode().unwrap_err();
        assert_eq!(err.code, "value_too_large");
        assert!(SecretValue::Single("x".repeat(VALUE_MAX_BYTES - 2)).validate_and_encode().is_ok());
    }

    #[test]
    fn debug_is_redacted() {
        let s = SecretValue::Single("sk_live_hidden".into());
        assert!(!format!("{s:?}").contains("sk_live_hidden"));
        let kv = SecretValue::Kv(vec![("id".into(), "sk_live_hidden".into())]);
        assert!(!format!("{kv:?}").contains("sk_live_hidden"));
    }
}
