//! Counts Ctrl-C presses; the third one exits. SIGTERM exits at once.
//!
//! With `--self-test`, it sends itself SIGINT three times instead of waiting
//! for a keyboard.

use tally::{LocalReactor, PacketKind};

fn main() -> std::io::Result<()> {
    // Block before any thread exists, so no thread takes the default action.
    tally::signal::block(&[libc::SIGINT, libc::SIGTERM])?;
    let self_test = std::env::args().any(|a| a == "--self-test");
    let rt = LocalReactor::new()?;
    let m = rt.metrics();
    match m.fallback {
        Some(why) => println!("backend: {} ({why})", m.backend),
        None => println!("backend: {}", m.backend),
    }
    rt.block_on(async {
        let mut sigs = tally::signal::signals(&[libc::SIGINT, libc::SIGTERM])?;
        println!("press Ctrl-C three times (pid {})", std::process::id());
        let mut presses = 0;
        loop {
            if self_test {
                // SAFETY: kill(2) with our own pid and a valid signal number.
                unsafe { libc::kill(libc::getpid(), libc::SIGINT) };
            }
            for p in sigs.recv().await? {
                let PacketKind::ProcessSignal(s) = p.kind() else { continue };
                if s.signo == libc::SIGTERM {
                    println!("SIGTERM: bye");
                    return Ok(());
                }
                presses += s.count.get();
                println!("Ctrl-C x{} (total {presses})", s.count);
            }
            if presses >= 3 {
                println!("three presses: bye");
                return Ok(());
            }
        }
    })
}
