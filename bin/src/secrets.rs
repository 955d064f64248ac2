//! `morpheus secrets …`: seal a value, open one (to test a key), make a key pair. No
//! database is touched; a bad key or value is a one-line error that shows neither.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use morpheus_executors::key_source::KeySource;
use morpheus_executors::sealed::{self, PublicKey, SecretKey};
use zeroize::Zeroizing;

use crate::cli::{OpenArgs, SealArgs, SealKeyArgs, SecretsCommand};
use crate::config::Config;

/// Runs a `secrets` subcommand.
pub fn run(command: SecretsCommand, config: &Config) -> Result<()> {
    match command {
        SecretsCommand::Seal(args) => seal(args, config),
        SecretsCommand::Open(args) => open(args),
        SecretsCommand::Keygen { out } => keygen(&out),
    }
}

fn seal(args: SealArgs, config: &Config) -> Result<()> {
    // The key first: a bad key reads no stdin.
    let public_key = seal_key(&args.key, config)?;
    let plaintext = match args.value {
        Some(value) => Zeroizing::new(value),
        None => read_stdin("the value to seal")?,
    };
    println!("{}", sealed::seal(&public_key, &plaintext));
    Ok(())
}

fn seal_key(key: &SealKeyArgs, config: &Config) -> Result<PublicKey> {
    if let Some(hex) = &key.public_key {
        return Ok(PublicKey::from_hex(hex)?);
    }
    let source = match (&key.key_env, &key.key_file, &config.secrets) {
        (Some(name), _, _) => KeySource::HexKeyEnv(name.clone()),
        (_, Some(path), _) => KeySource::HexKeyFile(path.clone()),
        (None, None, Some(secrets)) => secrets.key.clone(),
        (None, None, None) => bail!(
            "no key: give --public-key, --key-env or --key-file (or [secrets] key in morpheus.toml)"
        ),
    };
    Ok(SecretKey::from_source(&source)?.public_key())
}

fn open(args: OpenArgs) -> Result<()> {
    let source = match (args.key_env, args.key_file) {
        (Some(name), _) => KeySource::HexKeyEnv(name),
        (_, Some(path)) => KeySource::HexKeyFile(path),
        (None, None) => bail!("no key: give --key-env or --key-file"),
    };
    let key = SecretKey::from_source(&source)?;
    let text = match args.value {
        Some(value) => Zeroizing::new(value),
        None => read_stdin("the sealed value")?,
    };
    let plaintext = sealed::open(&key, &text)?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(plaintext.as_bytes())
        .and_then(|()| stdout.write_all(b"\n"))
        .context("cannot write to stdout")?;
    Ok(())
}

fn keygen(out: &Path) -> Result<()> {
    let key = SecretKey::generate();
    let mut file = create_private(out)?;
    let mut text = key.to_hex();
    text.push('\n');
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("{}", key.public_key());
    Ok(())
}

/// A new file readable by its owner only; an existing one is left alone.
fn create_private(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::AlreadyExists => anyhow!(
                "{} exists already; not overwriting a key (choose another --out)",
                path.display()
            ),
            kind => anyhow!("cannot create {}: {kind}", path.display()),
        })
}

/// All of stdin, less one trailing newline (what `echo` and here-strings add).
fn read_stdin(what: &str) -> Result<Zeroizing<String>> {
    let mut bytes = Zeroizing::new(Vec::new());
    std::io::stdin()
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {what} from stdin"))?;
    let mut text = Zeroizing::new(
        String::from_utf8(std::mem::take(&mut *bytes))
            .map_err(|_| anyhow!("{what} on stdin is not UTF-8 text"))?,
    );
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}
