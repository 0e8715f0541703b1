//! An Azure Service Tags download (`sets import ServiceTags_*.json`): any
//! text is imported or refused with an error, never a panic; an imported
//! set is written into a set file that reads again.
#![no_main]

use cas_audit::addrset::{import::servicetags::import_service_tags, AddressSet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(imported) =
        import_service_tags(text, "ServiceTags_Public_fuzz.json", "2026-11-30", None)
    else {
        return;
    };
    let written = imported.set.to_json();
    if let Err(e) = AddressSet::from_json(&written) {
        panic!("imported Service Tags do not read back as a set file: {e}\n{written}");
    }
});
