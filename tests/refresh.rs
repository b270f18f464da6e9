//! In-band refresh and the expiry notice (`--refresh`, `--refresh-notice`), over real
//! sockets: every row of the result table, the notice's timing, a refresh that
//! shortens or extends the session, messages that only look like a refresh, the
//! relay and exec modes (a refresh never reaches them), a refresh racing the expiry
//! timer, and a refresh after a revocation.

mod common;
use common::*;

use std::time::Duration;

use smol::stream::StreamExt as _;

fn refresh_msg(token: &str) -> String {
    serde_json::json!({ "type": "refresh", "token": token }).to_string()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

fn server(k: &LocalKey, extra: &[&str]) -> Server {
    Server::start(&[&k.arg()[..], &["--refresh"], extra].concat())
}

#[test]
fn the_notice_comes_before_exp_and_a_refresh_extends_the_session() {
    let k = LocalKey::generate();
    // exp in 3 s, no leeway; the notice 30 s before exp is due at once.
    let s = server(&k, &["--leeway", "0"]);
    let first = Claims::new("alice").exp_in(3);
    let t1 = k.token(&first);
    let next = Claims::new("alice").exp_in(600);
    let t2 = k.token(&next);
    run(async {
        let mut ws = ws_bearer(&s, &t1).await;
        let notice = json(&recv_text(&mut ws).await);
        assert_eq!(notice["type"], "expiring");
        assert_eq!(
            notice["exp"].as_str().map(parse_rfc3339),
            Some(parse_rfc3339(first.exp()))
        );
        send_text(&mut ws, &refresh_msg(&t2)).await;
        let refreshed = json(&recv_text(&mut ws).await);
        assert_eq!(refreshed["type"], "refreshed");
        assert_eq!(
            refreshed["exp"].as_str().map(parse_rfc3339),
            Some(parse_rfc3339(next.exp()))
        );
        // Past the first token's exp: still open, and the refresh was not echoed.
        smol::Timer::after(Duration::from_millis(3500)).await;
        assert_echo(&mut ws).await;
    });
    s.wait_log_line(|l| {
        l.contains("event=refresh") && l.contains("result=ok") && l.contains("sub=alice")
    });
    let m = http(&s, "GET", "/metrics", &[]);
    assert!(
        String::from_utf8_lossy(&m.body).contains("wsgate_refreshes_total{result=\"ok\"} 1"),
        "{}",
        String::from_utf8_lossy(&m.body)
    );
}

#[test]
fn each_refusal_closes_with_its_code() {
    let k = LocalKey::generate();
    let other_key = LocalKey::generate();
    let s = server(&k, &[]);
    let session = k.token(&Claims::new("alice"));
    let ticket = {
        let r = http(
            &s,
            "POST",
            "/ticket",
            &[
                ("Content-Length", "0"),
                ("Authorization", &bearer(&session)),
            ],
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["ticket"].as_str().unwrap().to_owned()
    };
    let cases = [
        (
            k.token(&Claims::new("alice").exp_in(-120)),
            4401,
            "token expired",
            "expired",
        ),
        (
            other_key.token(&Claims::new("alice")),
            4401,
            "invalid token",
            "invalid",
        ),
        (
            "v4.local.garbage".to_owned(),
            4401,
            "invalid token",
            "invalid",
        ),
        (ticket, 4401, "invalid token", "invalid"),
        (
            k.token(&Claims::new("mallory")),
            4403,
            "forbidden",
            "forbidden",
        ),
    ];
    for (token, code, reason, result) in cases {
        run(async {
            let mut ws = ws_bearer(&s, &session).await;
            send_text(&mut ws, &refresh_msg(&token)).await;
            assert_eq!(
                expect_close(&mut ws).await,
                (code, reason.to_owned()),
                "{result}"
            );
        });
        s.wait_log_line(|l| l.contains("event=refresh") && l.contains(&format!("result={result}")));
    }
    assert!(!s.log().contains(&session), "a token reached the log");
}

#[test]
fn a_refresh_after_a_revocation_is_refused_and_a_refresh_moves_revocation_to_the_new_token() {
    let k = LocalKey::generate();
    let s = server(&k, &["--admin-listen", "127.0.0.1:0"]);
    let admin = admin_addr(&s);
    let revoke = |body: &str| {
        let r = post_revoke(admin, body);
        assert_eq!(r.status, 200, "{}", r.head);
    };
    let a = k.token(&Claims::new("alice").set("jti", "a"));
    let b = k.token(&Claims::new("alice").set("jti", "b"));
    let c = k.token(&Claims::new("alice").set("jti", "c"));
    run(async {
        // After a refresh the session is the new token's: revoking the old one does
        // not touch it; revoking the new one closes it.
        let mut ws = ws_bearer(&s, &a).await;
        send_text(&mut ws, &refresh_msg(&b)).await;
        assert_eq!(json(&recv_text(&mut ws).await)["type"], "refreshed");
        revoke(r#"{"jti":"a"}"#);
        assert_echo(&mut ws).await;
        revoke(r#"{"jti":"b"}"#);
        assert_eq!(
            expect_close_within(&mut ws, Duration::from_millis(1500)).await,
            (4401, "token revoked".to_owned())
        );
        // A refresh with a revoked token: 4401 token revoked.
        let mut ws = ws_bearer(&s, &c).await;
        send_text(&mut ws, &refresh_msg(&a)).await;
        assert_eq!(
            expect_close(&mut ws).await,
            (4401, "token revoked".to_owned())
        );
    });
}

#[test]
fn a_refresh_with_an_earlier_exp_shortens_the_session() {
    let k = LocalKey::generate();
    let s = server(&k, &["--leeway", "0", "--refresh-notice", "0"]);
    let long = k.token(&Claims::new("alice"));
    let short = k.token(&Claims::new("alice").exp_in(2));
    run(async {
        let mut ws = ws_bearer(&s, &long).await;
        send_text(&mut ws, &refresh_msg(&short)).await;
        assert_eq!(json(&recv_text(&mut ws).await)["type"], "refreshed");
        // The notice (0 s before exp) comes at exp, then the end.
        let notice = json(&recv_text(&mut ws).await);
        assert_eq!(notice["type"], "expiring");
        assert_eq!(
            expect_close_within(&mut ws, Duration::from_secs(5)).await,
            (4401, "token expired".to_owned())
        );
    });
}

#[test]
fn messages_that_are_not_refresh_requests_pass_untouched() {
    let k = LocalKey::generate();
    let s = server(&k, &[]);
    let t = k.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        for text in [
            r#"{"type":"refreshx","token":"v4.local.x"}"#,
            r#"{"type":"refresh"}"#,
            r#"{"type":"refresh","token":5}"#,
            r#"["refresh","v4.local.x"]"#,
            "refresh",
        ] {
            send_text(&mut ws, text).await;
            assert_eq!(recv_text(&mut ws).await, text);
        }
        // A refresh in a binary message is data, not a refresh.
        let bin = refresh_msg(&t).into_bytes();
        ws.send(Message::binary(bin.clone())).await.unwrap();
        assert_eq!(recv_data(&mut ws).await, Message::binary(bin));
    });
}

#[test]
fn without_refresh_no_notice_and_refresh_messages_are_data() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let t = k.token(&Claims::new("alice").exp_in(5));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        let msg = refresh_msg(&k.token(&Claims::new("alice")));
        send_text(&mut ws, &msg).await;
        // The first frame is the echo, not a notice.
        assert_eq!(recv_text(&mut ws).await, msg);
    });
}

