//! `cas-audit report`: summarise saved records ([`crate::report`]).

use super::{print, Outcome};
use crate::{error::Error, report::ReportConfig};

/// `cas-audit report`.
///
/// # Errors
/// Everything [`crate::report::report`] returns; writing to standard output.
pub fn run(cfg: ReportConfig) -> Result<Outcome, Error> {
    print(&crate::report::report(&cfg)?)?;
    Ok(Outcome::Success)
}
