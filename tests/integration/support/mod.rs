//! Everything the integration tests share: the server harness ([`server`]), fixtures that set up
//! data directories, the first admin and agents' functions ([`fixtures`]), and the WebDriver kit
//! for the web console ([`browser`]). Test modules import from here only.

pub mod backend;
pub mod browser;
pub mod fixtures;
pub mod schemathesis;
pub mod server;

pub use fixtures::{
    ADMIN_EMAIL, ADMIN_PASSWORD, DataDir, contains_bytes, define, define_with, files_under, invoke, setup_code,
    with_admin,
};
pub use server::{Options, Resp, Server, command};
