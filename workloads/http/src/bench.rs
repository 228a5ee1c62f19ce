//! What the load benchmarks share (`voice-agent bench calls` for the
//! runtime, `bench gateway-media` for the gateway): the system under test as
//! a child process of the bench, pinned to a CPU of its own so its CPU time
//! and memory are its alone, and what Linux's `/proc` says about a process.
//!
//! The child is the same binary run with a hidden subcommand; it prints its
//! listen address as the first line on stdout ([`announce`]) and stops when
//! its stdin closes ([`stdin_closed`]), so it never outlives the bench.

use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// `USER_HZ`: clock ticks per second in `/proc/<pid>/stat` (ABI: 100 on
/// every Linux architecture).
const USER_HZ: u64 = 100;

/// How long a stopping child may drain before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The system under test, running as a child process.
#[derive(Debug)]
pub struct ChildServer {
    child: Child,
    addr: SocketAddr,
}

impl ChildServer {
    /// Starts `program args…` (pinned to CPU `pin` with `taskset` when
    /// given) and reads the address it prints on its first line of stdout.
    pub fn spawn<I, S>(program: &Path, args: I, pin: Option<usize>) -> std::io::Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = match pin {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(program);
                c
            }
            None => Command::new(program),
        };
        let mut child = command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut line = String::new();
        let read = match child.stdout.take() {
            Some(out) => BufReader::new(out).read_line(&mut line),
            None => Ok(0),
        };
        match (read, line.trim().parse::<SocketAddr>()) {
            (Ok(_), Ok(addr)) => Ok(ChildServer { child, addr }),
            (read, _) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(std::io::Error::other(format!(
                    "{} did not print its address (got {line:?}, {read:?})",
                    program.display()
                )))
            }
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it: closes its stdin, gives it a few seconds to drain, then
    /// kills it. Blocks while it waits.
    pub fn stop(mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child's side: prints `addr` as the first line on stdout, where
/// [`ChildServer::spawn`] reads it.
pub fn announce(addr: SocketAddr) -> std::io::Result<()> {
    let mut out = std::io::stdout();
    writeln!(out, "{addr}")?;
    out.flush()
}

/// Completes when stdin closes (the bench is gone). A plain thread, not
/// `spawn_blocking`: a runtime stopping for another reason must not wait for
/// a read that never ends.
pub fn stdin_closed() -> oneshot::Receiver<()> {
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 256];
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = tx.send(());
    });
    rx
}

/// Pins every thread of this process to `cpu` with `taskset`; whether it
/// worked.
pub fn pin_self(cpu: usize) -> bool {
    Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            &cpu.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// This thread's id, from `/proc/thread-self` (`<pid>/task/<tid>`).
pub fn current_tid() -> Option<u32> {
    std::fs::read_link("/proc/thread-self")
        .ok()?
        .file_name()?
        .to_str()?
        .parse()
        .ok()
}

/// utime + stime of process `pid`, all its threads (dead ones included), in
/// 10 ms ticks.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    cpu_times(&format!("/proc/{pid}/stat")).map(|(user, system)| user + system)
}

/// (user, system) CPU time from a `/proc/…/stat` file (a process's, or a
/// thread's such as `/proc/thread-self/stat`), in 10 ms ticks.
pub fn cpu_times(stat_path: &str) -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // The fields after the command name (which may hold spaces and
    // parentheses): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = |n: u64| Duration::from_nanos(n * (1_000_000_000 / USER_HZ));
    Some((ticks(utime), ticks(stime)))
}

/// (on-CPU ns, runnable-but-waiting ns) of thread `tid` of `pid`, from its
/// `schedstat`: the wait shows another process taking its core.
pub fn thread_sched(pid: u32, tid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).ok()?;
    let mut fields = text.split_whitespace();
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

/// Resident set size of `pid`, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_can_be_read() {
        let pid = std::process::id();
        // Burn a little CPU so the tick counter has something to show.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu(pid).is_some());
        assert!(rss_kib(pid).is_some_and(|kib| kib > 0));
        let tid = current_tid().expect("tid");
        assert!(thread_sched(pid, tid).is_some_and(|(on_cpu, _)| on_cpu > 0));
    }

    #[test]
    fn a_child_that_prints_no_address_is_an_error() {
        let err = ChildServer::spawn(Path::new("true"), Vec::<&str>::new(), None)
            .expect_err("no address");
        assert!(
            err.to_string().contains("did not print its address"),
            "{err}"
        );
    }
}