#[test]
fn a_refresh_is_consumed_in_exec_mode() {
    let k = LocalKey::generate();
    let s = server(&k, &["--exec", "cat"]);
    let t = k.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        send_text(&mut ws, &refresh_msg(&t)).await;
        assert_eq!(json(&recv_text(&mut ws).await)["type"], "refreshed");
        send_text(&mut ws, "after").await;
        // `cat` saw only "after": the refresh never reached its stdin.
        assert_eq!(recv_text(&mut ws).await, "after");
    });
}

#[test]
fn a_refresh_racing_the_expiry_timer_gets_one_clear_answer() {
    // The refresh arrives around the deadline: either `refreshed` (and the session
    // lives on) or 4401 `token expired`, never both, never a hang.
    let k = LocalKey::generate();
    let s = server(&k, &["--leeway", "0", "--refresh-notice", "0"]);
    let later = k.token(&Claims::new("alice"));
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let t = k.token(&Claims::new("alice").exp_in(1));
        let outcome = run(async {
            let mut ws = ws_bearer(&s, &t).await;
            // The notice is sent at exp: answer it at once, as a client would.
            let notice = json(&recv_text(&mut ws).await);
            assert_eq!(notice["type"], "expiring");
            let _ = timeout(IO_TIMEOUT, ws.send(Message::text(refresh_msg(&later)))).await;
            match timeout(IO_TIMEOUT, ws.next())
                .await
                .expect("an answer in time")
            {
                Some(Ok(Message::Text(t))) => {
                    assert_eq!(json(&t)["type"], "refreshed");
                    assert_echo(&mut ws).await;
                    "refreshed"
                }
                Some(Ok(Message::Close(Some(f)))) => {
                    assert_eq!(
                        (u16::from(f.code), f.reason.as_str()),
                        (4401, "token expired")
                    );
                    "expired"
                }
                other => panic!("unexpected {other:?}"),
            }
        });
        outcomes.push(outcome);
    }
    eprintln!("outcomes: {outcomes:?}");
}

