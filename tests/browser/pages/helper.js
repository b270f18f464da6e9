// Loaded by the test pages. window.wsTry opens one WebSocket the way a web app would and
// reports what page JavaScript can observe: open or not, ws.protocol, messages, close code
// and reason. It always settles (bounded by timeoutMs).
//
//   wsTry(url, protocols | null, {
//     send: [...],            // text frames sent on open (binary frames with binary: true)
//     sendAfterFirst: [...],  // text frames sent after the first message arrives
//     expect: n,              // settle (and close 1000) after n messages
//     timeoutMs: 5000,
//   })
window.wsTry = function wsTry(url, protocols, opts) {
  opts = opts || {};
  const send = opts.send || [];
  const after = opts.sendAfterFirst || [];
  const expect = opts.expect === undefined ? Infinity : opts.expect;
  const timeoutMs = opts.timeoutMs || 5000;
  return new Promise((resolve) => {
    const r = {
      url, opened: false, protocol: null, messages: [], error: false,
      closeCode: null, closeReason: null, wasClean: null, timedOut: false, exception: null,
    };
    let ws;
    let settled = false;
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      log(r);
      resolve(r);
    };
    const timer = setTimeout(() => {
      r.timedOut = true;
      try { ws && ws.close(); } catch (e) { /* ignore */ }
      finish();
    }, timeoutMs);
    try {
      ws = protocols ? new WebSocket(url, protocols) : new WebSocket(url);
    } catch (e) {
      r.exception = String(e);
      finish();
      return;
    }
    ws.onopen = () => {
      r.opened = true;
      r.protocol = ws.protocol;
      for (const m of send) ws.send(opts.binary ? new TextEncoder().encode(m) : m);
      if (expect === 0) { ws.close(1000); finish(); }
    };
    ws.onmessage = (ev) => {
      r.messages.push(typeof ev.data === 'string' ? ev.data : '[binary]');
      if (r.messages.length === 1) for (const m of after) ws.send(m);
      if (r.messages.length >= expect) { ws.close(1000); finish(); }
    };
    ws.onerror = () => { r.error = true; };
    ws.onclose = (ev) => {
      r.closeCode = ev.code;
      r.closeReason = ev.reason;
      r.wasClean = ev.wasClean;
      finish();
    };
  });
};

// window.wsSession opens one long-lived socket the way an application keeps one, with the
// in-band refresh of `serve --refresh`
// (docs/protocol.md#expiry-notice-and-in-band-refresh): on {"type":"expiring"} it awaits
// window[opts.refresh]() for a fresh token and sends {"type":"refresh","token":…}. It sends
// "tick N" every tickMs (the application's traffic) and records every frame with the time
// the page got it. It settles when the server closes, at holdUntil (epoch ms: the page
// closes 1000), or after timeoutMs.
//
//   wsSession(url, protocols | null, { refresh: 'mintToken', tickMs: 200, holdUntil, timeoutMs })
//   → { opened, protocol, frames: [{ at, data }], sent: [{ at, data }], closeCode, closeReason,
//       closedAt, timedOut, exception, refreshError }
//
// window.wsSessionState is the live view ({ opened, echoes, frames }) a test can wait on.
window.wsSession = function wsSession(url, protocols, opts) {
  opts = opts || {};
  const tickMs = opts.tickMs || 200;
  const timeoutMs = opts.timeoutMs || 10000;
  const state = window.wsSessionState = { opened: false, echoes: 0, frames: 0 };
  return new Promise((resolve) => {
    const r = {
      url, opened: false, protocol: null, frames: [], sent: [], closeCode: null, closeReason: null,
      closedAt: null, timedOut: false, exception: null, refreshError: null,
    };
    let ws;
    let ticker = null;
    let hold = null;
    let settled = false;
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(hold);
      clearInterval(ticker);
      logSession(r);
      resolve(r);
    };
    const timer = setTimeout(() => {
      r.timedOut = true;
      try { ws && ws.close(); } catch (e) { /* ignore */ }
      finish();
    }, timeoutMs);
    const send = (data) => {
      r.sent.push({ at: Date.now(), data });
      ws.send(data);
    };
    try {
      ws = protocols ? new WebSocket(url, protocols) : new WebSocket(url);
    } catch (e) {
      r.exception = String(e);
      finish();
      return;
    }
    ws.onopen = () => {
      r.opened = state.opened = true;
      r.protocol = ws.protocol;
      let n = 0;
      ticker = setInterval(() => send(`tick ${++n}`), tickMs);
      if (opts.holdUntil) {
        // Close 1000 at holdUntil, then wait for the server's close frame (bounded by timeoutMs).
        hold = setTimeout(() => { clearInterval(ticker); ws.close(1000, 'done'); },
          Math.max(0, opts.holdUntil - Date.now()));
      }
    };
    ws.onmessage = async (ev) => {
      const data = typeof ev.data === 'string' ? ev.data : '[binary]';
      r.frames.push({ at: Date.now(), data });
      state.frames += 1;
      if (data.startsWith('tick ')) state.echoes += 1;
      let frame = null;
      try { frame = JSON.parse(data); } catch (e) { /* not a control frame */ }
      if (frame && frame.type === 'expiring' && opts.refresh) {
        try {
          const token = await window[opts.refresh]();
          if (ws.readyState === WebSocket.OPEN) send(JSON.stringify({ type: 'refresh', token }));
        } catch (e) {
          r.refreshError = String(e);
        }
      }
    };
    ws.onclose = (ev) => {
      r.closeCode = ev.code;
      r.closeReason = ev.reason;
      r.closedAt = Date.now();
      finish();
    };
  });
};

function logSession(r) {
  const el = document.getElementById('log');
  if (!el) return;
  const short = r.url.replace(/^ws:\/\//, '');
  const control = r.frames.filter((f) => f.data.startsWith('{')).map((f) => f.data);
  el.textContent += `${short} session opened=${r.opened} frames=${r.frames.length} ` +
    `control=${JSON.stringify(control)} sent=${r.sent.length} close=${r.closeCode} ${JSON.stringify(r.closeReason)}\n`;
}

function log(r) {
  const el = document.getElementById('log');
  if (!el) return;
  const short = r.url.replace(/^ws:\/\//, '');
  el.textContent += `${short} opened=${r.opened} protocol=${JSON.stringify(r.protocol)} ` +
    `messages=${r.messages.length} close=${r.closeCode} ${JSON.stringify(r.closeReason)}\n`;
}
