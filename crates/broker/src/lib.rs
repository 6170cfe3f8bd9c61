//! The broker's settings, as a library beside the `broker` binary: the one typed config struct
//! and the log setup it names. A library so that the config fuzz target (fuzz/) can drive the
//! same parsing and validation `broker serve` runs; everything else stays in the binary.

pub mod config;
pub mod logging;
