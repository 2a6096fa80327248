//! `understudy kv put|get|del|ls|txn|watch`.

use crate::common::{client_error_code, print_json, CliError, ClientArgs, Output};
use clap::Subcommand;
use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::PathBuf;
use understudy_client::{Consistency, KeyValue, TxnRequest, WatchEvent, WatchTarget};
use understudy_types::limits::KV_RANGE_LIMIT_MAX;

/// Largest value or transaction read from stdin or a file.
const INPUT_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// The key-value commands.
#[derive(Subcommand, Debug)]
pub enum KvCommand {
    /// Write a value; prints the revision of the write.
    Put {
        /// The key.
        key: String,
        /// The value; `-` reads it from stdin.
        value: String,
    },
    /// Read a key (linearizable unless --serializable). Exit code 3 if missing.
    ///
    /// Prints the value and a newline. A value that is not UTF-8 is written as
    /// its raw bytes (no newline added) when stdout is not a terminal, so
    /// `understudy kv get k > file` reproduces it; on a terminal a note with
    /// its size is printed instead (use --output json for base64).
    Get {
        /// The key.
        key: String,
        /// Accept a possibly stale value from the answering node.
        #[arg(long)]
        serializable: bool,
    },
    /// Delete a key.
    Del {
        /// The key.
        key: String,
    },
    /// List keys starting with a prefix (all keys if none).
    Ls {
        /// The prefix.
        #[arg(default_value = "")]
        prefix: String,
        /// Return at most this many keys (1 to 10000). A key that is not
        /// UTF-8 is shown as `base64:<its bytes in base64>`.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=KV_RANGE_LIMIT_MAX as u64))]
        limit: Option<u64>,
        /// Accept a possibly stale listing.
        #[arg(long)]
        serializable: bool,
    },
    /// Run a transaction given as JSON (the `POST /v1/txn` body), e.g.
    /// '{"compare":[{"key":"k","target":"version","op":"==","value":0}],
    ///   "success":[{"op":"put","key":"k","value":"v"}],"failure":[]}'.
    /// Keys and values may be given as `key_base64` / `value_base64` instead.
    Txn {
        /// The transaction JSON; `-` reads it from stdin.
        json: Option<String>,
        /// Read the transaction JSON from this file.
        #[arg(long, conflicts_with = "json")]
        file: Option<PathBuf>,
    },
    /// Print changes to a key (or a prefix) as they happen; resumes after
    /// disconnects without losing or repeating a change.
    Watch {
        /// The key, or the prefix with --prefix.
        key: String,
        /// Watch every key starting with KEY.
        #[arg(long)]
        prefix: bool,
        /// Start with changes at this revision (default: new changes only).
        #[arg(long, default_value_t = 0)]
        from_revision: u64,
    },
}

/// Runs one key-value command.
pub async fn run(args: ClientArgs, command: KvCommand) -> Result<(), CliError> {
    let client = args.client()?;
    let output = args.output;
    match command {
        KvCommand::Put { key, value } => {
            let value = if value == "-" {
                read_input(None)?
            } else {
                value.into_bytes()
            };
            let answer = client.put(&key, value).await?;
            emit(output, &answer, || {
                format!("OK revision {}", answer.revision)
            })
        }
        KvCommand::Get { key, serializable } => {
            let consistency = consistency(serializable);
            let item = client.get(&key, consistency).await?;
            match output {
                Output::Json => print_json(&item),
                Output::Table => print_value(&item),
            }
        }
        KvCommand::Del { key } => {
            let answer = client.delete(&key).await?;
            emit(output, &answer, || {
                format!("deleted {} revision {}", answer.deleted, answer.revision)
            })
        }
        KvCommand::Ls {
            prefix,
            limit,
            serializable,
        } => {
            // At most KV_RANGE_LIMIT_MAX (checked by clap), so it fits.
            let limit = limit.map(|limit| limit as usize);
            let answer = client
                .range(&prefix, limit, consistency(serializable))
                .await?;
            emit(output, &answer, || {
                format_listing(&answer.items, answer.more)
            })
        }
        KvCommand::Txn { json, file } => txn(&client, output, json, file).await,
        KvCommand::Watch {
            key,
            prefix,
            from_revision,
        } => {
            let target = if prefix {
                WatchTarget::Prefix(key)
            } else {
                WatchTarget::Key(key)
            };
            watch(&client, output, target, from_revision).await
        }
    }
}

async fn txn(
    client: &understudy_client::Client,
    output: Output,
    json: Option<String>,
    file: Option<PathBuf>,
) -> Result<(), CliError> {
    let text = match (json, file) {
        (Some(json), None) if json != "-" => json.into_bytes(),
        (None, Some(file)) => read_input(Some(file))?,
        _ => read_input(None)?,
    };
    let request: TxnRequest = serde_json::from_slice(&text)
        .map_err(|error| CliError::Usage(format!("transaction JSON: {error}")))?;
    request
        .validate()
        .map_err(|error| CliError::Usage(format!("transaction JSON: {error}")))?;
    let answer = client.txn(&request).await?;
    emit(output, &answer, || {
        let mut text = format!(
            "{} revision {}",
            if answer.succeeded {
                "SUCCEEDED"
            } else {
                "FAILED"
            },
            answer.revision
        );
        for result in &answer.results {
            text.push_str(&format!("\n{result}"));
        }
        text
    })
}

