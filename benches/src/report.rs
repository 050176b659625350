//! Summaries of measured runs, the stdout table, and the JSON file.
//!
//! The JSON schema is fixed by the benchmarks issue:
//!
//! ```text
//! { "machine": {"cpu", "cores", "kernel"},
//!   "workloads": [ {"name", "unit", "higher_is_better",
//!                   "results": {engine: {"median", "min", "max"}},
//!                   "ratios": {"tally/mio": x, "tally-epoll/mio": y, ...}} ],
//!   "alloc_per_event": {engine: {workload: allocations per event}},
//!   "bytes_per_registration": {engine: heap bytes per idle registration} }
//! ```
//!
//! Every result is a throughput, so `higher_is_better` is always true, and
//! every ratio is a tally engine's throughput over a peer's: the median of
//! the ratios of repetition `i` of the one to repetition `i` of the other.
//! Which pairs are reported is [`reports_ratio`]: `tally` over every other
//! engine but `tally-epoll` and `tokio-on-tally`, `tally-epoll` over the
//! readiness-based peers, mio and tokio, and `tokio-on-tally` over tokio.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::harness::{Engine, Measured, Run};
use crate::sys::Machine;

/// Median, minimum and maximum of a set of samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    /// The median (the mean of the middle two for an even count).
    pub median: f64,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
}

impl Stat {
    /// The statistics of `values`, or `None` if there are none.
    pub fn of(values: &[f64]) -> Option<Stat> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some(Stat { median, min: v[0], max: v[n - 1] })
    }
}

/// One workload's summary: a throughput per engine and tally's ratios.
#[derive(Clone, Debug)]
pub struct WorkloadResult {
    /// `W<n> <name>`.
    pub name: String,
    /// The throughput's unit.
    pub unit: String,
    /// Throughput by engine.
    pub results: BTreeMap<Engine, Stat>,
    /// `"tally/<peer>"`, `"tally-epoll/<peer>"` (and, for W5, `"1M/1k"`),
    /// over pairs of repetitions, `tally`'s first ([`NUMERATORS`]).
    pub ratios: Vec<(String, Stat)>,
}

/// The engines whose throughput is a ratio's numerator, in report order.
pub const NUMERATORS: [Engine; 3] = [Engine::Tally, Engine::TallyEpoll, Engine::TokioOnTally];

/// Whether the ratio `numerator/peer` is reported: `tally` over every other
/// engine but `tally-epoll` and `tokio-on-tally`, `tally-epoll` over mio
/// and tokio, and `tokio-on-tally` over tokio (the same program on real
/// mio).
pub fn reports_ratio(numerator: Engine, peer: Engine) -> bool {
    match numerator {
        Engine::Tally => !matches!(peer, Engine::Tally | Engine::TallyEpoll | Engine::TokioOnTally),
        Engine::TallyEpoll => matches!(peer, Engine::Mio | Engine::Tokio),
        Engine::TokioOnTally => peer == Engine::Tokio,
        _ => false,
    }
}

impl WorkloadResult {
    /// Summarises `m` with `metric` (a throughput) per run, pairing each
    /// [`NUMERATORS`] engine's repetition `i` with repetition `i` of each
    /// peer that [`reports_ratio`] names, for the ratios.
    pub fn summarize(
        m: &Measured,
        name: &str,
        unit: &str,
        metric: fn(&Run) -> Option<f64>,
    ) -> Self {
        let values: BTreeMap<Engine, Vec<f64>> = m
            .runs
            .iter()
            .map(|(e, runs)| (*e, runs.iter().filter_map(metric).collect::<Vec<f64>>()))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        let results = values.iter().filter_map(|(e, v)| Some((*e, Stat::of(v)?))).collect();
        let mut ratios = Vec::new();
        for engine in NUMERATORS {
            let Some(ours) = values.get(&engine) else { continue };
            for (peer, v) in values.iter().filter(|(e, _)| reports_ratio(engine, **e)) {
                if let Some(s) = pairwise(ours, v) {
                    ratios.push((format!("{engine}/{peer}"), s));
                }
            }
        }
        WorkloadResult { name: name.into(), unit: unit.into(), results, ratios }
    }

    /// Whether the table and the chart show ratio `key`: the W5 size ratio
    /// `1M/1k`, which the JSON repeats on each W5 entry, is shown on the 1M
    /// entry only.
    pub fn shows_ratio(&self, key: &str) -> bool {
        key != "1M/1k" || self.name.ends_with(" 1M")
    }

