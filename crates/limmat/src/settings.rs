//! Settings defined once, read from three sources: flags, `LIMMAT_…` environment variables and
//! a TOML file, merged in that order of precedence over the defaults.
//!
//! A command lists its settings in one [`settings!`] table. Each entry is a setting's whole
//! definition: its doc comment (the `--help` text, with its default), its clap attributes,
//! its snake_case name (the file key; the flag is the name in kebab-case, the variable the
//! name in upper case after `LIMMAT_`), its type, its parser and where it goes in the
//! command's configuration. From that table the macro writes the settings struct that clap
//! reads for flags and that [`from_env`] and [`from_table`] fill for the other sources, the
//! merge, the list of names and the step that applies the merged settings to the
//! configuration. Every source goes through the setting's one parser, so `--max-head 1KiB`,
//! `LIMMAT_MAX_HEAD=1KiB` and `max_head = "1KiB"` mean the same, and errors name the flag,
//! variable or file key as the user wrote it.
//!
//! # Adding a setting
//!
//! Add one entry to the command's table (`relay/settings.rs`):
//!
//! ```text
//! /// What it does, for --help. [default: 5s]
//! #[arg(value_name = "DURATION")]
//! my_timeout: Duration = one(units::duration) => |c, v| c.my_timeout = v;
//! ```
//!
//! `one(parser)` takes a single value, `many(parser)` a list (a TOML array, a comma-separated
//! variable, a repeatable flag). The closure after `=>` stores the merged value in the
//! configuration, whose default applies when no source gives it; without `=>` the command
//! applies it by hand (settings that combine, such as certificate pairs). Keys of a TOML table
//! `[section]` are the settings `section_key` (`[egress] default` is `egress_default`, the
//! variable `LIMMAT_EGRESS_DEFAULT`); a command may map a table's keys onto settings of other
//! names in its file step, as the relay does for `[cluster]` (`node_id` is `--node-id`).
//! Arrays of tables (`[[cert]]`) are the command's own, read by its file step.

use anyhow::{Context, anyhow};
use std::path::Path;
use std::str::FromStr;

/// The prefix of every environment variable: `LIMMAT_HOLD_TIME` sets `hold_time`.
pub const ENV_PREFIX: &str = "LIMMAT_";

/// A value before its setting's parser sees it.
pub enum Raw {
    /// An environment variable: lists are comma-separated.
    Env(String),
    /// A TOML string, number or boolean.
    Scalar(String),
    /// A TOML array of those.
    List(Vec<String>),
}

/// One source's settings, as the [`settings!`] macro writes them.
pub trait Layer: Default {
    /// The snake_case name of every setting that flags, variables and the file share.
    const NAMES: &'static [&'static str];
    /// Stores `raw` in the setting `name`; `Ok(false)` if there is no such setting.
    fn set(&mut self, name: &str, raw: Raw) -> Result<bool, String>;
    /// Each setting from `self` if given, else from `lower`.
    fn or(self, lower: Self) -> Self;
}

/// Parses a single value; a TOML array is refused.
pub fn one<T>(raw: Raw, parse: impl Fn(&str) -> Result<T, String>) -> Result<T, String> {
    match raw {
        Raw::Env(s) | Raw::Scalar(s) => parse(s.trim()),
        Raw::List(_) => Err("expected a single value, not a list".into()),
    }
}

/// Parses a list: a TOML array, a single TOML value, or a comma-separated variable.
pub fn many<T>(raw: Raw, parse: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    let items = match raw {
        Raw::Env(s) => split_env(&s)?,
        Raw::Scalar(s) => vec![s],
        Raw::List(items) => items,
    };
    items.iter().map(|s| parse(s.trim())).collect()
}

/// The items of a comma-separated variable; none at all is refused, since `,` would otherwise
/// silently replace the file's list with nothing.
pub fn split_env(s: &str) -> Result<Vec<String>, String> {
    let items: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if items.is_empty() {
        return Err("expected a comma-separated list with at least one value".into());
    }
    Ok(items)
}

