//! `limmat relay key`: issues device keys (spec 4.1.2, 4.1.3).
//!
//! `--master-secret-file F <domain>` prints the domain's derived key as the last word of its
//! output, so scripts can take it with `awk '{print $NF}'`. `--new <domain>` prints a random
//! static key once, with the `[[device_key]]` entry that holds only its SHA-256: the relay never
//! needs the key itself, so it should exist nowhere but on the device. With `--append FILE` the
//! entry goes into that keys file instead (created with mode 0600) and stdout carries the key
//! alone, so `KEY=$(limmat relay key --new dom --append keys.toml)` is the whole recipe.

use anyhow::Context;
use clap::Args;
use limmat_relay::auth;
use limmat_wire::route::parse_domain;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["new", "master_secret_file"])))]
pub struct KeyArgs {
    /// Make a new random key and print it with its [[device_key]] entry for the configuration.
    #[arg(long)]
    new: bool,
    /// Print the domain's derived key under this master secret (repeatable, as for the relay;
    /// the first one is used).
    #[arg(long, value_name = "FILE")]
    master_secret_file: Vec<PathBuf>,
    /// With --new: append the key's [[device_key]] entry to this keys file (created with mode
    /// 0600 if missing) and print only the key on stdout.
    #[arg(long, value_name = "FILE", requires = "new")]
    append: Option<PathBuf>,
    /// The device's relay domain.
    #[arg(value_name = "DOMAIN")]
    domain: String,
}

pub fn run(args: KeyArgs) -> anyhow::Result<()> {
    let domain =
        parse_domain(&args.domain).with_context(|| format!("invalid domain {:?}", args.domain))?;
    match args.master_secret_file.first() {
        Some(path) => {
            let secret = auth::read_master_secret(path)?;
            let key = auth::derive_key(&secret, &domain);
            print_out(format_args!("device key for {domain}: {key}"))?;
        }
        None => {
            let key = auth::new_key().context("the system's random source failed")?;
            if let Some(path) = &args.append {
                append_entry(path, &domain, &auth::sha256_hex(&key))?;
                eprintln!(
                    "appended the [[device_key]] entry for {domain} to {}; the key below is shown \
                     only once: give it to the device (LIMMAT_SECRET_KEY or --secret-key) and keep \
                     no other copy",
                    path.display()
                );
                return print_out(format_args!("{key}"));
            }
            // Domain keys never contain `"` or `\` (H6), so the TOML string needs no escapes.
            print_out(format_args!(
                "device key for {domain}: {key}\n\
                 \n\
                 This key is shown only once: give it to the device (limmat tunnel: LIMMAT_SECRET_KEY\n\
                 or --secret-key; YalerTunnel2: --secret-key) and keep no other copy. The relay\n\
                 needs only its hash: add this entry to its configuration or keys file.\n\
                 \n\
                 [[device_key]]\n\
                 domain = \"{domain}\"\n\
                 sha256 = \"{}\"",
                auth::sha256_hex(&key)
            ))?;
        }
    }
    Ok(())
}

/// Appends a `[[device_key]]` entry to a keys file, after checking that the file as it is
/// loads (so a broken file is reported, not made worse); a new file gets mode 0600.
fn append_entry(path: &std::path::Path, domain: &str, sha256: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let existing = match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read keys file {}", path.display()));
        }
    };
    if existing.is_some() {
        auth::Authenticator::load(&auth::KeySources {
            keys_files: vec![path.to_path_buf()],
            ..auth::KeySources::default()
        })
        .context("nothing was appended")?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot open keys file {}", path.display()))?;
    let separator = match existing.as_deref() {
        None | Some([]) => "",
        Some(bytes) if bytes.ends_with(b"\n") => "\n",
        Some(_) => "\n\n",
    };
    // Domain keys never contain `"` or `\` (H6), so the TOML string needs no escapes.
    write!(
        file,
        "{separator}[[device_key]]\ndomain = \"{domain}\"\nsha256 = \"{sha256}\"\n"
    )
    .with_context(|| format!("cannot write keys file {}", path.display()))
}

/// Prints to stdout, reporting a closed or failing stdout as an error instead of panicking
/// the way `println!` does.
pub fn print_out(text: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    use std::io::Write;
    writeln!(std::io::stdout(), "{text}").context("cannot write to standard output")
}
