//! What a tenant may do, and doing it.
//!
//! Three front doors lead here: the REST API (`warren-api`), the commands a tenant runs over SSH
//! (`ssh tunnel@host ls`) and the operator's `broker` CLI. Each builds a [`Caller`] (who is
//! asking, with what scope, through which door) and calls the same service function, so the
//! three cannot disagree on a rule: who may see what, which quota applies, what the audit row
//! says. Functions return [`ServiceError`], whose variants map one to one onto the API's status
//! codes and read as one line in a terminal.
#![warn(missing_docs)]

mod caller;
mod error;
pub mod htpasswd;
pub mod passwords;
pub mod rules;
pub mod shares;

pub use caller::{Caller, Scope, Via};
pub use error::ServiceError;
pub use rules::{PublicUrls, RulesContext};

/// Result alias for service functions.
pub type Result<T> = std::result::Result<T, ServiceError>;