/// Any type with a `FromStr` whose error tells the problem.
pub fn from_str<T: FromStr<Err: std::fmt::Display>>(s: &str) -> Result<T, String> {
    s.parse().map_err(|e: T::Err| e.to_string())
}

/// An address such as `127.0.0.1:9090`, or a name and a port such as `localhost:9090`,
/// resolved once, here: its first IPv4 address, else its first address.
pub fn socket_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    let expected = || format!("{s:?} is not an address such as 127.0.0.1:9090 or localhost:9090");
    if !s.contains(':') {
        return Err(expected());
    }
    let resolved: Vec<_> = s
        .to_socket_addrs()
        .map_err(|e| format!("{}: {e}", expected()))?
        .collect();
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| resolved.first())
        .copied()
        .ok_or_else(|| format!("{s:?}: the name resolves to no address"))
}

/// The `LIMMAT_…` variables of the environment that nothing reads, each with the known
/// variable it is closest to: a misspelt `LIMMAT_HOLDTIME` would otherwise be ignored
/// without a word.
pub fn unknown_env(known: &[String]) -> Vec<(String, Option<String>)> {
    let known_refs: Vec<&str> = known.iter().map(String::as_str).collect();
    std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| name.starts_with(ENV_PREFIX) && !known.contains(name))
        .map(|name| {
            let near = suggest(&name, known_refs.iter()).map(str::to_owned);
            (name, near)
        })
        .collect()
}

/// Any text.
pub fn text(s: &str) -> Result<String, String> {
    Ok(s.to_owned())
}

/// A file name.
pub fn path(s: &str) -> Result<std::path::PathBuf, String> {
    match s {
        "" => Err("expected a file name".into()),
        s => Ok(std::path::PathBuf::from(s)),
    }
}

/// A count such as `1024`; `0` usually turns the limit off.
pub fn count(s: &str) -> Result<usize, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a whole number such as 0 or 1024"))
}

/// `true` or `false`.
pub fn boolean(s: &str) -> Result<bool, String> {
    match s {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{s:?} is not true or false")),
    }
}

/// The `LIMMAT_…` variable of a setting.
pub fn env_name(setting: &str) -> String {
    format!("{ENV_PREFIX}{}", setting.to_ascii_uppercase())
}

/// Reads the `LIMMAT_…` variable of every setting. An empty variable counts as unset, as
/// container tools often define them empty; other `LIMMAT_` variables belong to other commands
/// (`LIMMAT_SECRET_KEY`) and are left alone.
pub fn from_env<L: Layer>() -> anyhow::Result<L> {
    let mut layer = L::default();
    for name in L::NAMES {
        let var = env_name(name);
        let value = match std::env::var(&var) {
            Ok(value) if value.trim().is_empty() => continue,
            Ok(value) => value,
            Err(std::env::VarError::NotPresent) => continue,
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(anyhow!("{var}: the value is not valid UTF-8"));
            }
        };
        layer
            .set(name, Raw::Env(value.clone()))
            .map_err(|problem| anyhow!("{var}={value:?}: {problem}"))?;
    }
    Ok(layer)
}

/// One key of a configuration file, with the tables above it folded into its name.
pub struct Entry {
    /// The setting's name: `egress_default` for `[egress] default`.
    pub name: String,
    /// The key as written, for messages: `egress.default`.
    pub key: String,
    /// Its value.
    pub value: toml::Value,
}

impl Entry {
    /// The error for this key: the key, its value and the problem.
    pub fn bad(&self, problem: impl std::fmt::Display) -> String {
        format!("{} = {}: {problem}", self.key, self.value)
    }

    /// The value as an array of tables of the command's own shape (`[[cert]]`).
    pub fn tables<T: serde::de::DeserializeOwned>(&self, expected: &str) -> Result<Vec<T>, String> {
        self.value.clone().try_into::<Vec<T>>().map_err(|e| {
            self.bad(format_args!(
                "expected {expected} ({})",
                e.message().trim_end()
            ))
        })
    }

