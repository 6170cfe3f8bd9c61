//! Secrets from files: every secret setting `foo` has a `foo_file` twin naming a file that
//! holds it, so the secret is never on a command line (`ps` shows those to every user) nor in
//! the config file or the environment (`/proc/PID/environ`, `systemctl show`).
//!
//! A relative `*_file` name is looked up in `$CREDENTIALS_DIRECTORY` when systemd set it
//! (`LoadCredential=cloudflare_token:/etc/warren/credentials/cloudflare_token` +
//! `cloudflare_token_file = "cloudflare_token"`). From a shell (`broker check`, admin
//! commands) there is no such variable: the name is then looked up in `credentials_dir`,
//! by default `/etc/warren/credentials` (where the README's install keeps the files the unit
//! loads) when that directory exists, else in the current directory. So the same config works
//! for the service and for its operator. One trailing newline (what `echo` and editors add) is
//! trimmed. Errors name the setting and the file, never what it holds.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::SettingsArgs;

/// Which secret files a command reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretFiles {
    /// Every one (`serve`, and its reload).
    All,
    /// Only the database's. Admin commands need nothing else, and run from a shell they have
    /// no `$CREDENTIALS_DIRECTORY`: the DNS and certificate secrets stay in the service's
    /// credentials, unread, and a placeholder stands in so the config still validates.
    DatabaseOnly,
}

/// What stands in for a secret file an admin command does not read.
const UNREAD: &str = "(unread: admin commands read only the database secrets)";

/// Replaces each `*_file` setting in `a` by the secret it names; giving a secret both ways is
/// an error naming both keys.
pub(super) fn resolve(a: SettingsArgs, which: SecretFiles) -> Result<SettingsArgs> {
    let service = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    let default = Path::new(CREDENTIALS_DIR);
    resolve_in(a, which, service, default.is_dir().then_some(default))
}

/// Where the README's install keeps secret files (root:warren, 0640).
pub const CREDENTIALS_DIR: &str = "/etc/warren/credentials";

/// [`resolve`], given `$CREDENTIALS_DIRECTORY` (`service`) and the default credentials
/// directory if it exists.
fn resolve_in(
    mut a: SettingsArgs,
    which: SecretFiles,
    service: Option<PathBuf>,
    default: Option<&Path>,
) -> Result<SettingsArgs> {
    let dir = service
        .or_else(|| a.credentials_dir.take())
        .or_else(|| default.map(Path::to_owned));
    let dir = dir.as_deref();
    let service_dir = match which {
        SecretFiles::All => Some(dir),
        SecretFiles::DatabaseOnly => None,
    };
    a.cloudflare_token = pick(
        "cloudflare_token",
        a.cloudflare_token.take(),
        a.cloudflare_token_file.take(),
        service_dir,
    )?;
    a.rfc2136_secret = pick(
        "rfc2136_secret",
        a.rfc2136_secret.take(),
        a.rfc2136_secret_file.take(),
        service_dir,
    )?;
    a.cert_key = pick(
        "cert_key",
        a.cert_key.take(),
        a.cert_key_file.take(),
        service_dir,
    )?;
    a.database_url = pick(
        "database_url",
        a.database_url.take(),
        a.database_url_file.take(),
        Some(dir),
    )?;
    if let Some(file) = a.database_password_file.take() {
        let password = read("database_password_file", &file, dir)?;
        let Some(url) = a.database_url.take() else {
            bail!(
                "database_password_file: needs a database_url (postgres://USER@HOST/DB) to add the password to"
            );
        };
        a.database_url = Some(with_password(&url, &password)?);
    }
    Ok(a)
}

/// The secret `key`, given directly (`value`) or in a file (`file`), not both. `read_in` is
/// `None` when the file is not to be read ([`SecretFiles::DatabaseOnly`]), else the directory
/// relative names are resolved against, if any.
fn pick(
    key: &str,
    value: Option<String>,
    file: Option<PathBuf>,
    read_in: Option<Option<&Path>>,
) -> Result<Option<String>> {
    match (value, file, read_in) {
        (Some(_), Some(_), _) => bail!("{key} and {key}_file: give one of them, not both"),
        (value, None, _) => Ok(value),
        (None, Some(_), None) => Ok(Some(UNREAD.to_owned())),
        (None, Some(file), Some(dir)) => read(&format!("{key}_file"), &file, dir).map(Some),
    }
}

/// The secret in `file` (relative names resolved against `dir`), without its trailing newline.
fn read(key: &str, file: &Path, dir: Option<&Path>) -> Result<String> {
    let path = match dir {
        Some(dir) if file.is_relative() => dir.join(file),
        _ => file.to_owned(),
    };
    // The io error says what went wrong (not found, permission denied), never the content.
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("{key}: cannot read {}: {e}", path.display()))?;
    let secret = text
        .strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&text);
    if secret.is_empty() {
        bail!("{key}: {} is empty", path.display());
    }
    Ok(secret.to_owned())
}

