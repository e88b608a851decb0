//! agentvault's integration tests: one binary, each test drives a real `agentvault serve`
//! process over HTTP (port 0, temporary data directory).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod agents;
mod at_rest;
mod audit;
mod authz;
mod browser;
mod cli;
mod console;
mod egress;
mod environments;
mod functions;
mod hardening;
mod invitations;
mod invoke;
mod isolation;
mod lifecycle;
mod limits;
mod migrate_store;
mod openapi;
mod ops;
mod people;
mod read_path;
mod replicas;
mod secrets;
mod tls;
mod walkthrough;
