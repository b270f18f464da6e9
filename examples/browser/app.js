// wsgate browser example (see index.html for how to run it).
//
// The four ways a page can authenticate a WebSocket to wsgate. Each function is a complete,
// copyable client: open the socket, learn whether it authenticated, read the close code if not.
// Then (5) a long session that keeps its socket past the token's expiry with an in-band refresh.
'use strict';

const $ = (id) => document.getElementById(id);

/** wsgate's HTTP origin: the "Gateway" box, or this page's own origin. */
function gatewayOrigin() {
  return ($('gateway').value.trim() || location.origin).replace(/\/+$/, '');
}

/** The WebSocket URL on the gateway (ws:// for http://, wss:// for https://). */
function socketUrl() {
  return gatewayOrigin().replace(/^http/, 'ws') + '/';
}

function currentToken() {
  return $('token').value.trim();
}

/** What a close code means to the application (docs/protocol.md#close-codes). */
function explain(ev) {
  switch (ev.code) {
    case 4401:
      // Expired: the session ran past its token; get a fresh token and connect again.
      // Revoked: an operator logged this user out; a fresh token would be refused too.
      if (ev.reason === 'token expired') return ' → get a fresh token and reconnect';
      if (ev.reason === 'token revoked') return ' → revoked by an operator: log in again';
      return ' → log in again';
    case 4403: return ' → forbidden (ticket from another address?)';
    case 4408: return ' → no token sent in time';
    case 1006: return ' → refused at the handshake (HTTP 401/403: no or bad token, or origin not allowed)';
    default: return '';
  }
}

/**
 * Drives one socket: optionally sends the token as the first message and waits for the
 * {"type":"authenticated"} frame, then sends one message and waits for its echo.
 * Resolves with { ok, text }.
 */
function converse(ws, { firstMessage } = {}) {
  return new Promise((resolve) => {
    const notes = [];
    let authenticated = !firstMessage;
    let finished = false;
    const finish = (ok, text) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      resolve({ ok, text: [...notes, text].join('\n') });
    };
    const timer = setTimeout(() => { ws.close(); finish(false, 'timed out after 5 s'); }, 5000);

    ws.onopen = () => {
      notes.push(`open, ws.protocol = ${JSON.stringify(ws.protocol)}`);
      ws.send(firstMessage || 'hello from the page');
    };
    ws.onmessage = (ev) => {
      if (!authenticated) {
        const frame = JSON.parse(ev.data); // {"type":"authenticated","sub":"…","exp":"…"}
        if (frame.type !== 'authenticated') return finish(false, `unexpected frame ${ev.data}`);
        authenticated = true;
        notes.push(`authenticated as ${frame.sub} until ${frame.exp}`);
        ws.send('hello from the page');
        return;
      }
      notes.push(`echo: ${ev.data}`);
      ws.close(1000);
      finish(true, 'closed by the page');
    };
    ws.onclose = (ev) => finish(false, `closed ${ev.code} ${JSON.stringify(ev.reason)}${explain(ev)}`);
  });
}

// 1. Cookie. A real application gets an HttpOnly `wsgate_token` cookie from its login response;
//    here the page sets it itself, for the gateway's host, and removes it once the handshake is
//    done so that the other buttons exercise their own method. The browser attaches cookies to
//    cross-origin sockets too: wsgate refuses them unless the page's origin is allowed.
async function viaCookie(token) {
  document.cookie = `wsgate_token=${token}; path=/; SameSite=Strict`;
  const ws = new WebSocket(socketUrl());
  const forget = () => { document.cookie = 'wsgate_token=; path=/; max-age=0'; };
  ws.addEventListener('open', forget);
  ws.addEventListener('close', forget);
  return converse(ws);
}

// 2. Subprotocol. The token rides in Sec-WebSocket-Protocol; wsgate answers "wsgate", never the
//    token (a browser fails the socket if it offered protocols and gets none back).
async function viaProtocol(token) {
  return converse(new WebSocket(socketUrl(), ['wsgate', token]));
}

// 3. First message. Open without credentials, send the token (raw, or {"token":"…"}) as the first
//    text frame within the auth timeout, and wait for {"type":"authenticated"}.
async function viaFirstMessage(token) {
  return converse(new WebSocket(socketUrl()), { firstMessage: token });
}

