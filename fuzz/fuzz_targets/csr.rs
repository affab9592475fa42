//! CSR parsing and signature check on arbitrary bytes.
#![no_main]
use command_issuer::pki::parse_csr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_csr(data);
});
