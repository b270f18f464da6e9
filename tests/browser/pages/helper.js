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

function log(r) {
  const el = document.getElementById('log');
  if (!el) return;
  const short = r.url.replace(/^ws:\/\//, '');
  el.textContent += `${short} opened=${r.opened} protocol=${JSON.stringify(r.protocol)} ` +
    `messages=${r.messages.length} close=${r.closeCode} ${JSON.stringify(r.closeReason)}\n`;
}