    /// The value as the text a flag would carry; tables and dates are not settings.
    pub fn raw(&self) -> Result<Raw, String> {
        fn scalar(value: &toml::Value) -> Result<String, String> {
            match value {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(n) => Ok(n.to_string()),
                toml::Value::Float(f) => Ok(f.to_string()),
                toml::Value::Boolean(b) => Ok(b.to_string()),
                toml::Value::Datetime(_) | toml::Value::Array(_) | toml::Value::Table(_) => {
                    Err("expected a string, number or boolean".into())
                }
            }
        }
        match &self.value {
            toml::Value::Array(items) => items
                .iter()
                .map(scalar)
                .collect::<Result<_, _>>()
                .map(Raw::List),
            other => scalar(other).map(Raw::Scalar),
        }
        .map_err(|problem| self.bad(problem))
    }
}

/// Reads a configuration file into its keys, in the file's order of tables.
pub fn read_file(file: &Path) -> anyhow::Result<Vec<Entry>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the configuration file {}", file.display()))?;
    entries(&text).map_err(|e| anyhow!("{}: {e}", file.display()))
}

/// The keys of a TOML text; a table `[section]` contributes `section_key` for each of its keys.
pub fn entries(source: &str) -> Result<Vec<Entry>, String> {
    let table: toml::Table = toml::from_str(source).map_err(|e| e.to_string())?;
    let mut entries = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for (key, value) in table {
        let nested = match value {
            toml::Value::Table(section) => section
                .into_iter()
                .map(|(inner, value)| Entry {
                    name: format!("{key}_{inner}"),
                    key: format!("{key}.{inner}"),
                    value,
                })
                .collect(),
            value => vec![Entry {
                name: key.clone(),
                key,
                value,
            }],
        };
        for entry in nested {
            if let Some(first) = seen.insert(entry.name.clone(), entry.key.clone()) {
                return Err(format!(
                    "{first} and {} are the same setting: give one of the two",
                    entry.key
                ));
            }
            entries.push(entry);
        }
    }
    Ok(entries)
}

/// Stores a file key in `layer`; an unknown key is refused with the nearest known name among
/// `L::NAMES` and `also` (the command's file-only keys).
pub fn set_entry<L: Layer>(layer: &mut L, entry: &Entry, also: &[&str]) -> Result<(), String> {
    let known = layer
        .set(&entry.name, entry.raw()?)
        .map_err(|problem| entry.bad(problem))?;
    if known {
        return Ok(());
    }
    let name = &entry.key;
    Err(match suggest(name, L::NAMES.iter().chain(also)) {
        Some(near) => format!("unknown key {name:?} (did you mean {near}?)"),
        None => format!("unknown key {name:?}"),
    })
}

/// The known key closest to an unknown one: the flag spelling, or one or two typos away.
pub fn suggest<'a>(unknown: &str, names: impl Iterator<Item = &'a &'a str>) -> Option<&'a str> {
    let unknown = unknown.trim_start_matches("--").replace('-', "_");
    names
        .map(|n| (distance(&unknown, n), *n))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, n)| n)
}

