//! SIGHUP re-reads every `--key` file, all or nothing: new handshakes use the new
//! set, sessions already open keep running, and a reload that fails (a missing or bad
//! file) changes nothing, is logged, and the server keeps serving.

mod common;
use common::*;

#[test]
fn sighup_swaps_the_keys_and_open_sessions_keep_running() {
    let dir = TempDir::new();
    let file = dir.file("gate.key");
    let a = LocalKey::generate();
    let b = LocalKey::generate();
    std::fs::write(&file, &a.paserk).unwrap();
    let s = Server::start(&["--key", &file]);
    let ta = a.token(&Claims::new("alice"));
    let tb = b.token(&Claims::new("bob"));
    run(async {
        let mut before = ws_bearer(&s, &ta).await;
        assert_401(&upgrade_status(&s, "/", &[("Authorization", &bearer(&tb))]));
        std::fs::write(&file, format!("{}\n", b.paserk)).unwrap();
        s.signal("HUP");
        s.wait_log_line(|l| l.contains("event=reload") && l.contains("keys=1"));
        // New handshakes: the new key only.
        assert_401(&upgrade_status(&s, "/", &[("Authorization", &bearer(&ta))]));
        let mut after = ws_bearer(&s, &tb).await;
        assert_echo(&mut after).await;
        // The session opened before keeps running.
        assert_echo(&mut before).await;
    });
    // A failed reload changes nothing.
    std::fs::write(&file, "k4.local.not-a-key\n").unwrap();
    s.signal("HUP");
    s.wait_log_line(|l| l.contains("level=error") && l.contains("event=reload"));
    assert_still_serves(&s, &tb);
    std::fs::remove_file(&file).unwrap();
    s.signal("HUP");
    s.wait_log_line(|l| {
        l.contains("level=error") && l.contains("event=reload") && l.contains("no such file")
    });
    assert_still_serves(&s, &tb);
    // No key bytes in the log.
    assert!(!s.log().contains(paserk_body(&b.paserk)));
}

#[test]
fn a_reload_with_several_files_is_all_or_nothing() {
    let dir = TempDir::new();
    let (f1, f2) = (dir.file("one.key"), dir.file("two.key"));
    let a = LocalKey::generate();
    let b = LocalKey::generate();
    let c = LocalKey::generate();
    std::fs::write(&f1, &a.paserk).unwrap();
    std::fs::write(&f2, &b.paserk).unwrap();
    let s = Server::start(&["--key", &f1, "--key", &f2]);
    // The first file changes, the second breaks: neither applies.
    std::fs::write(&f1, &c.paserk).unwrap();
    std::fs::write(&f2, "garbage").unwrap();
    s.signal("HUP");
    s.wait_log_line(|l| l.contains("level=error") && l.contains("event=reload"));
    assert_still_serves(&s, &a.token(&Claims::new("alice")));
    assert_still_serves(&s, &b.token(&Claims::new("bob")));
    assert_401(&upgrade_status(
        &s,
        "/",
        &[("Authorization", &bearer(&c.token(&Claims::new("carol"))))],
    ));
}