async fn watch(
    client: &understudy_client::Client,
    output: Output,
    target: WatchTarget,
    from_revision: u64,
) -> Result<(), CliError> {
    let mut watch = client.watch(target, from_revision)?;
    watch.on_warning(move |warning| match output {
        Output::Json => eprintln!(
            "{{\"warning\":\"{}\",\"detail\":{}}}",
            client_error_code(warning),
            serde_json::Value::from(warning.to_string())
        ),
        Output::Table => eprintln!("understudy: warning: {warning}"),
    });
    loop {
        let event = tokio::select! {
            event = watch.next() => event?,
            _ = crate::common::shutdown_signal() => return Ok(()),
        };
        match output {
            Output::Json => println!(
                "{}",
                serde_json::to_string(&event).map_err(|error| CliError::Failed(format!(
                    "cannot encode an event: {error}"
                )))?
            ),
            Output::Table => println!("{}", format_event(&event)),
        }
    }
}

fn format_event(event: &WatchEvent) -> String {
    let key = display_key(&event.key, event.key_base64.as_deref());
    let value = event.value.to_bytes().unwrap_or_default();
    format!(
        "{:>8} {:<6} {} {}",
        event.revision,
        event.kind.to_uppercase(),
        key,
        String::from_utf8_lossy(&value).escape_debug()
    )
}

/// A key for a table: as is when UTF-8, else `base64:<base64>`.
fn display_key(key: &str, key_base64: Option<&str>) -> String {
    match key_base64 {
        Some(encoded) => format!("base64:{encoded}"),
        None => key.to_string(),
    }
}

fn consistency(serializable: bool) -> Consistency {
    if serializable {
        Consistency::Serializable
    } else {
        Consistency::Linearizable
    }
}

/// Prints JSON or the human form.
fn emit(
    output: Output,
    value: &impl serde::Serialize,
    human: impl FnOnce() -> String,
) -> Result<(), CliError> {
    match output {
        Output::Json => print_json(value),
        Output::Table => {
            println!("{}", human());
            Ok(())
        }
    }
}

fn format_value(item: &KeyValue) -> String {
    match item.value.to_bytes() {
        Ok(bytes) => match std::str::from_utf8(&bytes) {
            Ok(text) => text.to_string(),
            Err(_) => format!("(binary, {} bytes; use --output json)", bytes.len()),
        },
        Err(error) => format!("(undecodable value: {error})"),
    }
}

/// Prints a value for `kv get` (see its help): text and a newline, raw bytes
/// to a pipe or file, or a note on a terminal.
fn print_value(item: &KeyValue) -> Result<(), CliError> {
    let bytes = item
        .value
        .to_bytes()
        .map_err(|error| CliError::Failed(format!("undecodable value: {error}")))?;
    let mut stdout = std::io::stdout().lock();
    let written = match std::str::from_utf8(&bytes) {
        Ok(text) => writeln!(stdout, "{text}"),
        Err(_) if stdout.is_terminal() => writeln!(
            stdout,
            "(binary, {} bytes; redirect stdout for the raw bytes, or use --output json)",
            bytes.len()
        ),
        Err(_) => stdout.write_all(&bytes),
    };
    written
        .and_then(|()| stdout.flush())
        .map_err(|error| CliError::Failed(format!("cannot write the value: {error}")))
}

fn format_listing(items: &[KeyValue], more: bool) -> String {
    let keys: Vec<String> = items
        .iter()
        .map(|item| display_key(&item.key, item.key_base64.as_deref()))
        .collect();
    let key_width = keys
        .iter()
        .map(|key| key.chars().count())
        .max()
        .unwrap_or(3)
        .max(3);
    let mut text = format!(
        "{:<key_width$}  {:>8}  {:>7}  VALUE",
        "KEY", "MOD_REV", "VERSION"
    );
    for (item, key) in items.iter().zip(&keys) {
        text.push_str(&format!(
            "\n{:<key_width$}  {:>8}  {:>7}  {}",
            key,
            item.mod_revision,
            item.version,
            format_value(item).escape_debug()
        ));
    }
    if more {
        text.push_str("\n(more keys match; raise --limit)");
    }
    text
}

/// Reads all of stdin, or a file, up to [`INPUT_BYTES_MAX`].
fn read_input(file: Option<PathBuf>) -> Result<Vec<u8>, CliError> {
    let mut bytes = Vec::new();
    let result = match &file {
        Some(path) => std::fs::File::open(path)
            .and_then(|file| file.take(INPUT_BYTES_MAX + 1).read_to_end(&mut bytes)),
        None => std::io::stdin()
            .take(INPUT_BYTES_MAX + 1)
            .read_to_end(&mut bytes),
    };
    let source = file.map_or("stdin".to_string(), |path| path.display().to_string());
    result.map_err(|error| CliError::Usage(format!("cannot read {source}: {error}")))?;
    if bytes.len() as u64 > INPUT_BYTES_MAX {
        return Err(CliError::Usage(format!(
            "{source} holds more than {INPUT_BYTES_MAX} bytes"
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_shows_binary_keys_as_marked_base64() {
        let items: Vec<KeyValue> = serde_json::from_value(serde_json::json!([
            {"key":"plain","value":"v","create_revision":1,"mod_revision":1,"version":1},
            {"key_base64":"/wA=","value_base64":"/w==","create_revision":2,"mod_revision":3,"version":2}
        ]))
        .unwrap();
        let table = format_listing(&items, true);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].starts_with("plain "), "{table}");
        assert!(lines[2].starts_with("base64:/wA= "), "{table}");
        assert!(lines[2].contains("(binary, 1 bytes"), "{table}");
        assert!(lines[3].contains("raise --limit"), "{table}");
    }

    #[test]
    fn watch_lines_mark_binary_keys() {
        let event: WatchEvent =
            serde_json::from_str(r#"{"type":"delete","key_base64":"/wA=","revision":7}"#).unwrap();
        assert_eq!(format_event(&event), "       7 DELETE base64:/wA= ");
    }
}
