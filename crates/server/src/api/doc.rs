//! What the OpenAPI document says beyond each handler's own annotation: the answers every
//! operation of a kind can give (401 to a missing credential, 404 to an unknown workspace, 400,
//! 413 and 415 to a body that cannot be read), and the schemas serde's derives cannot describe
//! (secret values, an invocation's result).

use std::borrow::Cow;

use serde_json::{Value, json};
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{OpenApi, RefOr};

/// A secret value in the API: a non-empty string (a single value) or an object of 1–100
/// string values whose keys are 1–128 characters of `A-Z a-z 0-9 _ . -` (key/value pairs).
pub struct SecretValueSchema;

impl utoipa::PartialSchema for SecretValueSchema {
    fn schema() -> RefOr<Schema> {
        let single = ObjectBuilder::new().schema_type(Type::String).min_length(Some(1));
        let key = ObjectBuilder::new().schema_type(Type::String).pattern(Some("^[A-Za-z0-9_.-]{1,128}$"));
        let pairs = ObjectBuilder::new()
            .schema_type(Type::Object)
            .min_properties(Some(1))
            .max_properties(Some(agentvault_core::validate::KV_PAIRS_MAX))
            .property_names(Some(key))
            .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::Object(
                ObjectBuilder::new().schema_type(Type::String).build(),
            )))));
        OneOfBuilder::new()
            .description(Some("A string (a single value) or an object of strings (key/value pairs)."))
            .item(single)
            .item(pairs)
            .into()
    }
}

impl utoipa::ToSchema for SecretValueSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("SecretValue")
    }
}

/// What a function returned: a string, an object or null.
pub struct InvokeResultSchema;

impl utoipa::PartialSchema for InvokeResultSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Array(vec![Type::String, Type::Object, Type::Null]))
            .description(Some("What the function returned: a string, an object or null."))
            .into()
    }
}

impl utoipa::ToSchema for InvokeResultSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("InvokeResult")
    }
}

/// An agent id.
pub const AGENT_ID: &str = "^agt_[A-Za-z0-9]{1,60}$";

/// A member's role.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum Role {
    Admin,
    Member,
}

/// Where a conversation runs (`conv.env`).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
#[allow(dead_code)]
pub enum Env {
    Sandbox,
    PreRelease,
    Live,
}

/// The type of a function parameter.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ParamType {
    String,
    Number,
    Integer,
    Boolean,
}

/// How an audited action ended.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum Outcome {
    Success,
    Denied,
    NotFound,
    Invalid,
    Failed,
}

/// The order of an audit listing.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum AuditOrder {
    Newest,
    Oldest,
}

const ERROR_REF: &str = "#/components/schemas/ErrorBody";

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": ERROR_REF}}}})
}

/// Adds `status` to an operation's responses unless it documents it already.
fn add(op: &mut Value, status: &str, description: &str) {
    if let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) {
        responses.entry(status).or_insert_with(|| error_response(description));
    }
}

/// The document as served: every operation completed with the answers it shares with all
/// operations of its kind.
pub fn complete(doc: &OpenApi) -> Value {
    let mut v = serde_json::to_value(doc).unwrap_or_default();
    let Some(paths) = v.get_mut("paths").and_then(Value::as_object_mut) else { return v };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for (_, op) in item.iter_mut() {
            let public =
                op.get("security").and_then(Value::as_array).is_some_and(|s| s.iter().all(|r| r == &json!({})));
            let has_body = op.get("requestBody").is_some();
            let has_path_params = path.contains('{');
            if !public {
                add(op, "401", "unauthenticated: no credential, or an unknown, revoked or expired one");
                add(
                    op,
                    "403",
                    "forbidden: the credential may not do this (an API key, or a role without the permission)",
                );
            }
            if path.starts_with("/api/v1/workspaces/{ws}") {
                add(op, "404", "workspace_not_found: no such workspace, or the caller is not a member of it");
            }
            if has_path_params && !public {
                add(op, "400", "invalid_input: a malformed id or name in the path");
            }
            if has_body {
                add(op, "400", "invalid_input: the body is missing, is not JSON, or a field breaks a rule");
                add(op, "413", "payload_too_large: the body is larger than the limit");
                add(op, "415", "unsupported_media_type: the body is declared in a character set other than UTF-8");
            }
        }
    }
    v
}

/// An agent id (`agt_…`).
pub struct AgentId;

impl utoipa::PartialSchema for AgentId {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new().schema_type(Type::String).pattern(Some(AGENT_ID)).into()
    }
}

impl utoipa::ToSchema for AgentId {}