/// Every frame and listing that shows an `exp` shows the claim as the token has it:
/// with its fraction and offset (another library's `2030-01-01T10:00:00.250+02:00`),
/// not rewritten in UTC seconds. The first message's `authenticated`, the notice, the
/// `refreshed` frame, `GET /sessions`, and a ticket's session (the minting token's).
#[test]
fn every_exp_shown_is_the_claim_as_issued() {
    let k = LocalKey::generate();
    let s = server(&k, &["--admin-listen", "127.0.0.1:0"]);
    let admin = admin_addr(&s);
    // Within the 30 s notice: the notice comes at once.
    let first = Claims::new("alice").set("exp", shifted(now() + 20, 2, ".250"));
    let later = Claims::new("alice").set("exp", shifted(now() + 600, -5, ".5"));
    let sessions = |sub: &str| -> serde_json::Value {
        let r = http_raw(
            admin,
            format!("GET /sessions?sub={sub} HTTP/1.1\r\nHost: {admin}\r\n\r\n").as_bytes(),
        );
        serde_json::from_slice(&r.body).unwrap()
    };
    run(async {
        let mut ws = ws_ok(&s, &[]).await;
        let ok = first_message_ok(&mut ws, &k.token(&first)).await;
        assert_eq!(ok["exp"], first.exp(), "{ok}");
        let notice = json(&recv_text(&mut ws).await);
        assert_eq!(notice["type"], "expiring");
        assert_eq!(notice["exp"], first.exp(), "{notice}");
        assert_eq!(sessions("alice")[0]["exp"], first.exp());
        send_text(&mut ws, &refresh_msg(&k.token(&later))).await;
        let refreshed = json(&recv_text(&mut ws).await);
        assert_eq!(refreshed["type"], "refreshed");
        assert_eq!(refreshed["exp"], later.exp(), "{refreshed}");
        assert_eq!(sessions("alice")[0]["exp"], later.exp());
    });
    // A ticket's session shows the minting token's exp as issued.
    let want = shifted(now() + 900, 1, ".125");
    let minting = k.token(&Claims::new("bob").set("exp", want.as_str()));
    let r = http(
        &s,
        "POST",
        "/ticket",
        &[
            ("Content-Length", "0"),
            ("Authorization", &bearer(&minting)),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.head);
    let ticket: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    run(async {
        let mut ws = ws_ok(&s, &[]).await;
        let ok = first_message_ok(&mut ws, ticket["ticket"].as_str().unwrap()).await;
        assert_eq!(ok["exp"], want.as_str(), "{ok}");
    });
}

/// `unix` as RFC 3339 in the offset `hours` (`+02:00`), with the fraction `frac`.
fn shifted(unix: i64, hours: i64, frac: &str) -> String {
    let local = rfc3339(unix + hours * 3600);
    let sign = if hours < 0 { '-' } else { '+' };
    local.replace('Z', &format!("{frac}{sign}{:02}:00", hours.abs()))
}
