//! What proves a custom domain, and what a check's outcome does to its state: pure functions,
//! so the decision is tested without DNS.
//!
//! Two things must hold. The TXT record at [`challenge_name`] must carry the domain's token:
//! that proves whoever controls the zone meant *this* reservation to have it (a CNAME alone
//! would let anyone attach a name someone else pointed at the broker). And the name must lead
//! to the broker: a CNAME to the reservation's own host name, or, where the operator has set
//! the broker's public addresses, A/AAAA records that are all among them (an apex cannot be a
//! CNAME).

use std::net::IpAddr;

/// The TXT record's name for `host`: `_warren-challenge.HOST`.
pub fn challenge_name(host: &str) -> String {
    format!("_warren-challenge.{host}")
}

/// A fresh token for a domain's TXT record: 160 random bits, hex, prefixed so that a reader
/// of the zone knows what it is for.
pub fn new_token() -> String {
    let bytes: [u8; 20] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("warren-verify={hex}")
}

/// Where a domain stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Attached, never proven: not served.
    Pending,
    /// Proven at the last check: served, and its certificate ordered.
    Verified,
    /// Proven once, but not at the last check: served for the grace period from
    /// `failing_since`, then no more until proven again.
    Failing,
}

impl State {
    /// The word the store, the API and the CLI use.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Verified => "verified",
            State::Failing => "failing",
        }
    }

    /// The state a stored word names (`pending` for anything unknown: never served).
    pub fn from_word(word: &str) -> Self {
        match word {
            "verified" => State::Verified,
            "failing" => State::Failing,
            _ => State::Pending,
        }
    }
}

/// What the domain's records must show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The domain's token, to be found among the TXT strings.
    pub token: String,
    /// The reservation's own host name (`chat.tunnel.example.com`), the CNAME target.
    pub target: String,
    /// The broker's public addresses (`public_ipv4`, `public_ipv6`); empty when not set, and
    /// then only a CNAME proves the route.
    pub addrs: Vec<IpAddr>,
}

/// What DNS said about a domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// The TXT strings at the challenge name.
    pub txt: Vec<String>,
    /// The CNAME target at the host, without a trailing dot.
    pub cname: Option<String>,
    /// The host's A and AAAA addresses (looked up only when the broker has public addresses).
    pub addrs: Vec<IpAddr>,
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Both the token and the route are in place.
    Proven,
    /// DNS answered, and the proof is not there; says what is missing.
    NotProven(String),
    /// DNS could not be asked (timeout, server failure): nothing is concluded.
    Unknown(String),
}

/// Whether `evidence` proves the domain `host` for `expected`.
pub fn decide(host: &str, expected: &Expected, evidence: &Evidence) -> Verdict {
    let challenge = challenge_name(host);
    if !evidence.txt.iter().any(|t| t.trim() == expected.token) {
        let seen = if evidence.txt.is_empty() {
            "there is none".to_owned()
        } else {
            format!(
                "{} found, none with this domain's token",
                evidence.txt.len()
            )
        };
        return Verdict::NotProven(format!(
            "TXT {challenge} must be \"{}\" ({seen})",
            expected.token
        ));
    }
    let target = normal(&expected.target);
    if evidence.cname.as_deref().map(normal) == Some(target.clone()) {
        return Verdict::Proven;
    }
    if !expected.addrs.is_empty()
        && !evidence.addrs.is_empty()
        && evidence.addrs.iter().all(|a| expected.addrs.contains(a))
    {
        return Verdict::Proven;
    }
    let found = match (&evidence.cname, evidence.addrs.is_empty()) {
        (Some(c), _) => format!("it is a CNAME to {}", normal(c)),
        (None, false) => format!(
            "its addresses are {}",
            evidence
                .addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (None, true) => "it has no CNAME".to_owned(),
    };
    let or_addrs = if expected.addrs.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = expected.addrs.iter().map(ToString::to_string).collect();
        format!(" (or A/AAAA {})", list.join(", "))
    };
    Verdict::NotProven(format!(
        "{host} must be a CNAME to {target}{or_addrs}; {found}"
    ))
}

