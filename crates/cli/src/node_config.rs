//! `understudy node --config FILE`: settings from a TOML file, below flags and
//! environment variables in precedence (DESIGN.md: "flags, environment
//! variables (`UNDERSTUDY_*`) and an optional TOML file, in that order").
//!
//! The file's keys are the flag names (`data-dir = "/var/lib/understudy"`,
//! `id = 1`). Clap already ranks a flag above its environment variable; the
//! file fills in only what neither gave. It does so by parsing the node's
//! arguments once more, with the file's values added as flags for exactly the
//! arguments that came from neither source, so every value goes through the
//! same clap parser whatever its source.

use crate::common::CliError;
use crate::node::NodeArgs;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args as _, FromArgMatches as _};
use std::ffi::OsString;
use std::path::Path;

/// Largest configuration file read.
const CONFIG_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// Node arguments that are not settings and so are not accepted in the file.
const NOT_SETTINGS: &[&str] = &["config", "print-config", "help"];

/// Settings whose value in the file is a TOML integer; every other is a string.
const INTEGER_SETTINGS: &[&str] = &[
    "id",
    "heartbeat-interval",
    "election-timeout",
    "snapshot-threshold-entries",
    "guest-runaway-seconds",
];

/// The `node` subcommand alone (without the global client options).
fn node_command() -> clap::Command {
    NodeArgs::augment_args(clap::Command::new("node"))
}

/// `args` completed from the file at `path`: each of the file's settings is
/// used only where `matches` (the parsed command line) has no value from a
/// flag or an environment variable. Unknown keys and values of the wrong type
/// are usage errors naming the key.
pub fn apply_config_file(path: &Path, matches: &ArgMatches) -> Result<NodeArgs, CliError> {
    let file_settings = read_config_file(path)?;
    let command = node_command();
    let mut arguments: Vec<OsString> = vec!["node".into()];
    for argument in command.get_arguments() {
        let id = argument.get_id().as_str();
        let Some(long) = argument.get_long() else {
            continue;
        };
        let flag = format!("--{long}");
        match matches.value_source(id) {
            Some(ValueSource::CommandLine) => {
                if argument.get_action().takes_values() {
                    // `--flag=value`, so a value starting with '-' stays a value.
                    for value in matches.get_raw(id).into_iter().flatten() {
                        let mut joined = OsString::from(format!("{flag}="));
                        joined.push(value);
                        arguments.push(joined);
                    }
                } else {
                    arguments.push(flag.into());
                }
            }
            // Parsing again reads the same variable again.
            Some(ValueSource::EnvVariable) => {}
            _ => {
                if let Some((_, value)) = file_settings.iter().find(|(key, _)| key == long) {
                    arguments.push(format!("{flag}={value}").into());
                }
            }
        }
    }
    let matches = command
        .try_get_matches_from(arguments)
        .map_err(|error| config_error(path, &clap_message(&error)))?;
    NodeArgs::from_arg_matches(&matches).map_err(|error| config_error(path, &clap_message(&error)))
}

/// Reads the file into `(flag name, value as text)` pairs, checking each key
/// and the type and value of each setting.
fn read_config_file(path: &Path) -> Result<Vec<(String, String)>, CliError> {
    let metadata =
        std::fs::metadata(path).map_err(|error| config_error(path, &error.to_string()))?;
    if metadata.len() > CONFIG_FILE_BYTES_MAX {
        return Err(config_error(
            path,
            &format!(
                "{} bytes, at most {CONFIG_FILE_BYTES_MAX} expected",
                metadata.len()
            ),
        ));
    }
    let text =
        std::fs::read_to_string(path).map_err(|error| config_error(path, &error.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|error: toml::de::Error| config_error(path, error.message()))?;
    // Checked alone, without environment variables, so that an error here is
    // the file's and names its key.
    let checker = node_command().mut_args(|argument| argument.env(None));
    let settings_of = |visible_only: bool| -> Vec<String> {
        checker
            .get_arguments()
            .filter(|argument| !(visible_only && argument.is_hide_set()))
            .filter_map(|argument| argument.get_long())
            .filter(|long| !NOT_SETTINGS.contains(long))
            .map(str::to_string)
            .collect()
    };
    let known = settings_of(false);
    let mut settings = Vec::new();
    for (key, value) in table {
        let bad_key = |detail: String| config_error(path, &format!("key {key:?}: {detail}"));
        if !known.contains(&key) {
            return Err(bad_key(format!(
                "unknown setting; expected one of: {}",
                settings_of(true).join(", ")
            )));
        }
        let text = match (value, INTEGER_SETTINGS.contains(&key.as_str())) {
            (toml::Value::Integer(number), true) => number.to_string(),
            (toml::Value::String(text), false) => text,
            (other, integer) => {
                return Err(bad_key(format!(
                    "expected {}, found {}",
                    if integer { "an integer" } else { "a string" },
                    other.type_str()
                )))
            }
        };
        checker
            .clone()
            .try_get_matches_from(["node".to_string(), format!("--{key}={text}")])
            .map_err(|error| bad_key(clap_message(&error)))?;
        settings.push((key, text));
    }
    Ok(settings)
}

/// The first line of a clap error, without its `error: ` prefix.
fn clap_message(error: &clap::Error) -> String {
    let text = error.render().to_string();
    let first = text.lines().next().unwrap_or("");
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

fn config_error(path: &Path, detail: &str) -> CliError {
    CliError::Usage(format!("config file {}: {detail}", path.display()))
}

/// The effective settings as a TOML file (`--print-config`): what was given
/// by flag, environment variable, file or default.
pub fn render_settings(args: &NodeArgs) -> String {
    let quoted = |text: &str| serde_json::Value::from(text).to_string();
    let mut lines = Vec::new();
    let mut integer = |key: &str, value: Option<u64>| {
        if let Some(value) = value {
            lines.push(format!("{key} = {value}"));
        }
    };
    integer("id", args.id);
    integer("heartbeat-interval", Some(args.heartbeat_interval));
    integer("election-timeout", Some(args.election_timeout));
    integer(
        "snapshot-threshold-entries",
        Some(args.snapshot_threshold_entries),
    );
    integer("guest-runaway-seconds", Some(args.guest_runaway_seconds));
    let path_text =
        |path: &Option<std::path::PathBuf>| path.as_ref().map(|path| path.display().to_string());
    for (key, value) in [
        ("data-dir", path_text(&args.data_dir)),
        ("listen-client", Some(args.listen_client.clone())),
        ("listen-peer", args.listen_peer.clone()),
        ("initial-cluster", args.initial_cluster.clone()),
        ("client-token-file", path_text(&args.client_token_file)),
        ("advertise-client", args.advertise_client.clone()),
    ] {
        if let Some(value) = value {
            lines.push(format!("{key} = {}", quoted(&value)));
        }
    }
    lines.join("\n")
}
