//! Saved records (`cas-audit report FILE`, `report -`): any bytes, plain or
//! gzip, are counted or skipped line by line, never a panic; the figures
//! are written as JSON and as the tables.
#![no_main]

use cas_audit::report::{evidence_of_stream, Filters};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = std::io::Cursor::new(data.to_vec());
    let Ok(ev) = evidence_of_stream("fuzz.jsonl", input, &Filters::default(), 10) else {
        // Only a broken gzip stream is an error.
        return;
    };
    let _ = serde_json::to_string(&ev).expect("the report serialises");
    let _ = ev.table();
});