fn normal(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// A domain's state and its two timestamps (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Where it stands.
    pub state: State,
    /// When it was last proven.
    pub verified_at: Option<i64>,
    /// Since when its proof has been missing (failing domains only).
    pub failing_since: Option<i64>,
}

/// The status after a check that ended in `verdict` at `now`. A proven domain is verified; an
/// unproven one that was verified starts failing (and keeps the time it started); a pending one
/// stays pending; an unknown outcome changes nothing.
pub fn next(status: Status, verdict: &Verdict, now: i64) -> Status {
    match verdict {
        Verdict::Proven => Status {
            state: State::Verified,
            verified_at: Some(now),
            failing_since: None,
        },
        Verdict::Unknown(_) => status,
        Verdict::NotProven(_) => match status.state {
            State::Pending => status,
            State::Verified => Status {
                state: State::Failing,
                failing_since: Some(now),
                ..status
            },
            State::Failing => Status {
                failing_since: status.failing_since.or(Some(now)),
                ..status
            },
        },
    }
}

/// Whether a domain in `status` is served at `now`: verified, or failing for less than `grace`
/// seconds.
pub fn serving(status: Status, now: i64, grace: i64) -> bool {
    match status.state {
        State::Verified => true,
        State::Failing => status
            .failing_since
            .is_none_or(|since| now < since.saturating_add(grace)),
        State::Pending => false,
    }
}

/// How often each kind of domain is checked (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    /// Pending domains, and failing ones still within their grace (so a fixed record brings
    /// the domain back quickly): `domain_pending_secs`.
    pub pending: i64,
    /// Verified domains, and failing ones past their grace: `domain_recheck_secs`.
    pub recheck: i64,
    /// How long a failing domain is still served: `domain_grace_secs`.
    pub grace: i64,
}

