//! End-to-end tests: the real `broker` binary on port 0, driven by the real OpenSSH client,
//! serving a real origin to a visitor over HTTP. Each test has its own broker, so they run in
//! parallel.

mod admin;
mod api;
mod balancer;
mod browser;
mod check;
mod client;
mod cluster;
mod commands;
mod console;
mod domains;
mod faults;
mod flood;
mod harness;
mod hostile;
mod https;
mod integrity;
mod isolation;
mod lifecycle;
mod limits;
mod memory;
mod metrics;
mod origin;
mod pairing;
mod public;
mod rules;
mod tenant_rules;
mod transfer;
mod tunnels;
mod webhooks;
mod zone;
