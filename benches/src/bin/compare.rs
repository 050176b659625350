//! `compare`: runs tally, a hand-written mio readiness loop, tokio and (on
//! W3, W3-many and W4) monoio side by side on named workloads, and prints
//! tally's throughput ratios; on W1 to W4, W3-many, W5 churn-fd, W6 and W7, also
//! tally on its epoll backend (`tally-epoll`) and its ratios to mio and
//! tokio.
//!
//! ```text
//! compare [--quick] [--only W1,W3,mem] [--json PATH] [--plot PATH.svg]
//! ```
//!
//! * `--quick`: smaller counts and 3 repetitions (under two minutes on two
//!   cores); without it, full counts and 7 repetitions (under fifteen).
//! * `--only`: a comma-separated list of workloads (`W0` … `W8`, `W3M` for
//!   W3-many, 64 pingpong pairs at once, `W4MT` for W4 echo 2-workers,
//!   every server on two threads, and `mem` for bytes per registration).
//!   `W4` does not include `W4MT`. `W5` runs its three patterns: `churn (fd-less)`,
//!   `churn-random` and `churn-fd`.
//! * `--engines`: run only these engines (`tally,tally-epoll,tally-reactor,
//!   tally-reactor-epoll,mio,tokio,monoio,io-uring,pread`), for profiling one side.
//! * `--json PATH`: the results in the issue's schema.
//! * `--plot PATH.svg`: the ratios as a bar chart.
//!
//! The binary installs a counting global allocator, so that every run also
//! reports allocations per event. `compare --echo-client ADDR CONNS MSGS` is
//! the W4 client process, and `compare --http-client ADDR CONNS REQS` the
//! W7 one; `compare` starts both itself.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use tally_benches::alloc::{self, CountingAlloc};
use tally_benches::echo_client;
use tally_benches::harness::{Bench, Engine, Measured, Run};
use tally_benches::http_client;
use tally_benches::plot;
use tally_benches::report::{Report, WorkloadResult, pairwise, utc_date};
use tally_benches::sys::{self, Machine};
use tally_benches::workloads::{
    Config, churn, echo, echo_mt, fan_in, file, footprint, http, nop, pingpong, pingpong_many,
    signal_flood, timers,
};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Parsed command line.
#[derive(Debug, Default)]
struct Args {
    quick: bool,
    only: Option<Vec<String>>,
    engines: Option<Vec<String>>,
    json: Option<PathBuf>,
    plot: Option<PathBuf>,
}

/// Allocations per event, by engine: (workload entry, figure).
type Allocs = BTreeMap<Engine, Vec<(String, f64)>>;

const USAGE: &str = "usage: compare [--quick] [--only W0,W1,...,W8,W3M,W4MT,mem] [--engines tally,...] [--json PATH] [--plot PATH.svg]";

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut out = Args::default();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => out.quick = true,
            "--only" => {
                let v = args.next().ok_or("--only needs a list")?;
                out.only = Some(v.split(',').map(|s| s.trim().to_ascii_uppercase()).collect());
            }
            "--engines" => {
                let v = args.next().ok_or("--engines needs a list")?;
                out.engines = Some(v.split(',').map(|s| s.trim().to_string()).collect());
            }
            "--json" => out.json = Some(args.next().ok_or("--json needs a path")?.into()),
            "--plot" => out.plot = Some(args.next().ok_or("--plot needs a path")?.into()),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(out)
}