/// When a domain last checked at `last_checked` (never: `None`) is due again.
pub fn due_at(status: Status, last_checked: Option<i64>, iv: Intervals, now: i64) -> i64 {
    let Some(last) = last_checked else {
        return now;
    };
    let every = match status.state {
        State::Pending => iv.pending,
        State::Failing if serving(status, now, iv.grace) => iv.pending,
        State::Failing | State::Verified => iv.recheck,
    };
    last.saturating_add(every.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected(addrs: &[&str]) -> Expected {
        Expected {
            token: "warren-verify=abc".into(),
            target: "chat.tunnel.example.com".into(),
            addrs: addrs.iter().filter_map(|a| a.parse().ok()).collect(),
        }
    }

    fn evidence(txt: &[&str], cname: Option<&str>, addrs: &[&str]) -> Evidence {
        Evidence {
            txt: txt.iter().map(|s| s.to_string()).collect(),
            cname: cname.map(str::to_owned),
            addrs: addrs.iter().filter_map(|a| a.parse().ok()).collect(),
        }
    }

    const HOST: &str = "app.their.org";

    #[test]
    fn token_and_cname_prove_it() {
        let e = evidence(
            &["other", "warren-verify=abc"],
            Some("Chat.Tunnel.Example.com."),
            &[],
        );
        assert_eq!(decide(HOST, &expected(&[]), &e), Verdict::Proven);
    }

    #[test]
    fn a_cname_without_the_token_is_not_proof() {
        let e = evidence(&[], Some("chat.tunnel.example.com"), &[]);
        let v = decide(HOST, &expected(&[]), &e);
        assert!(
            matches!(&v, Verdict::NotProven(m) if m.contains("TXT _warren-challenge.app.their.org")),
            "{v:?}"
        );
        let wrong = evidence(&["warren-verify=abd"], Some("chat.tunnel.example.com"), &[]);
        assert!(matches!(
            decide(HOST, &expected(&[]), &wrong),
            Verdict::NotProven(_)
        ));
    }

    #[test]
    fn the_token_without_a_route_is_not_proof() {
        let e = evidence(&["warren-verify=abc"], Some("shop.tunnel.example.com"), &[]);
        let v = decide(HOST, &expected(&[]), &e);
        assert!(
            matches!(&v, Verdict::NotProven(m) if m.contains("CNAME to shop.tunnel.example.com")),
            "{v:?}"
        );
        let none = evidence(&["warren-verify=abc"], None, &[]);
        assert!(matches!(
            decide(HOST, &expected(&[]), &none),
            Verdict::NotProven(_)
        ));
    }

    #[test]
    fn addresses_prove_it_only_when_all_are_ours() {
        let ours = expected(&["203.0.113.7", "2001:db8::7"]);
        let apex = evidence(
            &["warren-verify=abc"],
            None,
            &["203.0.113.7", "2001:db8::7"],
        );
        assert_eq!(decide(HOST, &ours, &apex), Verdict::Proven);
        let mixed = evidence(
            &["warren-verify=abc"],
            None,
            &["203.0.113.7", "198.51.100.1"],
        );
        assert!(
            matches!(decide(HOST, &ours, &mixed), Verdict::NotProven(m) if m.contains("198.51.100.1"))
        );
        // Without configured addresses, addresses prove nothing.
        let anywhere = evidence(&["warren-verify=abc"], None, &["203.0.113.7"]);
        assert!(matches!(
            decide(HOST, &expected(&[]), &anywhere),
            Verdict::NotProven(_)
        ));
    }

    fn status(state: State, verified_at: Option<i64>, failing_since: Option<i64>) -> Status {
        Status {
            state,
            verified_at,
            failing_since,
        }
    }

    #[test]
    fn transitions() {
        let lost = Verdict::NotProven("gone".into());
        let flaky = Verdict::Unknown("timeout".into());
        let pending = status(State::Pending, None, None);
        assert_eq!(next(pending, &lost, 10), pending);
        assert_eq!(
            next(pending, &Verdict::Proven, 10),
            status(State::Verified, Some(10), None)
        );
        let verified = status(State::Verified, Some(10), None);
        assert_eq!(next(verified, &flaky, 20), verified);
        let failing = next(verified, &lost, 20);
        assert_eq!(failing, status(State::Failing, Some(10), Some(20)));
        // Still failing later: the grace runs from the first failure.
        assert_eq!(next(failing, &lost, 30), failing);
        assert_eq!(
            next(failing, &Verdict::Proven, 40),
            status(State::Verified, Some(40), None)
        );
    }

    #[test]
    fn served_until_the_grace_is_over() {
        let failing = status(State::Failing, Some(10), Some(100));
        assert!(serving(failing, 100, 50));
        assert!(serving(failing, 149, 50));
        assert!(!serving(failing, 150, 50));
        assert!(serving(
            status(State::Verified, Some(1), None),
            1_000_000,
            50
        ));
        assert!(!serving(status(State::Pending, None, None), 0, 50));
    }

    #[test]
    fn checks_come_due() {
        let iv = Intervals {
            pending: 30,
            recheck: 86_400,
            grace: 86_400,
        };
        let pending = status(State::Pending, None, None);
        assert_eq!(due_at(pending, None, iv, 1000), 1000);
        assert_eq!(due_at(pending, Some(1000), iv, 1001), 1030);
        let verified = status(State::Verified, Some(1000), None);
        assert_eq!(due_at(verified, Some(1000), iv, 1001), 87_400);
        let failing = status(State::Failing, Some(0), Some(1000));
        assert_eq!(due_at(failing, Some(1000), iv, 1001), 1030);
        // Past its grace, a failing domain is looked at daily.
        assert_eq!(due_at(failing, Some(90_000), iv, 90_001), 176_400);
    }

    #[test]
    fn tokens_are_fresh() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with("warren-verify=") && a.len() == 14 + 40);
        assert_eq!(State::from_word(State::Failing.as_str()), State::Failing);
    }
}
