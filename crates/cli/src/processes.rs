//! `understudy run|ps|send|logs|kill`: process pairs from the command line.

use crate::common::{print_json, CliError, ClientArgs, Output};
use clap::Args;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;
use understudy_client::{Client, OutputStream, ProcessStatus, SpawnOptions};
use understudy_types::limits::GUEST_MODULE_BYTES_MAX;

/// Largest stdin write `send -` makes at once (one request per chunk).
pub const STDIN_CHUNK_BYTES_MAX: usize = 1024 * 1024;
/// How long one `logs --follow` poll waits on the server for new output.
const FOLLOW_WAIT: Duration = Duration::from_secs(30);

/// Arguments of `understudy run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The WebAssembly module: a WASI command (`_start`) or reactor.
    pub file: PathBuf,
    /// The process's unique name (default: the file name without `.wasm`).
    #[arg(long)]
    pub name: Option<String>,
    /// Run without a backup: no log shipping, outputs released at once, and no
    /// failover (for measuring the cost of pairing).
    #[arg(long)]
    pub unpaired: bool,
    /// An environment variable of the program, `NAME=VALUE`; repeatable.
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_env_pair)]
    pub env: Vec<(String, String)>,
    /// Arguments of the program, after `--`. The program sees the process
    /// name as `argv[0]`, then these.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

/// Arguments of `understudy send`.
#[derive(Args, Debug, Clone)]
pub struct SendArgs {
    /// The process id.
    pub pid: u64,
    /// The text to send (a newline is added), or `-` to copy this command's
    /// stdin as it is, in chunks of at most 1 MiB. May start with `-` (a
    /// negative number).
    #[arg(allow_hyphen_values = true)]
    pub text: String,
    /// Close the process's stdin after sending (its programs then see end of
    /// input).
    #[arg(long)]
    pub eof: bool,
}

/// Arguments of `understudy logs`.
#[derive(Args, Debug, Clone)]
pub struct LogsArgs {
    /// The process id.
    pub pid: u64,
    /// Keep waiting for output until the process has exited and all of its
    /// output is written.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Start at this byte offset of the output (0: the beginning).
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    /// Read stderr instead of stdout.
    #[arg(long)]
    pub stderr: bool,
}

/// `NAME=VALUE` with a non-empty name.
fn parse_env_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not NAME=VALUE")),
    }
}

/// Runs `understudy run`.
pub async fn run(client_args: ClientArgs, args: RunArgs) -> Result<(), CliError> {
    let client = client_args.client()?;
    let module = read_module(&args.file)?;
    let name = match args.name {
        Some(name) => name,
        None => default_name(&args.file)?,
    };
    let mut program_args = vec![name.clone()];
    program_args.extend(args.args);
    let options = SpawnOptions {
        name,
        args: program_args,
        env: args.env,
        unpaired: args.unpaired,
    };
    let spawned = client.spawn(module, &options).await?;
    match client_args.output {
        Output::Json => print_json(&spawned),
        Output::Table => {
            let backup = spawned
                .backup
                .map_or_else(|| "none".to_string(), |id| format!("node {id}"));
            println!(
                "pid {} primary node {} backup {backup} epoch {}",
                spawned.pid, spawned.primary, spawned.epoch
            );
            Ok(())
        }
    }
}

/// Reads a module file, refusing one over the cluster's module limit before
/// reading it.
fn read_module(path: &Path) -> Result<Vec<u8>, CliError> {
    let unreadable = |detail: String| CliError::Usage(format!("{}: {detail}", path.display()));
    let metadata = std::fs::metadata(path).map_err(|error| unreadable(error.to_string()))?;
    if metadata.len() > GUEST_MODULE_BYTES_MAX as u64 {
        return Err(unreadable(format!(
            "{} bytes, modules are at most {GUEST_MODULE_BYTES_MAX}",
            metadata.len()
        )));
    }
    std::fs::read(path).map_err(|error| unreadable(error.to_string()))
}

/// The file name without its `.wasm` extension.
fn default_name(path: &Path) -> Result<String, CliError> {
    path.file_stem()
        .and_then(|stem| stem.to_str())
        .filter(|stem| !stem.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            CliError::Usage(format!(
                "{}: cannot derive a process name; give --name",
                path.display()
            ))
        })
}

/// Runs `understudy ps`.
pub async fn ps(client_args: ClientArgs) -> Result<(), CliError> {
    let client = client_args.client()?;
    let processes = client.list_processes().await?;
    match client_args.output {
        Output::Json => print_json(&serde_json::json!({ "processes": processes })),
        Output::Table => {
            print!("{}", format_table(&processes));
            Ok(())
        }
    }
}

