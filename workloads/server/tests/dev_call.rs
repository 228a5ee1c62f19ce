//! End to end on one machine: `voice-agent dev` as a child process and
//! `voice-agent call` against it, both the real binaries, with real espeak-ng
//! and the local recognizer (PocketSphinx).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_voice-agent");

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// A running `voice-agent dev`, killed on drop.
struct Dev {
    child: Child,
    url: String,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn start_dev() -> Dev {
    let port = free_port();
    let root = repo_root();
    let mut child = Command::new(BIN)
        .current_dir(&root)
        .args(["dev", "-f", "examples/voiceagent.yaml", "--port"])
        .arg(port.to_string())
        .env_remove("DATABASE_URL")
        .env("TWILIO_AUTH_TOKEN", "e2e-test-token")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn voice-agent dev");
    // Forward its log to ours (visible on failure) and wait for the banner.
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[dev] {line}");
            if line.contains("ready on") {
                let _ = tx.send(());
            }
        }
    });
    let dev = Dev {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    rx.recv_timeout(Duration::from_secs(120))
        .expect("voice-agent dev did not become ready within 120 s");
    dev
}

fn call(url: &str, args: &[&str]) -> serde_json::Value {
    let output = Command::new(BIN)
        .current_dir(repo_root())
        .args(["call", "--url", url, "--json"])
        .args(args)
        .env("TWILIO_AUTH_TOKEN", "e2e-test-token")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run voice-agent call");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "voice-agent call failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("report is not JSON ({e}): {stdout}"))
}

fn get(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-sf", url])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_simulated_call_is_answered_with_cited_facts_and_barge_in_cuts_playback() {
    let dev = start_dev();

    // 1. Questions from the example FAQ, then goodbye.
    let report = call(
        &dev.url,
        &[
            "--say",
            "What time do you open on Saturday?",
            "--say",
            "Do you rent electric bikes?",
            "--say",
            "Thanks, goodbye",
        ],
    );
    eprintln!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    assert!(
        report["greetingAudioSeconds"].as_f64().unwrap_or(0.0) > 1.0,
        "the greeting was not heard: {report}"
    );
    assert_eq!(
        report["greeting"],
        "Thanks for calling Harbor Bikes. How can I help?"
    );
    let turns = report["turns"].as_array().expect("turns");
    assert!(turns.len() >= 3, "{report}");
    for (turn, doc) in turns.iter().zip(["hours", "rentals"]) {
        let cited: Vec<&str> = turn["citations"]
            .as_array()
            .map(|c| c.iter().filter_map(|c| c["documentId"].as_str()).collect())
            .unwrap_or_default();
        assert!(cited.contains(&doc), "{turn} should cite {doc}");
        assert!(
            turn["agentAudioSeconds"].as_f64().unwrap_or(0.0) > 0.5,
            "{turn}"
        );
        for stage in ["eouMs", "agentTtftMs", "ttsTtfbMs", "e2eMs"] {
            assert!(
                turn["latency"][stage].as_f64().is_some(),
                "{stage} in {turn}"
            );
        }
    }
    // The agent said goodbye and hung up.
    assert_eq!(report["endReason"], "agentHangup", "{report}");

    // 2. Barge-in: the second line interrupts the first answer.
    let report = call(
        &dev.url,
        &[
            "--say",
            "How much does a basic tune up cost?",
            "--say",
            "Do you rent electric bikes?",
            "--interrupt-after-ms",
            "1200",
        ],
    );
    eprintln!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    assert!(
        report["interruptions"].as_u64().unwrap_or(0) >= 1,
        "{report}"
    );
    assert_eq!(report["turns"][0]["interrupted"], true, "{report}");
    assert_eq!(report["endReason"], "callerHangup");

    // 3. The metrics service saw the turns.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let signals = get(&format!(
            "{}/v1/signals?namespace=default&voiceAgent=front-desk",
            dev.url
        ));
        if signals.contains("e2e") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no e2e latency in /v1/signals: {signals}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let metrics = get(&format!("{}/metrics", dev.url));
    let e2e_count = metrics
        .lines()
        .find_map(|l| l.strip_prefix("voice_agent_e2e_seconds_count "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(e2e_count >= 3.0, "e2e count {e2e_count}");
    assert!(metrics.contains("voice_agent_runtime_interruptions_total"));
}
