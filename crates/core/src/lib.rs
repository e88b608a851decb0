//! Domain types, validation rules, permission rules and the one error enum of agentvault.
//!
//! This crate is pure: no I/O, no async, no HTTP. Everything else depends on it.

pub mod audit;
pub mod error;
pub mod model;
pub mod validate;
pub mod value;

pub use error::{Error, ErrorKind, Result};
pub use value::{SecretKind, SecretValue};
