//! What the commands share: client options, output format, signals, errors.

use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};
use std::time::Duration;
use understudy_client::{Client, ClientError, ClientOptions};

/// Largest token file read (a token is a line of text).
const TOKEN_FILE_BYTES_MAX: u64 = 4096;

/// Why a command failed; printed as one line on stderr.
#[derive(Debug)]
pub enum CliError {
    /// The command line or a file it names is unusable (exit code 2).
    Usage(String),
    /// The operation failed (exit code 1).
    Failed(String),
    /// The key does not exist (exit code 3, so scripts can tell).
    NotFound(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
            CliError::NotFound(_) => 3,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(text) | CliError::Failed(text) | CliError::NotFound(text) => {
                formatter.write_str(text)
            }
        }
    }
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::NotFound { detail } => CliError::NotFound(format!("not found: {detail}")),
            ClientError::InvalidConfig(detail) => CliError::Usage(detail),
            other => CliError::Failed(other.to_string()),
        }
    }
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    Table,
    /// One JSON document per result, for scripts.
    Json,
}

/// Options of every command that talks to a cluster.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Client URLs of the cluster's nodes, comma-separated; tried in turn.
    #[arg(
        long,
        global = true,
        env = "UNDERSTUDY_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// File holding the bearer token the nodes require (`--client-token-file`).
    #[arg(long, global = true, env = "UNDERSTUDY_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value = "table")]
    pub output: Output,
    /// Give up after this many milliseconds, retries included.
    #[arg(long, global = true, default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
}

impl ClientArgs {
    /// A client for these options.
    pub fn client(&self) -> Result<Client, CliError> {
        let token = match &self.token_file {
            Some(path) => Some(read_token_file(path)?),
            None => None,
        };
        let options = ClientOptions {
            deadline: Duration::from_millis(self.timeout_ms),
            ..ClientOptions::default()
        };
        Ok(Client::with_options(
            self.endpoints.clone(),
            token,
            options,
        )?)
    }
}

/// Reads a token file: its first line, trimmed, which must not be empty.
pub fn read_token_file(path: &Path) -> Result<String, CliError> {
    let unreadable =
        |detail: String| CliError::Usage(format!("token file {}: {detail}", path.display()));
    let metadata = std::fs::metadata(path).map_err(|error| unreadable(error.to_string()))?;
    if metadata.len() > TOKEN_FILE_BYTES_MAX {
        return Err(unreadable(format!(
            "{} bytes, at most {TOKEN_FILE_BYTES_MAX} expected",
            metadata.len()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|error| unreadable(error.to_string()))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(unreadable("empty".into()));
    }
    Ok(token.to_string())
}

/// Runs a future on a fresh multi-threaded runtime.
pub fn block_on<F: std::future::Future<Output = Result<(), CliError>>>(
    future: F,
) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| CliError::Failed(format!("cannot start the runtime: {error}")))?;
    runtime.block_on(future)
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            // Without a SIGTERM handler only Ctrl-C stops us; say so and wait.
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// Prints `value` as pretty JSON.
pub fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|error| CliError::Failed(format!("cannot encode the output: {error}")))?;
    println!("{text}");
    Ok(())
}