impl Args {
    fn wants(&self, id: &str) -> bool {
        self.only.as_ref().is_none_or(|o| o.iter().any(|w| w == id))
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("--echo-client") {
        return match echo_client::main(&argv[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("echo client: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if argv.first().map(String::as_str) == Some("--http-client") {
        return match http_client::main(&argv[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("http client: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args = match parse(argv.into_iter()) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compare: {e}");
            ExitCode::FAILURE
        }
    }
}

fn throughput(r: &Run) -> Option<f64> {
    Some(r.throughput())
}

fn cpu_throughput(r: &Run) -> Option<f64> {
    r.cpu_throughput()
}

/// Allocations per event over every measured run, by engine.
fn allocs_per_event(m: &Measured) -> Vec<(Engine, f64)> {
    m.runs
        .iter()
        .map(|(e, runs)| {
            let allocs: u64 = runs.iter().map(|r| r.allocs).sum();
            let events: u64 = runs.iter().map(|r| r.events).sum();
            (*e, allocs as f64 / events.max(1) as f64)
        })
        .collect()
}

/// Splits the hand-driven reactor runs (`Engine::TallyReactor`) off `m`
/// into an entry of their own, `"<name> reactor-only"`, where they stand as
/// `tally` next to the same peer runs, and the same code on epoll
/// (`Engine::TallyReactorEpoll`) stands there as `tally-epoll`.
/// `tally-epoll` runs the executor, and `tokio-on-tally` is a tokio ratio,
/// so both stay in the main entry only.
fn split_reactor(m: &Measured) -> (Measured, Option<Measured>) {
    let mut main = m.clone();
    let raw_epoll = main.runs.remove(&Engine::TallyReactorEpoll);
    let Some(raw) = main.runs.remove(&Engine::TallyReactor) else { return (main, None) };
    let mut alone = main.clone();
    alone.name = format!("{} reactor-only", m.name);
    alone.runs.insert(Engine::Tally, raw);
    alone.runs.remove(&Engine::TallyEpoll);
    alone.runs.remove(&Engine::TokioOnTally);
    if let Some(runs) = raw_epoll {
        alone.runs.insert(Engine::TallyEpoll, runs);
    }
    (main, Some(alone))
}

fn run(args: &Args) -> std::io::Result<()> {
    let fd_limit = sys::raise_fd_limit();
    let cfg = Config { quick: args.quick, fd_limit };
    let mut bench = Bench::new(cfg.reps());
    if let Some(engines) = &args.engines {
        bench.only_engines(engines.clone());
    }
    let mut workloads = Vec::new();
    let mut allocs = Allocs::new();
    let mut absent = Vec::new();
    if !alloc::is_counting() {
        bench.notes.push("the counting allocator is not installed: allocations read 0".into());
    }

    let record = |m: &Measured, workloads: &mut Vec<WorkloadResult>, allocs: &mut Allocs| {
        let (main, alone) = split_reactor(m);
        for m in std::iter::once(&main).chain(&alone) {
            for (e, a) in allocs_per_event(m) {
                // Peers appear in both entries: count them once.
                if m.name == main.name || e == Engine::Tally {
                    allocs.entry(e).or_default().push((m.name.clone(), a));
                }
            }
            workloads.push(WorkloadResult::summarize(m, &m.name, m.unit, throughput));
        }
    };

    if args.wants("W0") {
        let m = bench.measure(nop::spec(cfg));
        record(&m, &mut workloads, &mut allocs);
    }
    if args.wants("W1") {
        let m = bench.measure(signal_flood::spec(cfg));
        record(&m, &mut workloads, &mut allocs);
        workloads.push(WorkloadResult::summarize(
            &m,
            "W1 signal_flood consumer-cpu",
            "events/cpu-s",
            cpu_throughput,
        ));
    }
    if args.wants("W2") {
        let m = bench.measure(fan_in::spec(cfg));
        record(&m, &mut workloads, &mut allocs);
    }
    if args.wants("W3") {
        let m = bench.measure(pingpong::spec(cfg));
        record(&m, &mut workloads, &mut allocs);
    }
    if args.wants("W3M") {
        let m = bench.measure(pingpong_many::spec(cfg));
        record(&m, &mut workloads, &mut allocs);
    }
    if args.wants("W4") {
        let m = bench.measure(echo::spec(cfg));
        record(&m, &mut workloads, &mut allocs);
        let (main, alone) = split_reactor(&m);
        for m in std::iter::once(&main).chain(&alone) {
            let name = format!("{} server-cpu", m.name);
            workloads.push(WorkloadResult::summarize(m, &name, "msgs/cpu-s", cpu_throughput));
        }
    }
    if args.wants("W4MT") {
        let splits = echo_mt::Splits::default();
        let m = bench.measure(echo_mt::spec(cfg, &splits));
        record(&m, &mut workloads, &mut allocs);
        let name = format!("{} server-cpu", m.name);
        workloads.push(WorkloadResult::summarize(&m, &name, "msgs/cpu-s", cpu_throughput));
        bench.notes.extend(splits.note(&m.name));
    }
    if args.wants("W5") {
        for pattern in [churn::Pattern::Fresh, churn::Pattern::Random, churn::Pattern::Fd] {
            let (specs, missing) = churn::specs(cfg, pattern);
            absent.extend(missing);
            let measured: Vec<Measured> = specs.into_iter().map(|s| bench.measure(s)).collect();
            for m in &measured {
                record(m, &mut workloads, &mut allocs);
            }
            // ratios["1M/1k"]: tally at 1M over tally at 1k, repetition by
            // repetition, on every entry of a pattern that reaches 1M.
            if pattern.sizes().last().map(|&(_, l)| l) != Some("1M") {
                continue;
            }
            let tally = |m: &Measured| -> Vec<f64> {
                m.runs
                    .get(&Engine::Tally)
                    .map_or(Vec::new(), |r| r.iter().map(Run::throughput).collect())
            };
            if let (Some(small), Some(big)) = (measured.first(), measured.last()) {
                if let Some(s) = pairwise(&tally(big), &tally(small)) {
                    let n = workloads.len();
                    for w in &mut workloads[n - measured.len()..] {
                        w.ratios.push(("1M/1k".into(), s));
                    }
                }
            }
        }
    }
    if args.wants("W6") {
        let m = bench.measure(timers::spec(cfg));
        for (e, a) in allocs_per_event(&m) {
            allocs.entry(e).or_default().push((m.name.clone(), a));
        }
        workloads.push(WorkloadResult::summarize(&m, &m.name, m.unit, cpu_throughput));
    }
    if args.wants("W7") {
        let m = bench.measure(http::spec(cfg));
        record(&m, &mut workloads, &mut allocs);
        let name = format!("{} server-cpu", m.name);
        workloads.push(WorkloadResult::summarize(&m, &name, "reqs/cpu-s", cpu_throughput));
    }
    if args.wants("W8") {
        let m = bench.measure(file::spec(cfg));
        record(&m, &mut workloads, &mut allocs);
    }
    let mut bytes = BTreeMap::new();
    if args.wants("MEM") {
        bench.progress("bytes per idle registration (N = 100k)");
        let (fps, notes) = footprint::run(fd_limit);
        bytes.extend(fps);
        bench.notes.extend(notes);
    }
    bench.finish_progress();

    let report = Report {
        machine: Machine::detect(),
        mode: if args.quick { "quick" } else { "full" },
        reps: cfg.reps(),
        date: utc_date(),
        fd_limit,
        duration: bench.elapsed(),
        workloads,
        alloc_per_event: allocs,
        bytes_per_registration: bytes,
        absent,
        notes: std::mem::take(&mut bench.notes),
    };
    print!("{}", report.table());
    if let Some(path) = &args.json {
        create_parent(path)?;
        std::fs::write(path, report.json())
            .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        create_parent(path)?;
        plot::draw(path, &report)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Creates the folder an output file goes in, so that `--json out/x.json`
/// works on a fresh clone.
fn create_parent(path: &std::path::Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", dir.display()))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn tally_epoll_stays_out_of_the_reactor_only_entry() {
        let run = Run { events: 1, elapsed: Duration::from_secs(1), allocs: 0, cpu: None };
        let m = Measured {
            name: "W3 pingpong".into(),
            unit: "msgs/s",
            runs: [Engine::Tally, Engine::TallyEpoll, Engine::TallyReactor, Engine::Mio]
                .into_iter()
                .map(|e| (e, vec![run]))
                .collect(),
        };
        let (main, alone) = split_reactor(&m);
        let main_engines: Vec<Engine> = main.runs.keys().copied().collect();
        assert_eq!(main_engines, [Engine::Tally, Engine::TallyEpoll, Engine::Mio]);
        let alone = alone.unwrap();
        assert_eq!(alone.name, "W3 pingpong reactor-only");
        let alone_engines: Vec<Engine> = alone.runs.keys().copied().collect();
        assert_eq!(alone_engines, [Engine::Tally, Engine::Mio]);
    }

    #[test]
    fn the_reactor_on_epoll_stands_as_tally_epoll_in_the_reactor_only_entry() {
        let run = |events| Run { events, elapsed: Duration::from_secs(1), allocs: 0, cpu: None };
        let m = Measured {
            name: "W3 pingpong".into(),
            unit: "msgs/s",
            runs: [
                (Engine::Tally, 1),
                (Engine::TallyEpoll, 2),
                (Engine::TallyReactor, 3),
                (Engine::TallyReactorEpoll, 4),
                (Engine::Mio, 5),
            ]
            .into_iter()
            .map(|(e, n)| (e, vec![run(n)]))
            .collect(),
        };
        let (main, alone) = split_reactor(&m);
        let main_runs: Vec<(Engine, u64)> =
            main.runs.iter().map(|(e, r)| (*e, r[0].events)).collect();
        assert_eq!(main_runs, [(Engine::Tally, 1), (Engine::TallyEpoll, 2), (Engine::Mio, 5)]);
        let alone = alone.unwrap();
        let alone_runs: Vec<(Engine, u64)> =
            alone.runs.iter().map(|(e, r)| (*e, r[0].events)).collect();
        assert_eq!(alone_runs, [(Engine::Tally, 3), (Engine::TallyEpoll, 4), (Engine::Mio, 5)]);
    }

    #[test]
    fn only_w3m_selects_w3_many_alone() {
        let args = parse(["--only", "w3m,W5"].into_iter().map(String::from)).unwrap();
        assert!(args.wants("W3M"));
        assert!(args.wants("W5"));
        assert!(!args.wants("W3"));
    }

    #[test]
    fn only_w4mt_selects_w4_two_workers_alone() {
        let args = parse(["--only", "w4mt"].into_iter().map(String::from)).unwrap();
        assert!(args.wants("W4MT"));
        assert!(!args.wants("W4"));
        let args = parse(["--only", "W4"].into_iter().map(String::from)).unwrap();
        assert!(!args.wants("W4MT"));
    }
}
