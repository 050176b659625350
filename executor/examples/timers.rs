//! Sleeps, a timeout, an interval, and many timers sharing one kernel
//! timeout per crank.

use std::time::{Duration, Instant};

use tally::LocalReactor;
use tally::time::{interval, sleep, timeout};

fn main() -> std::io::Result<()> {
    let rt = LocalReactor::new()?;
    let m = rt.metrics();
    match m.fallback {
        Some(why) => println!("backend: {} ({why})", m.backend),
        None => println!("backend: {}", m.backend),
    }
    rt.block_on(async {
        let start = Instant::now();
        sleep(Duration::from_millis(20)).await;
        println!("slept 20 ms: {:?} passed", start.elapsed());

        let r = timeout(Duration::from_millis(10), sleep(Duration::from_secs(5))).await;
        println!("a 5 s sleep under a 10 ms timeout: {r:?}");

        let mut tick = interval(Duration::from_millis(5));
        for i in 0..4 {
            let at = tick.tick().await;
            println!("tick {i} scheduled {:?} after start", at - start);
        }

        let t = Instant::now();
        let handles: Vec<_> = (0..10_000u64)
            .map(|i| tally::spawn(sleep(Duration::from_millis(1 + i % 50))))
            .collect();
        for h in handles {
            h.await.expect("timer task");
        }
        println!("10,000 timers (1..50 ms) all fired after {:?}", t.elapsed());
    });
    let m = rt.metrics();
    println!("reactor: {} turns, {} kernel entries", m.turns, m.enters);
    Ok(())
}