/// Levenshtein distance, for short key names.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Writes a command's settings struct from its table; see the module doc.
///
/// Each entry is `doc, #[arg(…)] attributes, name: Type = shape(parser) [=> apply];` where
/// `shape` is [`one`] or [`many`] (or a function of the same form) and `apply` a closure
/// `|config, value|` that stores the merged value in `$Config`.
macro_rules! settings {
    (
        $(#[$meta:meta])*
        pub struct $Settings:ident => $Config:ty {
            $(
                $(#[$attr:meta])*
                $name:ident: $ty:ty = $shape:ident($parser:expr) $(=> $apply:expr)?;
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(clap::Args, Debug, Default)]
        pub struct $Settings {
            $(
                // The entry's own attributes come last, so `#[arg(long = "…")]` renames the
                // flag.
                #[arg(long, value_parser = $parser)]
                $(#[$attr])*
                pub $name: Option<$ty>,
            )*
        }

        impl $crate::settings::Layer for $Settings {
            const NAMES: &'static [&'static str] = &[$(stringify!($name)),*];

            fn set(&mut self, name: &str, raw: $crate::settings::Raw) -> Result<bool, String> {
                match name {
                    $(stringify!($name) => self.$name = Some($shape(raw, $parser)?),)*
                    _ => return Ok(false),
                }
                Ok(true)
            }

            fn or(self, lower: Self) -> Self {
                Self { $($name: self.$name.or(lower.$name),)* }
            }
        }

        impl $Settings {
            /// Stores every setting given in `config`, leaving its defaults elsewhere.
            #[allow(unused_variables)]
            fn apply(self, config: &mut $Config) {
                $($(
                    if let Some(value) = self.$name {
                        let apply: fn(&mut $Config, $ty) = $apply;
                        apply(config, value);
                    }
                )?)*
            }
        }
    };
}

pub(crate) use settings;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_fold_into_names() {
        let e = entries("a = 1\n[egress]\ndefault = \"deny\"\n[[cert]]\ncert = \"c\"\n").unwrap();
        let names: Vec<(&str, &str)> = e
            .iter()
            .map(|e| (e.name.as_str(), e.key.as_str()))
            .collect();
        assert!(
            names.contains(&("egress_default", "egress.default")),
            "{names:?}"
        );
        assert!(names.contains(&("cert", "cert")), "{names:?}");
        let err = entries("egress_default = \"allow\"\n[egress]\ndefault = \"deny\"\n")
            .err()
            .unwrap();
        assert!(
            err.contains("egress_default") && err.contains("egress.default"),
            "{err}"
        );
    }

    #[test]
    fn env_lists_refuse_nothing() {
        assert!(split_env(" , ").is_err());
        assert_eq!(split_env("a, b,").unwrap(), ["a", "b"]);
    }

    settings! {
        /// A table as a command writes one.
        pub struct Example => Vec<String> {
            /// A setting of the `[cluster]` table with a flag of its own name.
            #[arg(long = "node-id", value_name = "ID")]
            cluster_node_id: String = one(text) => |c, v| c.push(v);
            /// A repeatable one.
            #[arg(value_name = "ADDR")]
            cluster_seed: Vec<String> = many(text) => |c, v| c.extend(v);
        }
    }

    #[test]
    fn a_table_gives_flags_names_and_the_merge() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            settings: Example,
        }
        let cli = Cli::try_parse_from([
            "x",
            "--node-id",
            "n1",
            "--cluster-seed",
            "a",
            "--cluster-seed",
            "b",
        ])
        .unwrap();
        assert_eq!(cli.settings.cluster_node_id.as_deref(), Some("n1"));
        assert!(Cli::try_parse_from(["x", "--cluster-node-id", "n1"]).is_err());
        let mut file = Example::default();
        for entry in entries("[cluster]\nnode_id = \"f\"\nseed = [\"c\"]\n").unwrap() {
            set_entry(&mut file, &entry, &[]).unwrap();
        }
        let mut config = Vec::new();
        cli.settings.or(file).apply(&mut config);
        assert_eq!(config, ["n1", "a", "b"]);
        assert_eq!(Example::NAMES, ["cluster_node_id", "cluster_seed"]);
        let e = set_entry(
            &mut Example::default(),
            &entries("[cluster]\nnode_ip = 1").unwrap()[0],
            &[],
        )
        .unwrap_err();
        assert!(
            e.contains("cluster.node_ip") && e.contains("cluster_node_id"),
            "{e}"
        );
    }

    #[test]
    fn suggestions() {
        let names = ["hold_time", "max_head"];
        assert_eq!(suggest("hold_tme", names.iter()), Some("hold_time"));
        assert_eq!(suggest("max-head", names.iter()), Some("max_head"));
        assert_eq!(suggest("listen", names.iter()), None);
    }
}