    /// The median ratio under `key`, if reported.
    pub fn ratio(&self, key: &str) -> Option<f64> {
        self.ratios.iter().find(|(k, _)| k == key).map(|(_, s)| s.median)
    }
}

/// The statistics of `a[i] / b[i]` over the repetitions both have.
pub fn pairwise(a: &[f64], b: &[f64]) -> Option<Stat> {
    let r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    Stat::of(&r)
}

/// Heap (and, where readable, kernel slab) bytes per idle registration.
#[derive(Clone, Debug)]
pub struct Footprint {
    /// Registrations measured.
    pub n: usize,
    /// Heap bytes per registration (live-bytes delta / n).
    pub heap: f64,
    /// Kernel slab bytes per registration (`/proc/meminfo` Slab delta / n).
    pub kernel: Option<f64>,
    /// What one registration is, for this engine.
    pub what: String,
}

/// The targets of the benchmarks issue: (workload, ratio key, minimum).
pub const TARGETS: &[(&str, &str, f64)] = &[
    // Issue 11 (performance) raised W0 from the benches issue's 0.67.
    ("W0 nop", "tally/io-uring", 0.75),
    ("W1 signal_flood", "tally/tokio", 1.2),
    ("W1 signal_flood consumer-cpu", "tally/tokio", 1.0),
    ("W1 signal_flood", "tally/mio", 10.0),
    ("W1 signal_flood", "tally-epoll/mio", 10.0),
    ("W2 fan_in", "tally/mio", 2.0),
    ("W3 pingpong", "tally/mio", 1.2),
    ("W3 pingpong", "tally/tokio", 1.3),
    ("W3 pingpong", "tally-epoll/mio", 0.95),
    ("W3-many pingpong", "tally/mio", 1.5),
    ("W3-many pingpong", "tally/tokio", 1.5),
    ("W4 echo", "tally/tokio", 1.3),
    ("W4 echo", "tally/monoio", 1.0),
    ("W4 echo server-cpu", "tally/tokio", 1.3),
    ("W4 echo server-cpu", "tally/monoio", 1.1),
    ("W4 echo 2-workers", "tally/tokio", 1.2),
    ("W4 echo 2-workers", "tally/monoio", 1.0),
    ("W4 echo 2-workers server-cpu", "tally/tokio", 1.2),
    ("W3 pingpong", "tokio-on-tally/tokio", 1.0),
    ("W4 echo", "tokio-on-tally/tokio", 1.0),
    ("W7 http", "tally/tokio", 1.2),
    ("W7 http server-cpu", "tally/tokio", 1.2),
    ("W5 churn (fd-less) 1M", "1M/1k", 0.77),
    ("W5 churn-random 1M", "1M/1k", 0.5),
    ("W5 churn-fd 1k", "tally/mio", 1.0),
    ("W5 churn-fd 10k", "tally/mio", 1.0),
    ("W8 file", "tally/tokio", 3.0),
    ("W8 file", "tally/pread", 1.0),
];

/// Everything a run of `compare` found.
#[derive(Clone, Debug)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// `quick` or `full`.
    pub mode: &'static str,
    /// Repetitions per case.
    pub reps: usize,
    /// The UTC date, `YYYY-MM-DD`.
    pub date: String,
    /// The soft fd limit in force.
    pub fd_limit: u64,
    /// Wall-clock time of the whole run.
    pub duration: Duration,
    /// One entry per workload (and per W5 size).
    pub workloads: Vec<WorkloadResult>,
    /// Allocations per event, by engine, then by workload.
    pub alloc_per_event: BTreeMap<Engine, Vec<(String, f64)>>,
    /// Bytes per idle registration, by engine.
    pub bytes_per_registration: BTreeMap<Engine, Footprint>,
    /// Engines or workload sides not run, and why.
    pub absent: Vec<String>,
    /// Failures and caveats met while running.
    pub notes: Vec<String>,
}

/// `1234567.0` as `1.23M`.
pub fn si(x: f64) -> String {
    let (v, suffix) = match x.abs() {
        a if a >= 1e9 => (x / 1e9, "G"),
        a if a >= 1e6 => (x / 1e6, "M"),
        a if a >= 1e3 => (x / 1e3, "k"),
        _ => (x, ""),
    };
    if v.abs() >= 100.0 {
        format!("{v:.0}{suffix}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}{suffix}")
    } else {
        format!("{v:.2}{suffix}")
    }
}