/// The `ps` table: a header and one line per process.
pub fn format_table(processes: &[ProcessStatus]) -> String {
    const HEADER: [&str; 13] = [
        "PID",
        "NAME",
        "STATE",
        "PRIMARY",
        "BACKUP",
        "BACKUP_STATE",
        "EPOCH",
        "LOGGED",
        "ACKED",
        "CHECKPOINT",
        "STDOUT",
        "EXIT",
        "RECOVERY",
    ];
    let optional = |value: Option<String>| value.unwrap_or_else(|| "-".to_string());
    let mut rows: Vec<Vec<String>> = vec![HEADER.iter().map(|title| title.to_string()).collect()];
    for process in processes {
        rows.push(vec![
            process.pid.to_string(),
            process.name.clone(),
            process.state.clone(),
            process.primary.to_string(),
            optional(process.backup.map(|id| id.to_string())),
            process.backup_state.clone(),
            process.epoch.to_string(),
            process.logged_lsn.to_string(),
            process.acked_lsn.to_string(),
            process.checkpoint_lsn.to_string(),
            process.stdout_offset.to_string(),
            optional(process.exit_code.map(|code| code.to_string())),
            process.recovery_mode.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..HEADER.len())
        .map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0))
        .collect();
    let mut text = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

/// Runs `understudy send`.
pub async fn send(client_args: ClientArgs, args: SendArgs) -> Result<(), CliError> {
    let client = client_args.client()?;
    let offset = if args.text == "-" {
        send_stdin(&client, args.pid, args.eof).await?
    } else {
        let line = format!("{}\n", args.text);
        client.write_stdin(args.pid, line, args.eof).await?.offset
    };
    match client_args.output {
        Output::Json => print_json(&serde_json::json!({ "offset": offset })),
        Output::Table => {
            println!("offset {offset}");
            Ok(())
        }
    }
}

/// Copies this command's stdin to the process, one write per read (at most
/// [`STDIN_CHUNK_BYTES_MAX`]), so text typed at a terminal goes as it is typed;
/// returns the last offset.
async fn send_stdin(client: &Client, pid: u64, eof: bool) -> Result<u64, CliError> {
    let mut buffer = vec![0u8; STDIN_CHUNK_BYTES_MAX];
    let mut offset = None;
    loop {
        let length;
        (buffer, length) = read_stdin_chunk(buffer).await?;
        if length == 0 {
            break;
        }
        let written = client
            .write_stdin(pid, buffer[..length].to_vec(), false)
            .await?;
        offset = Some(written.offset);
    }
    match (offset, eof) {
        (Some(offset), false) => Ok(offset),
        // An empty body with eof only closes the stream.
        (_, true) => Ok(client.write_stdin(pid, Vec::new(), true).await?.offset),
        (None, false) => Err(CliError::Usage(
            "stdin was empty: nothing sent (add --eof to close the process's stdin)".into(),
        )),
    }
}

/// One read of this command's stdin into `buffer`, on a blocking thread (a
/// terminal read may wait indefinitely); returns the buffer and the length read.
async fn read_stdin_chunk(mut buffer: Vec<u8>) -> Result<(Vec<u8>, usize), CliError> {
    let read = tokio::task::spawn_blocking(move || {
        let length = std::io::stdin().lock().read(&mut buffer)?;
        Ok::<_, std::io::Error>((buffer, length))
    });
    match read.await {
        Ok(Ok(read)) => Ok(read),
        Ok(Err(error)) => Err(CliError::Failed(format!("reading stdin: {error}"))),
        Err(error) => Err(CliError::Failed(format!("reading stdin: {error}"))),
    }
}

/// Runs `understudy logs`.
pub async fn logs(client_args: ClientArgs, args: LogsArgs) -> Result<(), CliError> {
    let client = client_args.client()?;
    let stream = if args.stderr {
        OutputStream::Stderr
    } else {
        OutputStream::Stdout
    };
    let wait = if args.follow {
        FOLLOW_WAIT
    } else {
        Duration::ZERO
    };
    let mut offset = args.from;
    let mut out = std::io::stdout().lock();
    loop {
        let chunk = tokio::select! {
            chunk = client.read_output(args.pid, stream, offset, wait) => chunk?,
            _ = crate::common::shutdown_signal() => return Ok(()),
        };
        out.write_all(&chunk.bytes)
            .and_then(|()| out.flush())
            .map_err(|error| CliError::Failed(format!("writing the output: {error}")))?;
        offset = chunk.next_offset;
        let drained = chunk.bytes.is_empty();
        // Without --follow, stop once what is released so far is written;
        // with it, only once nothing more can come.
        if drained && (!args.follow || chunk.exited) {
            return Ok(());
        }
    }
}

/// Runs `understudy kill`.
pub async fn kill(client_args: ClientArgs, pid: u64) -> Result<(), CliError> {
    let client = client_args.client()?;
    let deleted = client.delete_process(pid).await?;
    match client_args.output {
        Output::Json => print_json(&deleted),
        Output::Table => {
            println!("deleted process {}", deleted.pid);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_pairs_need_a_name_and_an_equals_sign() {
        assert_eq!(
            parse_env_pair("A=b=c"),
            Ok(("A".to_string(), "b=c".to_string()))
        );
        assert_eq!(parse_env_pair("A="), Ok(("A".to_string(), String::new())));
        assert!(parse_env_pair("=b").is_err());
        assert!(parse_env_pair("plain").is_err());
    }

    #[test]
    fn the_default_name_is_the_file_stem() {
        assert_eq!(
            default_name(Path::new("guests/running-total.wasm")).unwrap(),
            "running-total"
        );
        assert!(default_name(Path::new("/")).is_err());
    }

    #[test]
    fn the_table_aligns_columns_and_marks_missing_values() {
        let status = ProcessStatus {
            pid: 7,
            name: "adder".into(),
            state: "running".into(),
            primary: 1,
            backup: None,
            backup_state: "none".into(),
            epoch: 2,
            logged_lsn: 40,
            acked_lsn: 39,
            checkpoint_lsn: 32,
            stdout_offset: 120,
            exit_code: None,
            recovery_mode: "checkpoint".into(),
        };
        let table = format_table(&[status]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("PID  NAME   STATE    PRIMARY  BACKUP"));
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "7",
                "adder",
                "running",
                "1",
                "-",
                "none",
                "2",
                "40",
                "39",
                "32",
                "120",
                "-",
                "checkpoint"
            ]
        );
    }
}
