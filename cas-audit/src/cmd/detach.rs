//! `cas-audit detach`: remove a datapath pinned by `run --pin`.

use std::path::PathBuf;

use super::{print_text, Outcome};
use crate::{
    datapath::{DatapathError, PinDir},
    error::Error,
};

/// What `detach` needs.
#[derive(Debug, Clone)]
pub struct DetachConfig {
    /// The pin directory.
    pub pin: PathBuf,
}

/// `cas-audit detach`: detaches the pinned links (synchronously) and
/// removes the pinned maps; nothing pinned is not an error.
///
/// # Errors
/// A pinned object that cannot be removed.
pub fn run(cfg: DetachConfig) -> Result<Outcome, Error> {
    let dir = &cfg.pin;
    if !dir.exists() {
        print_text(&format!("nothing pinned in {}\n", dir.display()))?;
        return Ok(Outcome::Success);
    }
    let removed = PinDir::new(dir)
        .remove()
        .map_err(|e| Error::Datapath(DatapathError::Pin(e)))?;
    let mut text = String::new();
    for r in &removed {
        text.push_str(&format!("removed {r}\n"));
    }
    text.push_str(&format!(
        "detached: {} pinned objects removed from {}\n",
        removed.len(),
        dir.display()
    ));
    print_text(&text)?;
    Ok(Outcome::Success)
}
