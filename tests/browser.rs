//! Runs the headless-Chromium end-to-end suite and the PASETO interop suite in `tests/browser/`
//! (`node tests/browser/run.mjs`) against this build's `wsgate` binary.
//!
//! Needs Debian's `/usr/bin/chromium` and `npm ci` in `tests/browser`: `scripts/test-deps.sh`
//! installs both. Without them the test is skipped with a message, except under `CI=true`,
//! where it fails. Screenshots and logs land in `tests/browser/artifacts/` (gitignored).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The suite bounds itself (watchdog at 300 s); this is the outer backstop.
const SUITE_DEADLINE: Duration = Duration::from_secs(360);

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

fn missing_deps(dir: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    if !chromium().exists() {
        missing.push(format!(
            "{} (Debian package chromium)",
            chromium().display()
        ));
    }
    if !dir.join("node_modules/playwright-core").is_dir() {
        missing.push("tests/browser/node_modules (npm ci)".to_string());
    }
    if Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        missing.push("node (Node.js >= 20)".to_string());
    }
    missing
}

/// A leaf certificate for 127.0.0.1 signed by a throwaway CA, for the suite's `wss://`
/// server (the suite trusts the leaf's key through Chromium's
/// `--ignore-certificate-errors-spki-list`). Files removed on drop.
struct TestCerts {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl TestCerts {
    fn new() -> TestCerts {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let dir = std::env::temp_dir().join(format!("wsgate-browser-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path) = (dir.join("fullchain.pem"), dir.join("privkey.pem"));
        std::fs::write(&cert_path, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        TestCerts {
            dir,
            cert: cert_path,
            key: key_path,
        }
    }
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn browser_and_interop_suite() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");

    let missing = missing_deps(&dir);
    if !missing.is_empty() {
        let msg = format!(
            "browser suite: missing {}; run scripts/test-deps.sh to install them",
            missing.join(", ")
        );
        assert!(!ci, "{msg} (CI=true: not skipping)");
        // Straight to fd 2: libtest captures eprintln!, and a skip must be seen.
        let _ = writeln!(std::io::stderr(), "SKIPPED {msg}");
        return;
    }

    let started = Instant::now();
    let certs = TestCerts::new();
    let mut child = Command::new("node")
        .arg("run.mjs")
        .current_dir(&dir)
        .env("WSGATE_BIN", env!("CARGO_BIN_EXE_wsgate"))
        .env("CHROMIUM", chromium())
        .env("BROWSER_TLS_CERT", &certs.cert)
        .env("BROWSER_TLS_KEY", &certs.key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node tests/browser/run.mjs");

    // Pass the suite's output through (println! is captured per test by libtest and shown on
    // failure or with --nocapture), and keep it for the verdict.
    let (tx, rx) = mpsc::channel::<String>();
    let pipes: Vec<Box<dyn std::io::Read + Send>> = vec![
        Box::new(child.stdout.take().expect("stdout")),
        Box::new(child.stderr.take().expect("stderr")),
    ];
    let readers: Vec<_> = pipes
        .into_iter()
        .map(|pipe| {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    drop(tx);

    let mut output = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                println!("{line}");
                output.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if started.elapsed() > SUITE_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("browser suite: still running after {SUITE_DEADLINE:?}; killed");
        }
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child.wait().expect("wait for node");
    let summary = output
        .iter()
        .rev()
        .find(|l| l.contains(" passed, ") && l.contains(" failed"))
        .cloned()
        .unwrap_or_else(|| "no summary line".to_string());
    let failures: Vec<&String> = output.iter().filter(|l| l.starts_with("not ok")).collect();
    assert!(
        status.success(),
        "browser suite failed ({status}; {summary}) in {:?}:\n{}\nfull output above; \
         artifacts in tests/browser/artifacts/",
        started.elapsed(),
        failures
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let _ = writeln!(
        std::io::stderr(),
        "browser suite: {summary} in {:.1?} (screenshots in tests/browser/artifacts/)",
        started.elapsed()
    );
}