fn ratio_str(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

impl Report {
    /// The readable table printed on stdout.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "tally compare ({} run, {} reps, {}): {}, {} cores, Linux {}, fd limit {}",
            self.mode, self.reps, self.date, m.cpu, m.cores, m.kernel, self.fd_limit
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<36} {:<11} {:>10} {:>24}  {:>12}",
            "workload", "engine", "median", "min-max", "allocs/event"
        );
        let _ = writeln!(out, "{}", "-".repeat(99));
        for w in &self.workloads {
            let mut first = true;
            for (engine, s) in &w.results {
                let allocs = self
                    .alloc_per_event
                    .get(engine)
                    .and_then(|v| v.iter().find(|(n, _)| *n == w.name))
                    .map_or_else(|| "-".to_string(), |(_, a)| format!("{a:.3}"));
                let label = if first { w.name.as_str() } else { "" };
                let _ = writeln!(
                    out,
                    "{label:<36} {:<11} {:>10} {:>24}  {allocs:>12}",
                    engine.name(),
                    si(s.median),
                    format!("{}-{} {}", si(s.min), si(s.max), w.unit),
                );
                first = false;
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<36} {:<20} {:>7} {:>15}  {:<16}",
            "ratio (throughput)", "", "median", "min-max", "target"
        );
        let _ = writeln!(out, "{}", "-".repeat(102));
        for w in &self.workloads {
            let mut first = true;
            for (key, s) in w.ratios.iter().filter(|(k, _)| w.shows_ratio(k)) {
                let target = TARGETS.iter().find(|(n, k, _)| *n == w.name && k == key).map_or(
                    String::new(),
                    |(_, _, t)| {
                        let verdict = if s.median >= *t { "met" } else { "MISSED" };
                        format!(">= {t} {verdict}")
                    },
                );
                let label = if first { w.name.as_str() } else { "" };
                let _ = writeln!(
                    out,
                    "{label:<36} {key:<20} {:>7} {:>15}  {target:<16}",
                    ratio_str(s.median),
                    format!("{}-{}", ratio_str(s.min), ratio_str(s.max)),
                );
                first = false;
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "bytes per idle registration:");
        for (engine, f) in &self.bytes_per_registration {
            let kernel = f.kernel.map_or(String::new(), |k| format!(", kernel slab ~{k:.0} B"));
            let _ = writeln!(
                out,
                "  {:<14} heap {:>7.1} B{kernel}  (N = {}: {})",
                engine.name(),
                f.heap,
                si(f.n as f64),
                f.what
            );
        }
        if !self.absent.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "not measured:");
            for a in &self.absent {
                let _ = writeln!(out, "  - {a}");
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "notes:");
            for n in &self.notes {
                let _ = writeln!(out, "  - {n}");
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "total time {:.1}s", self.duration.as_secs_f64());
        out
    }

    /// The JSON document, in the issue's schema.
    pub fn json(&self) -> String {
        let mut o = String::from("{\n");
        let m = &self.machine;
        let _ = writeln!(
            o,
            "  \"machine\": {{\"cpu\": {}, \"cores\": {}, \"kernel\": {}}},",
            json_str(&m.cpu),
            m.cores,
            json_str(&m.kernel)
        );
        o.push_str("  \"workloads\": [\n");
        for (i, w) in self.workloads.iter().enumerate() {
            let results: Vec<String> = w
                .results
                .iter()
                .map(|(e, s)| {
                    format!(
                        "{}: {{\"median\": {}, \"min\": {}, \"max\": {}}}",
                        json_str(e.name()),
                        json_num(s.median),
                        json_num(s.min),
                        json_num(s.max)
                    )
                })
                .collect();
            let ratios: Vec<String> = w
                .ratios
                .iter()
                .map(|(k, s)| format!("{}: {}", json_str(k), json_num(s.median)))
                .collect();
            let comma = if i + 1 < self.workloads.len() { "," } else { "" };
            let _ = writeln!(
                o,
                "    {{\"name\": {}, \"unit\": {}, \"higher_is_better\": true, \"results\": {{{}}}, \"ratios\": {{{}}}}}{comma}",
                json_str(&w.name),
                json_str(&w.unit),
                results.join(", "),
                ratios.join(", ")
            );
        }
        o.push_str("  ],\n");
        let allocs: Vec<String> = self
            .alloc_per_event
            .iter()
            .map(|(e, v)| {
                let inner: Vec<String> =
                    v.iter().map(|(n, a)| format!("{}: {}", json_str(n), json_num(*a))).collect();
                format!("{}: {{{}}}", json_str(e.name()), inner.join(", "))
            })
            .collect();
        let _ = writeln!(o, "  \"alloc_per_event\": {{{}}},", allocs.join(", "));
        let bytes: Vec<String> = self
            .bytes_per_registration
            .iter()
            .map(|(e, f)| format!("{}: {}", json_str(e.name()), json_num(f.heap)))
            .collect();
        let _ = writeln!(o, "  \"bytes_per_registration\": {{{}}}", bytes.join(", "));
        o.push_str("}\n");
        o
    }
}

