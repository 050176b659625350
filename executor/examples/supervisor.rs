//! A process supervisor: spawns a few children, watches them all from one
//! registration, and prints each exit as its packet arrives, with the
//! time since the start. A child that exits with an error is restarted
//! once.
//!
//! ```text
//! cargo run -p tally --example supervisor
//! ```

use std::time::{Duration, Instant};

use tally::LocalReactor;
use tally::process::{Child, Command, ExitPacket};

/// What to run: a name and a shell command line.
const CHILDREN: [(&str, &str); 4] = [
    ("sleeper", "sleep 0.1"),
    ("failing", "false"),
    ("exit-3", "exit 3"),
    ("slow", "sleep 0.3; echo slow done >&2"),
];

fn spawn(line: &str) -> std::io::Result<Child> {
    Command::new("sh").args(["-c", line]).kill_on_drop(true).spawn()
}

fn main() -> std::io::Result<()> {
    let rt = LocalReactor::new()?;
    let m = rt.metrics();
    match m.fallback {
        Some(why) => println!("backend: {} ({why})", m.backend),
        None => println!("backend: {}", m.backend),
    }
    let reg = rt.register();
    rt.block_on(async {
        let start = Instant::now();
        // The key of each watch is the child's index in this table.
        let mut children = Vec::new();
        let mut restarted = [false; CHILDREN.len()];
        for (key, (name, line)) in CHILDREN.iter().enumerate() {
            let child = spawn(line)?;
            println!("spawned {name:8} pid {:6}: sh -c {line:?}", child.id().unwrap_or(0));
            child.watch(&reg, key as u64)?;
            children.push(child);
        }
        let mut running = CHILDREN.len();
        let deadline = start + Duration::from_secs(10);
        while running > 0 && Instant::now() < deadline {
            let Ok(packets) = tally::time::timeout(Duration::from_secs(10), reg.packets()).await
            else {
                break;
            };
            for packet in packets {
                let Some(exit) = ExitPacket::from_packet(&packet) else { continue };
                let key = exit.key as usize;
                let (name, line) = CHILDREN[key];
                let status = match exit.status {
                    Some(status) => status.to_string(),
                    None => "status lost (reaped elsewhere)".to_string(),
                };
                println!("{:>7.1?}  {name:8} pid {:6} exited: {status}", start.elapsed(), exit.pid);
                running -= 1;
                let failed = !exit.status.is_some_and(|s| s.success());
                if failed && !restarted[key] {
                    restarted[key] = true;
                    let child = spawn(line)?;
                    println!("          restarting {name} once, pid {}", child.id().unwrap_or(0));
                    child.watch(&reg, key as u64)?;
                    children[key] = child;
                    running += 1;
                }
            }
        }
        println!("all done after {:?}", start.elapsed());
        Ok::<_, std::io::Error>(())
    })?;
    let m = rt.metrics();
    println!("reactor: {} turns, {} kernel entries", m.turns, m.enters);
    Ok(())
}
