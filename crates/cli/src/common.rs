//! What the commands share: client options, output format, signals, errors.

use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};
use std::time::Duration;
use understudy_client::{Client, ClientError, ClientOptions};

/// Largest token file read (a token is a line of text).
const TOKEN_FILE_BYTES_MAX: u64 = 4096;

/// Why a command failed; printed as one line on stderr (one JSON line with
/// `--output json`).
#[derive(Debug)]
pub enum CliError {
    /// The command line or a file it names is unusable (exit code 2).
    Usage(String),
    /// The operation failed (exit code 1).
    Failed(String),
    /// The command line did not parse (exit code 2); clap's own message.
    Clap(clap::Error),
    /// The client library failed (exit code 3 for a key or member that does
    /// not exist, so scripts can tell; 2 for unusable client options; 1 otherwise).
    Client(ClientError),
}

impl CliError {
    /// The process exit code for this error: 0 is success, 1 a failed
    /// operation, 2 a usage error, 3 not found.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) | CliError::Clap(_) => 2,
            CliError::Failed(_) => 1,
            CliError::Client(ClientError::NotFound { .. }) => 3,
            CliError::Client(ClientError::InvalidConfig(_)) => 2,
            CliError::Client(_) => 1,
        }
    }

    /// The machine-readable code: the server's error code where there is one
    /// (`unavailable`, `timeout`, `not_found`, ...), else `usage` or `failed`.
    pub fn code(&self) -> &'static str {
        match self {
            CliError::Usage(_) | CliError::Clap(_) => "usage",
            CliError::Failed(_) => "failed",
            CliError::Client(error) => client_error_code(error),
        }
    }

    /// `{"error":"<code>","detail":"…"}`, plus `"outcome":"unknown"` when a
    /// write may or may not have been applied.
    pub fn to_json(&self) -> String {
        let detail = match self {
            // Only the first line: the rest is usage and a hint for people.
            CliError::Clap(error) => {
                let text = error.render().to_string();
                let first = text.lines().next().unwrap_or("").to_string();
                first.strip_prefix("error: ").unwrap_or(&first).to_string()
            }
            other => other.to_string(),
        };
        let outcome_unknown = matches!(
            self,
            CliError::Client(ClientError::Timeout {
                outcome_unknown: true,
                ..
            })
        );
        let line = ErrorLine {
            error: self.code(),
            detail,
            outcome: outcome_unknown.then_some("unknown"),
        };
        serde_json::to_string(&line)
            .unwrap_or_else(|_| format!("{{\"error\":\"{}\"}}", self.code()))
    }
}

/// An error as one JSON line, fields in the API's order.
#[derive(serde::Serialize)]
pub struct ErrorLine<'a> {
    /// The code.
    pub error: &'a str,
    /// For people.
    pub detail: String,
    /// `unknown` when a write may or may not have been applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'a str>,
}

/// The code of a client error, as in the server's `{"error":"<code>"}`.
pub fn client_error_code(error: &ClientError) -> &'static str {
    match error {
        ClientError::Unavailable { .. } => "unavailable",
        ClientError::Timeout { .. } => "timeout",
        ClientError::NotFound { .. } => "not_found",
        ClientError::SessionExpired => "session_expired",
        ClientError::BadRequest(_) => "bad_request",
        ClientError::Conflict(_) => "conflict",
        ClientError::NameInUse { .. } => "name_in_use",
        ClientError::TooLarge(_) => "too_large",
        ClientError::Unauthorized => "unauthorized",
        ClientError::Server { .. } => "unexpected_answer",
        ClientError::Transport(_) => "transport",
        ClientError::InvalidConfig(_) => "usage",
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(text) | CliError::Failed(text) => formatter.write_str(text),
            CliError::Clap(error) => write!(formatter, "{error}"),
            CliError::Client(error) => write!(formatter, "{error}"),
        }
    }
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> Self {
        CliError::Client(error)
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

/// Options of every command that talks to a cluster. Global: accepted before
/// the subcommand (`understudy --output json kv get k`) or after it.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Client options")]
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
    /// Output format; with json, errors are JSON lines on stderr too.
    #[arg(long, global = true, value_enum, default_value = "table")]
    pub output: Output,
    /// Give up after this many milliseconds, retries included (for `kv watch`:
    /// if it has not connected by then).
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
