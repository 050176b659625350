//! `compare`'s `tokio-on-tally` engine: see `tally_benches::tokio_on_tally`.

use std::process::ExitCode;

use tally_benches::alloc::CountingAlloc;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn main() -> ExitCode {
    tally_benches::child::child_main()
}
