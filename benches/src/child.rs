//! The child's side of `compare`'s `tokio-on-tally` engine: the entry point
//! of the `tokio-on-tally` binary, which runs one case, or the footprint,
//! and prints the line the parent ([`crate::tokio_on_tally`]) parses.

use std::io;
use std::process::ExitCode;

use crate::harness::Run;
use crate::workloads::{echo, footprint, pingpong};

/// The child's entry point: `tokio-on-tally --run W3|W4 COUNT`,
/// `tokio-on-tally --footprint N`, or (for W4's client, which W4 starts by
/// re-running its own binary) `--echo-client ...`. Prints one line that
/// [`case`](crate::tokio_on_tally::case) and
/// [`footprint()`](crate::tokio_on_tally::footprint) parse.
pub fn child_main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = match argv.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["--echo-client", ..] => crate::echo_client::main(&argv[1..]),
        ["--run", workload, count] => match count.parse::<u64>() {
            Ok(n) => run_here(workload, n).map(|r| {
                let cpu = r.cpu.map_or("-".to_string(), |c| c.as_nanos().to_string());
                println!("run {} {} {} {cpu}", r.events, r.elapsed.as_nanos(), r.allocs);
            }),
            Err(e) => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("count: {e}"))),
        },
        ["--footprint", n] => match n.parse::<usize>() {
            Ok(n) => footprint::tokio(n).map(|f| {
                let kernel = f.kernel.map_or("-".to_string(), |k| k.to_string());
                println!("footprint {} {} {kernel} {}", f.n, f.heap, f.what);
            }),
            Err(e) => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("n: {e}"))),
        },
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "usage: tokio-on-tally --run W3|W4 COUNT | --footprint N",
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokio-on-tally: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The `tokio` engine's run of `workload`, in this process.
fn run_here(workload: &str, n: u64) -> io::Result<Run> {
    match workload {
        "W3" => pingpong::tokio(n),
        "W4" => echo::with_client(n, echo::tokio),
        other => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("no workload {other}"))),
    }
}
