//! Reading the files a user names (set files, published pages, saved
//! records): the one door every such input goes through, so that all of
//! them are read the same way.

use std::{fs::File, io, path::Path};

/// The whole text of the file at `path`.
///
/// # Errors
/// The file cannot be opened or read, or is not UTF-8.
pub fn read_text(path: &Path) -> io::Result<String> {
    std::fs::read_to_string(path)
}

/// The file at `path`, opened for reading from the start (records are
/// read line by line).
///
/// # Errors
/// The file cannot be opened.
pub fn open_input(path: &Path) -> io::Result<File> {
    File::open(path)
}
