//! `cas-audit doctor`: can this machine run cas-audit ([`crate::doctor`])?

use super::{print, print_text, Outcome};
use crate::error::Error;

/// What `doctor` needs.
#[derive(Debug, Clone, Default)]
pub struct DoctorConfig {
    /// Interfaces to check (empty: every interface but loopback).
    pub ifaces: Vec<String>,
    /// One JSON document instead of the list.
    pub json: bool,
}

/// `cas-audit doctor`: [`Outcome::Negative`] when a check fails.
///
/// # Errors
/// An unknown interface; writing to standard output.
pub fn run(cfg: DoctorConfig) -> Result<Outcome, Error> {
    let r = crate::doctor::doctor(&cfg.ifaces)?;
    if cfg.json {
        print(&(r.json() + "\n"))?;
    } else {
        print_text(&r.text())?;
    }
    Ok(if r.ok {
        Outcome::Success
    } else {
        Outcome::Negative
    })
}
