//! A set file (`--set FILE`, `sets show --set`): any text is read or
//! refused with an error, never a panic; a set that is read is written
//! back (`sets show --json`) into a file that reads again.
#![no_main]

use cas_audit::addrset::AddressSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The file door reads UTF-8 only (host::fs::read_text).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(set) = AddressSet::from_json(text) else {
        return;
    };
    let _ = set.ranges();
    let written = set.to_json();
    if let Err(e) = AddressSet::from_json(&written) {
        panic!("a set read from a file does not read back once written: {e}\n{written}");
    }
});
