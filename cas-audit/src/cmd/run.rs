//! `cas-audit run`: attach, report flows live, summarise at exit
//! ([`crate::audit`]).

use super::{runtime, Outcome};
use crate::{audit::RunConfig, error::Error};

/// `cas-audit run`.
///
/// # Errors
/// Everything [`crate::audit::run`] returns.
pub fn run(cfg: RunConfig) -> Result<Outcome, Error> {
    runtime()?.block_on(crate::audit::run(cfg))?;
    Ok(Outcome::Success)
}
