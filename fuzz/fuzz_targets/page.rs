//! A "Network requirements" page (`sets import PAGE`): any text is
//! imported or refused with an error, never a panic; an imported set is
//! written into a set file that reads again.
#![no_main]

use cas_audit::addrset::{import::page::import_page, AddressSet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(imported) = import_page(text, "fuzz.md", None) else {
        return;
    };
    let written = imported.set.to_json();
    if let Err(e) = AddressSet::from_json(&written) {
        panic!("an imported page does not read back as a set file: {e}\n{written}");
    }
});
