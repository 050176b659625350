//! Registers a source while another thread raises signals at it, and prints
//! each packet list with its counts: a flood of raises arrives as a few
//! packets whose counts add up.

use std::time::Duration;

use tally::{LocalReactor, PacketKind, Signals};

fn main() -> std::io::Result<()> {
    let rt = LocalReactor::new()?;
    let m = rt.metrics();
    match m.fallback {
        Some(why) => println!("backend: {} ({why})", m.backend),
        None => println!("backend: {}", m.backend),
    }
    let reg = rt.register();
    let signaler = reg.signaler();
    const RAISES: u32 = 1_000_000;
    let producer = std::thread::spawn(move || {
        for i in 0..RAISES {
            let bits = if i % 2 == 0 { Signals::user(0) } else { Signals::user(1) };
            let _ = signaler.raise(bits, 1).expect("registration alive");
        }
    });
    let (lists, packets, total) = rt.block_on(async {
        let (mut lists, mut packets, mut total) = (0u32, 0u32, 0u64);
        while total < u64::from(RAISES) {
            let list = reg.packets().await;
            lists += 1;
            for p in &list {
                packets += 1;
                if let PacketKind::Signal(s) = p.kind() {
                    total += u64::from(s.count.get());
                    if lists <= 5 || total == u64::from(RAISES) {
                        println!("list {lists}: {:?} count {}", s.observed, s.count);
                    }
                }
            }
            // Let the producer run ahead so that raises coalesce.
            tally::time::sleep(Duration::from_micros(200)).await;
        }
        (lists, packets, total)
    });
    producer.join().expect("producer");
    let m = rt.metrics();
    println!(
        "{total} raises arrived in {packets} packets over {lists} lists; \
         {} kernel wake-ups, {} coalesced raises",
        m.kernel_wakes, m.coalesced_raises
    );
    Ok(())
}
