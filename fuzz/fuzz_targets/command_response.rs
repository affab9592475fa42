//! Command's enrollment response, whatever bytes arrive: decoding and the disposition decision
//! must never panic.
#![no_main]
use command_issuer::command::EnrollCsrResponse;
use command_issuer::request::outcome_from_response;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = serde_json::from_slice::<EnrollCsrResponse>(data) {
        let _ = outcome_from_response(&r.certificate_information);
    }
});
