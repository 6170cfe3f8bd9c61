//! Custom domains: a tenant's own host name (`app.their-domain.org`) served by one of their
//! reservations.
//!
//! This crate holds what needs no store: which host names may be attached ([`validate`]), the
//! records that prove one ([`challenge_name`], [`new_token`]), the decision whether DNS shows
//! that proof and what a check does to a domain's state ([`decide`], [`next`], [`serving`],
//! [`due_at`]), and the [`Checker`] that asks DNS with hickory-resolver. `warren-tenants` calls
//! it for the API, the SSH commands and the CLI; the broker's background task re-checks every
//! domain with it and routes the verified ones.
#![warn(missing_docs)]

mod checker;
mod error;
mod hostname;
mod proof;

pub use checker::{Checker, parse_resolvers};
pub use error::DomainError;
pub use hostname::{OwnNames, validate};
pub use proof::{
    Evidence, Expected, Intervals, State, Status, Verdict, challenge_name, decide, due_at,
    new_token, next, serving,
};