/// `url` (`postgres://USER@HOST/DB…`) with `password` as its userinfo password,
/// percent-encoded so any character may appear in it.
fn with_password(url: &str, password: &str) -> Result<String> {
    let Some((scheme, rest)) = url
        .split_once("://")
        .filter(|(s, _)| *s == "postgres" || *s == "postgresql")
    else {
        bail!("database_password_file: only a postgres:// database_url takes a password");
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        bail!("database_password_file: database_url must name the user (postgres://USER@HOST/DB)");
    };
    let user = &rest[..at];
    if user.contains(':') {
        bail!(
            "database_url and database_password_file: the URL already holds a password; give it in one place"
        );
    }
    Ok(format!(
        "{scheme}://{user}:{}{}",
        percent_encode(password),
        &rest[at..]
    ))
}

/// RFC 3986 percent-encoding of everything but the unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn secret_file(dir: &Path, name: &str, content: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).expect("write secret");
        path
    }

    fn cloudflare(args: SettingsArgs) -> SettingsArgs {
        SettingsArgs {
            dns_provider: Some("cloudflare".into()),
            public_ipv4: Some("203.0.113.7".parse().expect("ip")),
            ..args
        }
    }

    #[test]
    fn relative_names_are_found_in_the_service_then_the_credentials_dir() -> Result<()> {
        let (service, creds) = (tempfile::tempdir()?, tempfile::tempdir()?);
        secret_file(
            service.path(),
            "db",
            "postgres://warren:from-service@db/w\n",
        );
        secret_file(creds.path(), "db", "postgres://warren:from-creds@db/w\n");
        let args = || SettingsArgs {
            database_url_file: Some("db".into()),
            ..SettingsArgs::default()
        };
        let url = |a: SettingsArgs| a.database_url.unwrap_or_default();
        // Under systemd: $CREDENTIALS_DIRECTORY, whatever else is set.
        let a = resolve_in(
            SettingsArgs {
                credentials_dir: Some(creds.path().into()),
                ..args()
            },
            SecretFiles::All,
            Some(service.path().into()),
            None,
        )?;
        assert!(url(a).contains("from-service"));
        // From a shell: the default credentials directory...
        let a = resolve_in(args(), SecretFiles::DatabaseOnly, None, Some(creds.path()))?;
        assert!(url(a).contains("from-creds"));
        // ...or the configured one, which names itself when the file is missing.
        let empty = tempfile::tempdir()?;
        let e = resolve_in(
            SettingsArgs {
                credentials_dir: Some(empty.path().into()),
                ..args()
            },
            SecretFiles::All,
            None,
            Some(creds.path()),
        )
        .expect_err("not there");
        let shown = format!("{e:#}");
        assert!(
            shown.starts_with("database_url_file: cannot read ")
                && shown.contains(&empty.path().join("db").display().to_string()),
            "{shown}"
        );
        Ok(())
    }

    #[test]
    fn each_secret_comes_from_its_file_without_the_newline() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let c = Config::load(&cloudflare(SettingsArgs {
            cloudflare_token_file: Some(secret_file(d, "cf", "cf-token-1\n")),
            cert_key_file: Some(secret_file(d, "ck", "Y2VydC1rZXk=\r\n")),
            database_url_file: Some(secret_file(
                d,
                "db",
                "postgres://warren:hunter2@db/warren\n",
            )),
            acme_directory: Some("https://ca.test/dir".into()),
            ..SettingsArgs::default()
        }))?;
        match &c.public.dns {
            super::super::DnsConfig::Cloudflare { token, .. } => {
                assert_eq!(token.expose(), "cf-token-1")
            }
            other => panic!("not cloudflare: {other:?}"),
        }
        let key = c.public.acme.as_ref().and_then(|a| a.cert_key.as_ref());
        assert_eq!(key.map(|k| k.expose()), Some("Y2VydC1rZXk="));
        assert_eq!(c.database_url.0, "postgres://warren:hunter2@db/warren");

        let c = Config::load(&SettingsArgs {
            dns_provider: Some("rfc2136".into()),
            public_ipv4: Some("203.0.113.7".parse()?),
            rfc2136_server: Some("127.0.0.1:53".parse()?),
            rfc2136_key_name: Some("warren".into()),
            rfc2136_secret_file: Some(secret_file(d, "tsig", "c2VjcmV0\n")),
            ..SettingsArgs::default()
        })?;
        match &c.public.dns {
            super::super::DnsConfig::Rfc2136 { secret, .. } => {
                assert_eq!(secret.expose(), "c2VjcmV0")
            }
            other => panic!("not rfc2136: {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn a_password_file_is_merged_into_the_url() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let c = Config::load(&SettingsArgs {
            database_url: Some("postgres://warren@db:5432/warren?sslmode=require".into()),
            database_password_file: Some(secret_file(dir.path(), "pw", "p@ss:w/rd\n")),
            ..SettingsArgs::default()
        })?;
        assert_eq!(
            c.database_url.0,
            "postgres://warren:p%40ss%3Aw%2Frd@db:5432/warren?sslmode=require"
        );
        assert_eq!(
            c.database_url.redacted(),
            "postgres://warren:***@db:5432/warren?sslmode=require"
        );
        let err = |url: &str| {
            let e = Config::load(&SettingsArgs {
                database_url: Some(url.into()),
                database_password_file: Some(dir.path().join("pw")),
                ..SettingsArgs::default()
            })
            .expect_err("refused");
            format!("{e:#}")
        };
        assert!(err("postgres://db/warren").contains("must name the user"));
        assert!(err("postgres://warren:old@db/warren").contains("already holds a password"));
        assert!(err("sqlite://x.db").contains("only a postgres://"));
        Ok(())
    }

    #[test]
    fn a_secret_given_twice_is_an_error_naming_both() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let file = secret_file(dir.path(), "s", "x\n");
        let cases: [(&str, SettingsArgs); 4] = [
            (
                "cloudflare_token and cloudflare_token_file",
                SettingsArgs {
                    cloudflare_token: Some("t".into()),
                    cloudflare_token_file: Some(file.clone()),
                    ..SettingsArgs::default()
                },
            ),
            (
                "rfc2136_secret and rfc2136_secret_file",
                SettingsArgs {
                    rfc2136_secret: Some("t".into()),
                    rfc2136_secret_file: Some(file.clone()),
                    ..SettingsArgs::default()
                },
            ),
            (
                "cert_key and cert_key_file",
                SettingsArgs {
                    cert_key: Some("t".into()),
                    cert_key_file: Some(file.clone()),
                    ..SettingsArgs::default()
                },
            ),
            (
                "database_url and database_url_file",
                SettingsArgs {
                    database_url: Some("sqlite://x.db".into()),
                    database_url_file: Some(file.clone()),
                    ..SettingsArgs::default()
                },
            ),
        ];
        for (want, args) in cases {
            let e = format!("{:#}", Config::load(&args).expect_err(want));
            assert!(e.contains(want), "{e}");
        }
        Ok(())
    }

    #[test]
    fn a_missing_or_empty_file_is_named_but_never_shown() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let missing = dir.path().join("no-such-token");
        let e = Config::load(&SettingsArgs {
            cloudflare_token_file: Some(missing.clone()),
            ..SettingsArgs::default()
        })
        .expect_err("missing file");
        let e = format!("{e:#}");
        assert!(e.contains("cloudflare_token_file") && e.contains(&missing.display().to_string()));

        // A file that is not a database URL: the error must not echo what it holds.
        let wrong = secret_file(dir.path(), "db", "mysql://root:hunter2@db/x\n");
        let e = Config::load(&SettingsArgs {
            database_url_file: Some(wrong),
            ..SettingsArgs::default()
        })
        .expect_err("not a database URL");
        let e = format!("{e:#}");
        assert!(e.contains("database_url") && !e.contains("hunter2"), "{e}");

        let empty = secret_file(dir.path(), "empty", "\n");
        let e = Config::load(&SettingsArgs {
            cert_key_file: Some(empty),
            ..SettingsArgs::default()
        })
        .expect_err("empty file");
        assert!(format!("{e:#}").contains("is empty"));
        Ok(())
    }

    #[test]
    fn relative_names_are_found_in_the_credentials_directory() -> Result<()> {
        let dir = tempfile::tempdir()?;
        secret_file(dir.path(), "cloudflare_token", "from-systemd\n");
        let got = pick(
            "cloudflare_token",
            None,
            Some(PathBuf::from("cloudflare_token")),
            Some(Some(dir.path())),
        )?;
        assert_eq!(got.as_deref(), Some("from-systemd"));
        Ok(())
    }

    #[test]
    fn admin_commands_read_only_the_database_secrets() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let args = cloudflare(SettingsArgs {
            cloudflare_token_file: Some(PathBuf::from("/nonexistent/cloudflare_token")),
            database_url_file: Some(secret_file(dir.path(), "db", "sqlite://x.db\n")),
            ..SettingsArgs::default()
        });
        let e = format!("{:#}", Config::load(&args).expect_err("serve reads it"));
        assert!(e.contains("cloudflare_token_file"), "{e}");
        let c = Config::load_admin(&args)?;
        assert_eq!(c.database_url.0, "sqlite://x.db");
        Ok(())
    }
}
