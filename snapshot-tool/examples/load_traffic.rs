//! Traffic loads for `scripts/bench-recorder.sh`: what the per-call
//! tracepoints cost the traced programs and the recorder.
//!
//! ```text
//! load_traffic sends RATE SOCKETS SECONDS   # RATE 0: as fast as possible
//! load_traffic sink ADDR:PORT SECONDS       # accept and read everything
//! load_traffic bulk ADDR:PORT STREAMS SECONDS
//! ```
//!
//! `sends` opens SOCKETS TCP connections (TCP_NODELAY) to a reader in the
//! same process on 127.0.0.1 and sends 64-byte messages round-robin, paced
//! to RATE per second in total; `bulk` writes 128 KiB buffers on STREAMS
//! connections to a `sink` as fast as it can. Each prints one line:
//! `sends/s N` or `MB/s N`, then the process's CPU time (user + system,
//! both ends of the loopback sockets for `sends`) per unit of work: what
//! the kernel-side cost of tracing adds to the traced program, less
//! sensitive to other loads on the host than the rate.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!("usage: load_traffic sends RATE SOCKETS SECONDS | sink ADDR:PORT SECONDS | bulk ADDR:PORT STREAMS SECONDS");
    std::process::exit(2)
}

fn arg<T: std::str::FromStr>(a: &[String], i: usize) -> T {
    a.get(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| usage())
}

/// Accepts connections on `l` and reads each to its end in its own thread.
fn serve(l: TcpListener) {
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { break };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 128 * 1024];
                while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("sends") => {
            let rate: f64 = arg(&a, 2);
            let n: usize = arg(&a, 3);
            let secs: f64 = arg(&a, 4);
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = l.local_addr().expect("addr");
            serve(l);
            let mut socks: Vec<TcpStream> = (0..n.max(1))
                .map(|_| {
                    let s = TcpStream::connect(addr).expect("connect");
                    s.set_nodelay(true).expect("nodelay");
                    s
                })
                .collect();
            let msg = [b'm'; 64];
            let t0 = Instant::now();
            let end = Duration::from_secs_f64(secs);
            let mut sent: u64 = 0;
            let mut i = 0;
            loop {
                let el = t0.elapsed();
                if el >= end {
                    break;
                }
                // Catch up to the rate, in batches of at most 1 000.
                let due = if rate > 0.0 {
                    ((el.as_secs_f64() * rate) as u64).saturating_sub(sent)
                } else {
                    1000
                };
                if due == 0 {
                    std::thread::sleep(Duration::from_micros(500));
                    continue;
                }
                for _ in 0..due.min(1000) {
                    let k = i % socks.len();
                    socks[k].write_all(&msg).expect("send");
                    i += 1;
                    sent += 1;
                }
            }
            println!(
                "sends/s {:.0}, CPU ns/send {:.0}",
                sent as f64 / t0.elapsed().as_secs_f64(),
                procflow_snap::sys::self_cpu_ns() as f64 / sent.max(1) as f64
            );
        }
        Some("sink") => {
            let addr: SocketAddr = arg(&a, 2);
            let secs: f64 = arg(&a, 3);
            serve(TcpListener::bind(addr).expect("bind"));
            std::thread::sleep(Duration::from_secs_f64(secs));
        }
        Some("bulk") => {
            let addr: SocketAddr = arg(&a, 2);
            let n: usize = arg(&a, 3);
            let secs: f64 = arg(&a, 4);
            let t0 = Instant::now();
            let end = Duration::from_secs_f64(secs);
            let threads: Vec<_> = (0..n.max(1))
                .map(|_| {
                    std::thread::spawn(move || {
                        let mut s = TcpStream::connect(addr).expect("connect");
                        let buf = vec![b'b'; 128 * 1024];
                        let mut bytes = 0u64;
                        while t0.elapsed() < end {
                            s.write_all(&buf).expect("write");
                            bytes += buf.len() as u64;
                        }
                        bytes
                    })
                })
                .collect();
            let total: u64 = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
            println!(
                "MB/s {:.1}, CPU ns/KB {:.0}",
                total as f64 / t0.elapsed().as_secs_f64() / 1e6,
                procflow_snap::sys::self_cpu_ns() as f64 / (total.max(1) as f64 / 1000.0)
            );
        }
        _ => usage(),
    }
}
