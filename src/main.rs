//! The `procflow` command line.

fn main() {
    eprintln!("procflow: no command implemented yet");
    std::process::exit(2);
}
