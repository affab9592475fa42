//! Chain ordering over arbitrary certificate strings (split on NUL into several entries).
#![no_main]
use command_issuer::pki::split_chain;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let pems: Vec<String> = text.split('\0').map(str::to_string).collect();
    let _ = split_chain(&pems);
});
