//! Any bytes given to the ring-buffer decoder give an event or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = ironclad_events::decode(data) {
        let _ = event.to_json();
    }
});
