//! htpasswd files, as the hand-built nginx setups have them: `user:hash` lines.
//!
//! bcrypt lines (`htpasswd -B`: `$2y$`, also `$2a$`, `$2b$`) and argon2 PHC strings are taken
//! as they are, so nobody has to ask their visitors for new passwords. Everything else Apache
//! can write is refused with the line and the reason: MD5 (`$apr1$`, `$1$`), SHA-1 (`{SHA}`),
//! SHA-crypt (`$5$`, `$6$`), DES crypt and plain text are all fast hashes (or none), which a
//! GPU guesses billions of times a second, and keeping them would mean verifying them forever.

use std::collections::HashSet;

use crate::ServiceError;
use crate::rules::check_username;

/// The costliest bcrypt line accepted (cost 12 is ~0.25 s per check on one core). The edge
/// verifies each new credential once, but a cost-31 line would make that one check take days.
pub const MAX_BCRYPT_COST: u32 = 12;
/// The most argon2 memory accepted, in KiB (64 MiB), for the same reason.
pub const MAX_ARGON2_KIB: u32 = 64 * 1024;
/// The most argon2 passes accepted.
pub const MAX_ARGON2_PASSES: u32 = 10;

/// The users of an htpasswd file: (user, hash) in file order. All or nothing: the first bad
/// line refuses the whole file, naming its line number and why.
pub fn parse(text: &str) -> crate::Result<Vec<(String, String)>> {
    let mut users = Vec::new();
    let mut seen = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: String| ServiceError::invalid("htpasswd", format!("line {n}: {why}"));
        let Some((user, hash)) = line.split_once(':') else {
            return Err(bad("expected user:hash".into()));
        };
        check_username(user).map_err(|e| bad(e.to_string()))?;
        check_hash(hash).map_err(|why| bad(format!("user {user:?}: {why}")))?;
        if !seen.insert(user.to_owned()) {
            return Err(bad(format!("user {user:?} appears twice")));
        }
        users.push((user.to_owned(), hash.to_owned()));
    }
    if users.is_empty() {
        return Err(ServiceError::invalid("htpasswd", "no user:hash line found"));
    }
    Ok(users)
}

const REMAKE: &str =
    "re-create the line with `htpasswd -B` (bcrypt) or add the user with a password";

/// `Ok` for a bcrypt or argon2 hash this broker can verify at a bounded cost; otherwise why not.
pub fn check_hash(hash: &str) -> Result<(), String> {
    if ["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)) {
        let parts: bcrypt::HashParts = hash
            .parse()
            .map_err(|e| format!("a malformed bcrypt hash ({e})"))?;
        if parts.get_cost() > MAX_BCRYPT_COST {
            return Err(format!(
                "bcrypt cost {} is above the {MAX_BCRYPT_COST} this broker verifies",
                parts.get_cost()
            ));
        }
        return Ok(());
    }
    if hash.starts_with("$argon2") {
        let phc = argon2::PasswordHash::new(hash)
            .map_err(|e| format!("a malformed argon2 hash ({e})"))?;
        let param = |name: &str| {
            phc.params
                .get_decimal(name)
                .ok_or_else(|| format!("the argon2 hash has no {name} parameter"))
        };
        let (m, t) = (param("m")?, param("t")?);
        if m > MAX_ARGON2_KIB || t > MAX_ARGON2_PASSES {
            return Err(format!(
                "argon2 with m={m} t={t} costs more than this broker verifies \
                 (m<={MAX_ARGON2_KIB}, t<={MAX_ARGON2_PASSES})"
            ));
        }
        return Ok(());
    }
    let what = if hash.starts_with("$apr1$") {
        "Apache MD5 ($apr1$)"
    } else if hash.starts_with("{SHA}") {
        "SHA-1 ({SHA})"
    } else if hash.starts_with("$1$") {
        "MD5-crypt ($1$)"
    } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
        "SHA-crypt ($5$/$6$)"
    } else if hash.len() == 13
        && hash
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
    {
        "DES crypt"
    } else {
        return Err(format!(
            "not a bcrypt or argon2 hash (plain text, or an unknown scheme); {REMAKE}"
        ));
    };
    Err(format!(
        "{what} is a fast hash that GPUs guess by the billion, so it is not accepted; {REMAKE}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with `htpasswd -nbB alice 'correct horse'` (cost 5).
    const ALICE: &str = "alice:$2y$05$YG1Cm8iA0H8fFOZBVTAeZeXzxDailDOfKf/jIdca5lVHgcjeOnb3.";

    #[test]
    fn bcrypt_and_argon2_lines_are_taken_as_they_are() {
        let argon = crate::passwords::hash_password("correct horse battery").expect("hash");
        let text = format!("# team\n{ALICE}\r\n\nbob:{argon}\n");
        let users = parse(&text).expect("parse");
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].0, "alice");
        assert!(users[0].1.starts_with("$2y$05$"));
        assert_eq!(users[1], ("bob".to_owned(), argon));
    }

    #[test]
    fn weak_and_broken_lines_are_refused_with_line_and_reason() {
        let cases = [
            ("carol:$apr1$abc$def", "line 2: user \"carol\": Apache MD5"),
            ("carol:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=", "SHA-1"),
            ("carol:$1$salt$hash", "MD5-crypt"),
            ("carol:$6$salt$hash", "SHA-crypt"),
            ("carol:abJnggxhB/yWI", "DES crypt"),
            ("carol:secret", "plain text"),
            ("carol", "line 2: expected user:hash"),
            ("ca rol:$2y$05$x", "line 2: "),
            ("carol:$2y$05$short", "malformed bcrypt"),
            (
                "carol:$2y$31$YG1Cm8iA0H8fFOZBVTAeZeXzxDailDOfKf/jIdca5lVHgcjeOnb3.",
                "cost 31",
            ),
            (
                "carol:$argon2id$v=19$m=1048576,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
                "m=1048576",
            ),
            (
                "alice:$2y$05$YG1Cm8iA0H8fFOZBVTAeZeXzxDailDOfKf/jIdca5lVHgcjeOnb3.",
                "twice",
            ),
        ];
        for (line, want) in cases {
            let err = parse(&format!("{ALICE}\n{line}\n")).expect_err(line);
            let msg = err.to_string();
            assert!(msg.contains(want), "{line}: {msg}");
            assert!(matches!(
                err,
                ServiceError::Invalid {
                    field: "htpasswd",
                    ..
                }
            ));
        }
        assert!(parse("# nothing\n\n").is_err());
    }
}
