//! Any bytes given to the DNS parser give a message or an error, never a panic or a
//! read out of bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = ironclad_events::dns::parse(data) {
        for q in &message.questions {
            let _ = ironclad_events::dns::type_name(q.qtype);
        }
    }
});
