//! Configuration: command-line flags, then `AGENTVAULT_*` environment variables, then the config
//! file (TOML), then defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8437";
pub const DEFAULT_DATA_DIR: &str = "./agentvault-data";

/// Settings shared by the commands.
#[derive(Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// A TOML config file with any of: listen, data_dir, root_key_file, log.
    #[arg(long, env = "AGENTVAULT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8437]
    #[arg(long, env = "AGENTVAULT_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Data directory: the database and, by default, the root key file [default: ./agentvault-data]
    #[arg(long, env = "AGENTVAULT_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Root keyring file (base64 keys, one a line, the first active) [default: DATA_DIR/root.key,
    /// generated on first start]. AGENTVAULT_ROOT_KEY (base64 keys, comma-separated) takes precedence.
    #[arg(long, env = "AGENTVAULT_ROOT_KEY_FILE", value_name = "FILE")]
    pub root_key_file: Option<PathBuf>,
    /// Log filter, e.g. info, debug, agentvault_server=debug [default: info]
    #[arg(long, env = "AGENTVAULT_LOG", value_name = "FILTER")]
    pub log: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    root_key_file: Option<PathBuf>,
    log: Option<String>,
}

/// Where the root keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `AGENTVAULT_ROOT_KEY`.
    Env,
    /// A key file given by the operator.
    File(PathBuf),
    /// The file in the data directory, generated on first start.
    Generated(PathBuf),
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub key_source: KeySource,
    pub log: String,
}

impl Config {
    pub fn resolve(args: ConfigArgs) -> Result<Config, String> {
        let file = match &args.config {
            Some(path) => read_file_config(path)?,
            None => FileConfig::default(),
        };
        let listen_text = args.listen.or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen_text.parse::<SocketAddr>().map_err(|_| {
            format!("listen address '{listen_text}' is not an IP:port such as 127.0.0.1:8437 or 0.0.0.0:8437")
        })?;
        let data_dir = args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let key_source = if std::env::var_os("AGENTVAULT_ROOT_KEY").is_some() {
            KeySource::Env
        } else if let Some(f) = args.root_key_file.or(file.root_key_file) {
            KeySource::File(f)
        } else {
            KeySource::Generated(data_dir.join("root.key"))
        };
        Ok(Config { listen, data_dir, key_source, log: args.log.or(file.log).unwrap_or_else(|| "info".to_owned()) })
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("agentvault.db")
    }
}

fn read_file_config(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config file {} is invalid: {e}", path.display()))
}
