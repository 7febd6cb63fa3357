//! What every program of this crate needs besides its code: the panic
//! handler (never reached: the verifier admits no panic path) and the
//! license the kernel reads.

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
