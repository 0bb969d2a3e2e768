//! Test support shared by every crate that tests against Kafka: finds a Kafka-protocol
//! broker (`GPUMARKET_KAFKA=host:port`) or starts a `tansu` with memory storage once per test
//! process. Behind the `testing` feature; never used by the services themselves.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `kafka://host:port` of this test process's broker, found or started on first use.
///
/// Panics with install advice when there is no broker to find or start: a test that needs
/// Kafka must fail, not skip.
pub fn kafka_url() -> String {
    format!("kafka://{}", broker())
}

/// The broker address for this test process, found or started once.
pub fn broker() -> &'static str {
    static BROKER: OnceLock<Result<Broker, String>> = OnceLock::new();
    match BROKER.get_or_init(find_or_start_broker) {
        Ok(broker) => &broker.address,
        Err(why) => panic!("{why}"),
    }
}

#[derive(Debug)]
struct Broker {
    address: String,
    /// The shell that runs `tansu`: it kills the broker once its stdin closes, which happens
    /// when this process exits however it exits (statics are never dropped, so no guard could).
    _keeper: Option<Child>,
}

fn find_or_start_broker() -> Result<Broker, String> {
    if let Ok(address) = std::env::var("GPUMARKET_KAFKA") {
        return Ok(Broker {
            address,
            _keeper: None,
        });
    }
    let tansu = find_tansu().ok_or(
        "the kafka:: tests need a Kafka-protocol broker: set GPUMARKET_KAFKA=host:port to use a \
         running one, or install tansu (`cargo install tansu --locked --features \
         postgres,dynostore`, about 15 minutes) so the tests can start one themselves",
    )?;
    let mut last_error = String::new();
    // A port found free can be taken before tansu binds it; try a few.
    for _ in 0..3 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        let address = format!("127.0.0.1:{port}");
        let log =
            std::env::temp_dir().join(format!("eventlog-tansu-{}-{port}.log", std::process::id()));
        // The shell stays tansu's parent, so that its pid cannot be reused before the kill.
        let script =
            "\"$1\" broker --listener-url \"tcp://$2\" --advertised-listener-url \"tcp://$2\" \
                      --storage-engine memory://tansu/ >\"$3\" 2>&1 & broker=$!; \
                      read _; kill $broker 2>/dev/null; wait; rm -f \"$3\"";
        let mut keeper = Command::new("sh")
            .args(["-c", script, "sh"])
            .arg(&tansu)
            .arg(&address)
            .arg(&log)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {tansu:?}: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(&address).is_ok() {
                return Ok(Broker {
                    address,
                    _keeper: Some(keeper),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        let tail_start = (output.len().saturating_sub(2000)..output.len())
            .find(|&at| output.is_char_boundary(at))
            .unwrap_or(output.len());
        let tail = &output[tail_start..];
        last_error = format!("tansu did not listen on {address} within 10 s; it said:\n{tail}");
        if let Some(stdin) = keeper.stdin.as_mut() {
            // Any line (or the pipe closing) tells the shell to stop the broker.
            let _ = stdin.write_all(b"\n");
        }
        let _ = keeper.wait();
    }
    Err(last_error)
}

fn find_tansu() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("tansu"));
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .map(|home| home.join("bin").join("tansu"));
    on_path
        .chain(cargo_home)
        .find(|candidate| candidate.is_file())
}