fn json_num(x: f64) -> String {
    if x.is_finite() { format!("{x}") } else { "null".into() }
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Today's UTC date as `YYYY-MM-DD` (civil-from-days, no time zone data).
pub fn utc_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(Stat::of(&[3.0, 1.0, 2.0]).unwrap().median, 2.0);
        assert_eq!(Stat::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert!(Stat::of(&[]).is_none());
    }

    /// A measurement where `engine`'s every run did `per_sec` events in one
    /// second.
    fn measured(engines: &[(Engine, f64)]) -> Measured {
        let run = |per_sec: f64| Run {
            events: per_sec as u64,
            elapsed: Duration::from_secs(1),
            allocs: 0,
            cpu: None,
        };
        Measured {
            name: "W3 pingpong".into(),
            unit: "msgs/s",
            runs: engines.iter().map(|&(e, x)| (e, vec![run(x); 3])).collect(),
        }
    }

    #[test]
    fn tally_epoll_is_paired_with_mio_and_tokio_only() {
        let m = measured(&[
            (Engine::Tally, 300.0),
            (Engine::TallyEpoll, 200.0),
            (Engine::Mio, 100.0),
            (Engine::Tokio, 400.0),
            (Engine::Monoio, 250.0),
        ]);
        let w = WorkloadResult::summarize(&m, &m.name, m.unit, |r| Some(r.throughput()));
        let keys: Vec<&str> = w.ratios.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["tally/mio", "tally/tokio", "tally/monoio", "tally-epoll/mio", "tally-epoll/tokio"]
        );
        assert_eq!(w.ratio("tally-epoll/mio"), Some(2.0));
        assert_eq!(w.ratio("tally-epoll/tokio"), Some(0.5));
        assert_eq!(w.ratio("tally/tally-epoll"), None);
    }

    #[test]
    fn without_tally_epoll_runs_there_are_no_tally_epoll_ratios() {
        let m = measured(&[(Engine::Tally, 300.0), (Engine::Mio, 100.0)]);
        let w = WorkloadResult::summarize(&m, &m.name, m.unit, |r| Some(r.throughput()));
        let keys: Vec<&str> = w.ratios.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["tally/mio"]);
    }

    #[test]
    fn the_table_shows_tally_epoll_rows_with_their_targets() {
        let m =
            measured(&[(Engine::Tally, 300.0), (Engine::TallyEpoll, 90.0), (Engine::Mio, 100.0)]);
        let w = WorkloadResult::summarize(&m, &m.name, m.unit, |r| Some(r.throughput()));
        let report = Report {
            machine: Machine { cpu: "cpu".into(), cores: 2, kernel: "6.0".into() },
            mode: "quick",
            reps: 3,
            date: "2026-01-01".into(),
            fd_limit: 1024,
            duration: Duration::from_secs(1),
            workloads: vec![w],
            alloc_per_event: BTreeMap::from([(
                Engine::TallyEpoll,
                vec![("W3 pingpong".to_string(), 0.5)],
            )]),
            bytes_per_registration: BTreeMap::new(),
            absent: Vec::new(),
            notes: Vec::new(),
        };
        let table = report.table();
        let row = |key: &str| table.lines().find(|l| l.contains(key)).unwrap_or("").to_string();
        assert!(row("tally-epoll/mio").contains(">= 0.95 MISSED"), "{table}");
        assert!(row("tally/mio").contains(">= 1.2 met"), "{table}");
        assert!(row(" tally-epoll ").contains("0.500"), "{table}");
        assert!(report.json().contains("\"tally-epoll/mio\": 0.9"), "{}", report.json());
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
