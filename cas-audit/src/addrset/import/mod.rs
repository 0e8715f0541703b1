//! Importers: one file per source format Microsoft publishes.
//!
//! - [`page`]: the "Network requirements" page (Markdown, as published).

pub mod page;

pub use page::{import_page, Import};