// 4. Ticket. Exchange the long-lived token for a short-lived single-use ticket over HTTP (a normal
//    fetch can carry Authorization; cross-origin this needs wsgate's --allow-origin for CORS),
//    then open the socket with the ticket. A second use of the same ticket is closed 4401.
async function viaTicket(token) {
  const res = await fetch(`${gatewayOrigin()}/ticket`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}` },
  });
  if (!res.ok) return { ok: false, text: `POST /ticket → HTTP ${res.status}` };
  const { ticket, expires_in: expiresIn } = await res.json();
  const r = await converse(new WebSocket(socketUrl(), ['wsgate', ticket]));
  return { ok: r.ok, text: `POST /ticket → ticket valid ${expiresIn} s\n${r.text}` };
}

const methods = { cookie: viaCookie, protocol: viaProtocol, message: viaFirstMessage, ticket: viaTicket };

for (const [name, run] of Object.entries(methods)) {
  $(`btn-${name}`).addEventListener('click', async () => {
    const out = $(`out-${name}`);
    const token = currentToken();
    if (!token) {
      out.dataset.status = 'fail';
      out.textContent = 'paste a token first';
      return;
    }
    out.dataset.status = 'running';
    out.textContent = 'connecting…';
    let result;
    try {
      result = await run(token);
    } catch (e) {
      result = { ok: false, text: String(e) };
    }
    out.dataset.status = result.ok ? 'ok' : 'fail';
    out.textContent = result.text;
  });
}

// 5. A long session (needs `wsgate serve --refresh`). Before the token ends (by default 30 s
//    before its exp) wsgate sends {"type":"expiring","exp":"…"}. The page gets a fresh token and
//    sends {"type":"refresh","token":"…"} on the same socket; wsgate consumes it (it is never
//    echoed) and answers {"type":"refreshed","exp":"…"}: the session now lasts until the new exp,
//    without reconnecting. If the user is revoked meanwhile, the socket closes 4401 "token revoked".

/**
 * A fresh token for the refresh. PLACEHOLDER: a real application asks its own backend, which
 * knows the user by the login session, for example
 *
 *     const res = await fetch('/api/ws-token', { method: 'POST', credentials: 'same-origin' });
 *     if (!res.ok) throw new Error(`token endpoint: HTTP ${res.status}`); // logged out
 *     return (await res.json()).token;
 *
 * This demo has no backend: it takes the "Next token" box.
 */
async function fetchFreshToken() {
  const token = $('next-token').value.trim();
  if (!token) throw new Error('paste a token into "Next token"');
  return token;
}

let live = null; // the long session's socket while it is open

function longSession(token, out) {
  const lines = [];
  const say = (line) => {
    lines.push(line);
    out.textContent = lines.slice(-10).join('\n'); // the last few lines
  };
  const ws = new WebSocket(socketUrl(), ['wsgate', token]);
  let ticker;
  ws.onopen = () => {
    say('open; sending "ping N" every second');
    let n = 0;
    ticker = setInterval(() => ws.send(`ping ${++n}`), 1000);
  };
  ws.onmessage = async (ev) => {
    let frame = null; // wsgate's frames are JSON objects with a "type"; the rest is the app's
    try { frame = JSON.parse(ev.data); } catch { /* application data */ }
    if (frame?.type === 'expiring') {
      say(`expiring: the token ends at ${frame.exp}; refreshing`);
      try {
        ws.send(JSON.stringify({ type: 'refresh', token: await fetchFreshToken() }));
      } catch (e) {
        say(`no fresh token (${e.message}): the session ends at ${frame.exp}`);
      }
    } else if (frame?.type === 'refreshed') {
      say(`refreshed: the session now ends at ${frame.exp}`);
      out.dataset.refreshed = String(Number(out.dataset.refreshed || 0) + 1);
    } else {
      say(`echo: ${ev.data}`);
      out.dataset.echoes = String(Number(out.dataset.echoes || 0) + 1);
    }
  };
  ws.onclose = (ev) => {
    clearInterval(ticker);
    live = null;
    $('btn-live').textContent = 'Long session';
    say(`closed ${ev.code} ${JSON.stringify(ev.reason)}${explain(ev)}`);
    out.dataset.status = ev.code === 1000 ? 'ok' : 'fail';
  };
  return ws;
}

$('btn-live').addEventListener('click', () => {
  const out = $('out-live');
  if (live) {
    live.close(1000, 'stopped by the user');
    return;
  }
  const token = currentToken();
  if (!token) {
    out.dataset.status = 'fail';
    out.textContent = 'paste a token first';
    return;
  }
  out.dataset.status = 'running';
  out.dataset.refreshed = '0';
  out.dataset.echoes = '0';
  $('btn-live').textContent = 'Stop';
  live = longSession(token, out);
});
