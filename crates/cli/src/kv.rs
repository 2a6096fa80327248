//! `understudy kv put|get|del|ls|txn|watch`.

use crate::common::{print_json, CliError, ClientArgs, Output};
use clap::Subcommand;
use std::io::Read as _;
use std::path::PathBuf;
use understudy_client::{Consistency, KeyValue, TxnRequest, WatchTarget};

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
        /// Return at most this many keys.
        #[arg(long)]
        limit: Option<usize>,
        /// Accept a possibly stale listing.
        #[arg(long)]
        serializable: bool,
    },
    /// Run a transaction given as JSON (the `POST /v1/txn` body), e.g.
    /// '{"compare":[{"key":"k","target":"version","op":"==","value":0}],
    ///   "success":[{"op":"put","key":"k","value":"v"}],"failure":[]}'.
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
            emit(output, &item, || format_value(&item))
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
    loop {
        let event = tokio::select! {
            event = watch.next() => event?,
            _ = crate::common::shutdown_signal() => return Ok(()),
        };
        match output {
            Output::Json => println!(
                "{}",
                serde_json::to_string(&event)
                    .unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"))
            ),
            Output::Table => {
                let value = event.value.to_bytes().unwrap_or_default();
                println!(
                    "{:>8} {:<6} {} {}",
                    event.revision,
                    event.kind.to_uppercase(),
                    event.key,
                    String::from_utf8_lossy(&value).escape_debug()
                );
            }
        }
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

fn format_listing(items: &[KeyValue], more: bool) -> String {
    let key_width = items
        .iter()
        .map(|item| item.key.len())
        .max()
        .unwrap_or(3)
        .max(3);
    let mut text = format!(
        "{:<key_width$}  {:>8}  {:>7}  VALUE",
        "KEY", "MOD_REV", "VERSION"
    );
    for item in items {
        text.push_str(&format!(
            "\n{:<key_width$}  {:>8}  {:>7}  {}",
            item.key,
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
