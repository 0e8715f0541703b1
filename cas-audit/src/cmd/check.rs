//! `cas-audit check`: a firewall rollout check ([`crate::rollout`]).

use super::{runtime, Outcome};
use crate::{error::Error, rollout::CheckConfig};

/// `cas-audit check`: [`Outcome::Negative`] when a destination is not
/// reachable.
///
/// # Errors
/// Everything [`crate::rollout::check`] returns.
pub fn run(cfg: CheckConfig) -> Result<Outcome, Error> {
    let (_, summary) = runtime()?.block_on(crate::rollout::check(cfg))?;
    Ok(if summary.ok {
        Outcome::Success
    } else {
        Outcome::Negative
    })
}
