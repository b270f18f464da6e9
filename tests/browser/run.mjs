#!/usr/bin/env node
// wsgate end-to-end suite: real `wsgate serve` processes, headless Debian Chromium driven by
// playwright-core (no browser download), and PASETO interop with independent npm
// implementations (paseto-ts for v4.local + v4.public, panva's `paseto` v3 for v4.public).
//
//   WSGATE_BIN=target/debug/wsgate node tests/browser/run.mjs [name-filter]
//
// Needs: /usr/bin/chromium (env CHROMIUM overrides) and `npm ci` here (scripts/test-deps.sh).
// Prints one line per case and a final `N passed, N failed`; exit 0 only if all passed.
// Artifacts (gitignored): tests/browser/artifacts/{results.png,example.png,example-refresh.png,results.json,*.log}.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';
import * as pts from 'paseto-ts/v4';
import panva from 'paseto';
import {
  WSGATE_BIN, wsgate, issue, keygen, serve, paserkId, publicFromSecret, footerOf, tamper,
  withTimeout, assert, assertEq, ensureDir, writeFile,
} from './lib.mjs';

const { V4 } = panva;
const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..', '..');
const ARTIFACTS = ensureDir(path.join(HERE, 'artifacts'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const CASE_TIMEOUT_MS = 30_000;
const SUITE_TIMEOUT_MS = 300_000;
const FILTER = process.argv[2] || '';
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run', '--disable-quic',
];
const RFC3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/;

const watchdog = setTimeout(() => {
  console.log(`suite: timed out after ${SUITE_TIMEOUT_MS} ms`);
  console.log('0 passed, 1 failed');
  process.exit(1);
}, SUITE_TIMEOUT_MS);
watchdog.unref();

if (!WSGATE_BIN || !fs.existsSync(WSGATE_BIN)) {
  console.error(`error: set WSGATE_BIN to the wsgate binary (got ${JSON.stringify(WSGATE_BIN)})`);
  process.exit(2);
}

// ---------------------------------------------------------------- fixture

const fx = {};
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'wsgate-browser-'));

async function setup() {
  const t0 = Date.now();
  fx.localKeyFile = await keygen(path.join(tmp, 'local.key'));
  fx.edKeyFile = await keygen(path.join(tmp, 'ed.key'), { pub: true });
  fx.edPubFile = fx.edKeyFile + '.pub';
  fx.localKey = fs.readFileSync(fx.localKeyFile, 'utf8').trim();
  fx.edSecret = fs.readFileSync(fx.edKeyFile, 'utf8').trim();
  fx.edPublic = fs.readFileSync(fx.edPubFile, 'utf8').trim();

  // Two static roots (temp dirs): the gate's own page, and the "app" page used by other origins.
  for (const name of ['gate', 'app']) {
    const dir = ensureDir(path.join(tmp, `static-${name}`));
    for (const f of ['index.html', 'helper.js']) {
      fs.copyFileSync(path.join(HERE, 'pages', f), path.join(dir, f));
    }
    fx[`${name}Static`] = dir;
  }
  // app: the allowed application origin; evil: a same-site origin that is not allowed
  // (127.0.0.1 on another port: cookies are host-scoped, so the browser attaches them: CSWSH).
  const [app, evil] = await Promise.all([
    serve('app', ['--key', fx.localKeyFile, '--static', fx.appStatic]),
    serve('evil', ['--key', fx.localKeyFile, '--static', fx.appStatic]),
  ]);
  const [gate, interop, example, strict, live] = await Promise.all([
    serve('gate', ['--key', fx.localKeyFile, '--key', fx.edPubFile, '--static', fx.gateStatic,
      '--allow-origin', app.origin]),
    serve('interop', ['--key', fx.localKeyFile, '--key', fx.edPubFile,
      '--auth', 'header,protocol,cookie,message,query']),
    // example: also --refresh (its "Long session" row) and an operators' listener to revoke it;
    // no leeway, so a session really ends at its token's exp unless it is refreshed.
    serve('example', ['--key', fx.localKeyFile, '--static', path.join(ROOT, 'examples', 'browser'),
      '--refresh', '--leeway', '0', '--admin-listen', '127.0.0.1:0']),
    // strict: no leeway (a token that expires during the session), short deadlines, small
    // messages, its own cookie name.
    serve('strict', ['--key', fx.localKeyFile, '--leeway', '0', '--allow-origin', app.origin,
      '--auth-timeout', '1', '--ticket-ttl', '1', '--max-message', '1024', '--cookie', 'app_session']),
    // live: long sessions (docs/protocol.md, refresh and revocation): expiry notice 2 s
    // before exp, in-band refresh, no leeway, and the operators' listener on its own
    // loopback port for POST /revoke.
    serve('live', ['--key', fx.localKeyFile, '--refresh', '--refresh-notice', '2', '--leeway', '0',
      '--admin-listen', '127.0.0.1:0', '--allow-origin', app.origin]),
  ]);
  for (const s of [example, live]) assert(s.admin, `${s.name}: no "event=admin_listen addr=…" line before listen`);
  Object.assign(fx, { app, evil, gate, interop, example, strict, live });
  fx.servers = [app, evil, gate, interop, example, strict, live];

  // tls: the gate over wss:// and https:// (tests/browser.rs makes the certificate; a
  // binary without the `tls` feature, or no certificate, skips the TLS cases). Chromium
  // trusts the leaf's key by its SPKI hash, given on its command line.
  const tlsCert = process.env.BROWSER_TLS_CERT;
  const tlsKey = process.env.BROWSER_TLS_KEY;
  if (tlsCert && tlsKey) {
    const tls = await serve('tls', ['--key', fx.localKeyFile, '--static', fx.gateStatic,
      '--tls-cert', tlsCert, '--tls-key', tlsKey]);
    Object.assign(tls, { origin: `https://${tls.host}`, ws: `wss://${tls.host}` });
    fx.tls = tls;
    fx.servers.push(tls);
    const leafPem = fs.readFileSync(tlsCert, 'utf8').split('-----END CERTIFICATE-----')[0] +
      '-----END CERTIFICATE-----\n';
    const spki = new crypto.X509Certificate(leafPem).publicKey.export({ type: 'spki', format: 'der' });
    fx.tlsSpki = crypto.createHash('sha256').update(spki).digest('base64');
  }

  fx.alice = await issue(fx.localKeyFile, 'alice', ['--ttl', '15m']);
  fx.alicePub = await issue(fx.edKeyFile, 'alice-pub', ['--ttl', '15m']);
  fx.aliceExp = pts.decrypt(fx.localKey, fx.alice).payload.exp;

  fx.browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: fx.tlsSpki
      ? [...CHROMIUM_ARGS, `--ignore-certificate-errors-spki-list=${fx.tlsSpki}`]
      : CHROMIUM_ARGS,
    timeout: 30_000,
  });
  fx.chromiumVersion = fx.browser.version();
  console.log(`# setup ${Date.now() - t0} ms; Chromium ${fx.chromiumVersion}; servers: ` +
    fx.servers.map((s) => `${s.name}=${s.port}${s.admin ? `+admin:${s.admin.split(':')[2]}` : ''}`).join(' '));
}

async function teardown() {
  if (fx.browser) await withTimeout(fx.browser.close(), 10_000, 'browser.close').catch(() => {});
  for (const s of fx.servers || []) {
    await s.stop();
    fs.writeFileSync(path.join(ARTIFACTS, `${s.name}.log`), s.logs().join('\n') + '\n');
  }
  fs.rmSync(tmp, { recursive: true, force: true });
}

// ---------------------------------------------------------------- browser helpers

/** A fresh browser context (own cookie jar), optionally with the token cookie for 127.0.0.1. */
async function newContext(cookieToken) {
  const ctx = await fx.browser.newContext();
  ctx.setDefaultTimeout(10_000);
  if (cookieToken !== undefined) {
    // Cookies are per host, not per port: this one goes to every 127.0.0.1 origin.
    await ctx.addCookies([{
      name: 'wsgate_token', value: cookieToken, url: fx.gate.origin + '/', httpOnly: true, sameSite: 'Lax',
    }]);
  }
  return ctx;
}

async function openPage(ctx, url) {
  const page = await ctx.newPage();
  const resp = await page.goto(url, { waitUntil: 'load', timeout: 10_000 });
  assert(resp && resp.status() === 200, `GET ${url}: status ${resp && resp.status()}`);
  const hasHelper = await page.evaluate(() => typeof window.wsTry === 'function');
  assert(hasHelper, `${url}: helper.js not loaded (is --static serving it?)`);
  return page;
}

/** Runs window.wsTry in the page. protocols: array or null. */
function wsTry(page, url, protocols, opts = {}) {
  return page.evaluate(([u, p, o]) => window.wsTry(u, p, o), [url, protocols, { timeoutMs: 5000, ...opts }]);
}

function describe(r) {
  return `opened=${r.opened} protocol=${JSON.stringify(r.protocol)} messages=${JSON.stringify(r.messages)} ` +
    `close=${r.closeCode} ${JSON.stringify(r.closeReason)}${r.timedOut ? ' TIMED OUT' : ''}`;
}

function expectEcho(r, text, what) {
  assert(r.opened, `${what}: socket did not open (${describe(r)})`);
  assert(r.messages[0] === text, `${what}: want echo ${JSON.stringify(text)} (${describe(r)})`);
}

function expectClose(r, code, reason, what) {
  assert(r.closeCode === code && r.closeReason === reason,
    `${what}: want close ${code} ${JSON.stringify(reason)} (${describe(r)})`);
}

function expectAuthenticated(msg, sub, exp, what) {
  let f;
  try { f = JSON.parse(msg); } catch { throw new Error(`${what}: first frame is not JSON: ${JSON.stringify(msg)}`); }
  assertEq(f.type, 'authenticated', `${what}: authenticated frame type`);
  assertEq(f.sub, sub, `${what}: authenticated frame sub`);
  assert(typeof f.exp === 'string' && RFC3339.test(f.exp), `${what}: exp not RFC 3339: ${JSON.stringify(f.exp)}`);
  if (exp) {
    assert(Math.abs(Date.parse(f.exp) - Date.parse(exp)) < 1000,
      `${what}: authenticated exp ${f.exp}, want the token's exp ${exp}`);
  }
  return f;
}

/** Runs window.wsSession in the page (a long-lived socket, see pages/helper.js). */
function wsSession(page, url, protocols, opts = {}) {
  return page.evaluate(([u, p, o]) => window.wsSession(u, p, o), [url, protocols, { timeoutMs: 10_000, ...opts }]);
}

function describeSession(r) {
  const control = r.frames.filter((f) => f.data.startsWith('{')).map((f) => f.data);
  const echoes = r.frames.filter((f) => f.data.startsWith('tick ')).length;
  return `opened=${r.opened} protocol=${JSON.stringify(r.protocol)} control=${JSON.stringify(control)} ` +
    `echoes=${echoes}/${r.sent.filter((m) => m.data.startsWith('tick ')).length} ` +
    `close=${r.closeCode} ${JSON.stringify(r.closeReason)}${r.timedOut ? ' TIMED OUT' : ''}` +
    `${r.refreshError ? ` refreshError=${r.refreshError}` : ''}${r.exception ? ` exception=${r.exception}` : ''}`;
}

/** wsgate's own frames of a session ({"type":…} objects), each with the time the page got it. */
function controlFrames(r) {
  return r.frames.filter((f) => f.data.startsWith('{')).map((f) => ({ at: f.at, ...JSON.parse(f.data) }));
}

/** POST /revoke on a server's operators' listener, from Node (an operator, not a page). */
async function revoke(server, body) {
  const res = await fetch(`${server.admin}/revoke`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  return { status: res.status, body: await res.text() };
}

/** The claims' exp of a wsgate-issued v4.local token, in epoch ms. */
const expOf = (token) => Date.parse(pts.decrypt(fx.localKey, token).payload.exp);

// ---------------------------------------------------------------- node-side client (interop)

/**
 * One WebSocket from Node (`ws`), no Origin header (not a browser).
 * Resolves { opened, protocol, status, messages, closeCode, closeReason, error }.
 */
function nodeWs(url, { protocols, headers = {}, send = [], sendAfterFirst = [], expect = 1, timeoutMs = 5000 } = {}) {
  return new Promise((resolve) => {
    const r = { opened: false, protocol: null, status: null, messages: [], closeCode: null, closeReason: null, error: null };
    let settled = false;
    let ws;
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      try { ws.terminate(); } catch { /* ignore */ }
      resolve(r);
    };
    const timer = setTimeout(() => { r.error = 'timeout'; finish(); }, timeoutMs);
    ws = new WebSocket(url, protocols, { headers, handshakeTimeout: timeoutMs });
    ws.on('unexpected-response', (req, res) => { r.status = res.statusCode; req.destroy(); finish(); });
    ws.on('open', () => {
      r.opened = true;
      r.status = 101;
      r.protocol = ws.protocol;
      for (const m of send) ws.send(m);
    });
    ws.on('message', (data, isBinary) => {
      r.messages.push(isBinary ? '[binary]' : data.toString('utf8'));
      if (r.messages.length === 1) for (const m of sendAfterFirst) ws.send(m);
      if (r.messages.length >= expect) finish();
    });
    ws.on('close', (code, reason) => { r.closeCode = code; r.closeReason = reason.toString('utf8'); finish(); });
    ws.on('error', (e) => { r.error = e.message; finish(); });
  });
}

/** Presents `token` by each method to the interop server; every one must authenticate. */
async function acceptedByEveryMethod(token, sub, label) {
  const base = fx.interop.ws;
  const text = `hi ${label}`;
  const methods = {
    header: () => nodeWs(`${base}/`, { headers: { Authorization: `Bearer ${token}` }, send: [text] }),
    protocol: () => nodeWs(`${base}/`, { protocols: ['wsgate', token], send: [text] }),
    cookie: () => nodeWs(`${base}/`, { headers: { Cookie: `wsgate_token=${token}` }, send: [text] }),
    query: () => nodeWs(`${base}/?token=${encodeURIComponent(token)}`, { send: [text] }),
    message: () => nodeWs(`${base}/`, { send: [token], sendAfterFirst: [text], expect: 2 }),
  };
  const failures = [];
  for (const [m, go] of Object.entries(methods)) {
    const r = await go();
    const got = m === 'message' ? r.messages[1] : r.messages[0];
    if (!r.opened || got !== text) {
      failures.push(`${m}: status=${r.status} messages=${JSON.stringify(r.messages)} close=${r.closeCode} ` +
        `${JSON.stringify(r.closeReason)} ${r.error || ''}`);
      continue;
    }
    if (m === 'protocol' && r.protocol !== 'wsgate') failures.push(`protocol: answered ${JSON.stringify(r.protocol)}`);
    if (m === 'message') {
      try { expectAuthenticated(r.messages[0], sub, null, 'message'); } catch (e) { failures.push(e.message); }
    }
  }
  assert(failures.length === 0, `${label} refused by: ${failures.join('; ')}`);
}

// ---------------------------------------------------------------- cases

const cases = [];
const test = (name, fn) => cases.push({ name, fn });

test('browser: cookie — app-origin page, new WebSocket(url) opens and echoes', async () => {
  const ctx = await newContext(fx.alice);
  try {
    const page = await openPage(ctx, fx.app.origin + '/');
    const r = await wsTry(page, fx.gate.ws + '/', null, { send: ['hello cookie'], expect: 1 });
    expectEcho(r, 'hello cookie', 'cookie socket from allowed origin');
  } finally { await ctx.close(); }
});

test('browser: wss:// — https page sets a Secure; SameSite=Strict cookie, socket opens; subprotocol too', async () => {
  assert(fx.tls, 'no TLS server (BROWSER_TLS_CERT / BROWSER_TLS_KEY unset)');
  const ctx = await newContext();
  try {
    const page = await openPage(ctx, fx.tls.origin + '/');
    assertEq(await page.evaluate(() => window.isSecureContext), true, 'https page is a secure context');
    await page.evaluate((t) => {
      document.cookie = `wsgate_token=${t}; Secure; SameSite=Strict; path=/`;
    }, fx.alice);
    const jar = await ctx.cookies(fx.tls.origin + '/');
    const set = jar.find((c) => c.name === 'wsgate_token');
    assert(set && set.secure && set.sameSite === 'Strict', `cookie as stored: ${JSON.stringify(set)}`);
    const r = await wsTry(page, fx.tls.ws + '/', null, { send: ['hello wss cookie'], expect: 1 });
    expectEcho(r, 'hello wss cookie', 'wss:// cookie socket');
    assert(fx.tls.logs().some((l) => l.includes('event=auth_ok') && l.includes('method=cookie')),
      'the wss:// socket authenticated by its cookie');
    // The subprotocol method over wss:// too.
    const p = await wsTry(page, fx.tls.ws + '/', ['wsgate', fx.alice], { send: ['hello wss protocol'], expect: 1 });
    expectEcho(p, 'hello wss protocol', 'wss:// subprotocol socket');
    assertEq(p.protocol, 'wsgate', 'wss:// subprotocol: ws.protocol');
  } finally { await ctx.close(); }
});

test('browser: subprotocol — ["wsgate", token] opens, ws.protocol === "wsgate", echoes', async () => {
  const ctx = await newContext();
  try {
    const page = await openPage(ctx, fx.app.origin + '/');
    for (const [label, token] of [['v4.local', fx.alice], ['v4.public', fx.alicePub]]) {
      const r = await wsTry(page, fx.gate.ws + '/', ['wsgate', token], { send: [`hello ${label}`], expect: 1 });
      expectEcho(r, `hello ${label}`, `subprotocol ${label}`);
      assertEq(r.protocol, 'wsgate', `subprotocol ${label}: ws.protocol`);
    }
  } finally { await ctx.close(); }
});

test('browser: first message — token frame, then {"type":"authenticated"}, then echo', async () => {
  const ctx = await newContext();
  try {
    const page = await openPage(ctx, fx.app.origin + '/');
    const raw = await wsTry(page, fx.gate.ws + '/', null, { send: [fx.alice], sendAfterFirst: ['after auth'], expect: 2 });
    assert(raw.opened, `raw token: socket did not open (${describe(raw)})`);
    assert(raw.messages.length === 2, `raw token: want 2 frames (${describe(raw)})`);
    expectAuthenticated(raw.messages[0], 'alice', fx.aliceExp, 'raw token');
    assertEq(raw.messages[1], 'after auth', 'raw token: echo after authentication');
    const json = await wsTry(page, fx.gate.ws + '/', null, {
      send: [JSON.stringify({ token: fx.alicePub, extra: 1 })], sendAfterFirst: ['json'], expect: 2,
    });
    assert(json.messages.length === 2, `{"token":…} form: want 2 frames (${describe(json)})`);
    expectAuthenticated(json.messages[0], 'alice-pub', null, '{"token":…} form');
    assertEq(json.messages[1], 'json', '{"token":…} form: echo');
  } finally { await ctx.close(); }
});

test('browser: ticket — cross-origin fetch POST /ticket (preflight), socket with it, 2nd use 4401', async () => {
  const ctx = await newContext();
  try {
    const page = await openPage(ctx, fx.app.origin + '/');
    // Authorization is not a CORS-safelisted header: Chromium must preflight; the fetch only
    // succeeds if the OPTIONS answer allowed this origin, POST and Authorization.
    const fetchTicket = () => page.evaluate(async ([url, token]) => {
      try {
        const res = await fetch(url, { method: 'POST', headers: { Authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(5000) });
        return { status: res.status, cacheControl: res.headers.get('cache-control'), body: await res.text() };
      } catch (e) { return { error: String(e) }; }
    }, [fx.gate.origin + '/ticket', fx.alice]);
    const got = await fetchTicket();
    assert(!got.error, `fetch POST /ticket from ${fx.app.origin} failed (CORS?): ${got.error}`);
    assertEq(got.status, 200, 'POST /ticket status');
    const body = JSON.parse(got.body);
    assert(typeof body.ticket === 'string' && body.ticket.startsWith('v4.local.'), `ticket: ${got.body}`);
    assertEq(body.expires_in, 30, 'expires_in (default --ticket-ttl)');
    assertEq(got.cacheControl, 'no-store', 'Cache-Control');

    const first = await wsTry(page, fx.gate.ws + '/', ['wsgate', body.ticket], { send: ['via ticket'], expect: 1 });
    expectEcho(first, 'via ticket', 'first use of the ticket');
    assertEq(first.protocol, 'wsgate', 'ticket socket ws.protocol');
    const second = await wsTry(page, fx.gate.ws + '/', ['wsgate', body.ticket]);
    assert(second.opened, `second use: want 101 then close, got no open (${describe(second)})`);
    expectClose(second, 4401, 'ticket already used', 'second use of the ticket');

    // Another ticket by first message: the session's exp is the minting token's
    // (docs/protocol.md#tickets).
    const again = JSON.parse((await fetchTicket()).body);
    const m = await wsTry(page, fx.gate.ws + '/', null, { send: [again.ticket], sendAfterFirst: ['x'], expect: 2 });
    assert(m.messages.length === 2, `ticket by first message (${describe(m)})`);
    expectAuthenticated(m.messages[0], 'alice', fx.aliceExp, 'ticket by first message');
  } finally { await ctx.close(); }
});

test('browser: ticket — credentialed cross-origin fetch with the cookie', async () => {
  const ctx = await newContext(fx.alice);
  try {
    const page = await openPage(ctx, fx.app.origin + '/');
    const got = await page.evaluate(async (url) => {
      try {
        const res = await fetch(url, { method: 'POST', credentials: 'include', signal: AbortSignal.timeout(5000) });
        return { status: res.status, body: await res.text() };
      } catch (e) { return { error: String(e) }; }
    }, fx.gate.origin + '/ticket');
    assert(!got.error, `credentialed fetch failed (needs exact Access-Control-Allow-Origin and -Credentials: true): ${got.error}`);
    assertEq(got.status, 200, 'POST /ticket with cookie: status');
    const { ticket } = JSON.parse(got.body);
    const r = await wsTry(page, fx.gate.ws + '/', ['wsgate', ticket], { send: ['cookie ticket'], expect: 1 });
    expectEcho(r, 'cookie ticket', 'socket with a cookie-minted ticket');
  } finally { await ctx.close(); }
});

test('browser: expired token — close 4401 "token expired" (subprotocol, first message, cookie)', async () => {
  const past = new Date(Date.now() - 3600_000);
  const expiredLocal = pts.encrypt(fx.localKey, {
    sub: 'alice', iat: new Date(past.getTime() - 600_000).toISOString(), exp: past.toISOString(),
  }, { footer: { kid: paserkId(fx.localKey) }, addExp: false, addIat: false, validatePayload: false });
  const expiredPub = await V4.sign({ sub: 'alice' }, fx.edSecret, {
    now: new Date(Date.now() - 7200_000), expiresIn: '1h', footer: { kid: paserkId(fx.edPublic) },
  });
  let ctx = await newContext();
  try {
    const page = await openPage(ctx, fx.app.origin + '/');
    for (const [label, token] of [['v4.local', expiredLocal], ['v4.public', expiredPub]]) {
      const p = await wsTry(page, fx.gate.ws + '/', ['wsgate', token]);
      expectClose(p, 4401, 'token expired', `subprotocol ${label}`);
      const m = await wsTry(page, fx.gate.ws + '/', null, { send: [token] });
      expectClose(m, 4401, 'token expired', `first message ${label}`);
    }
  } finally { await ctx.close(); }
  ctx = await newContext(expiredLocal);
  try {
    const page = await openPage(ctx, fx.gate.origin + '/');
    const c = await wsTry(page, fx.gate.ws + '/', null);
    expectClose(c, 4401, 'token expired', 'cookie (same-origin page)');
  } finally { await ctx.close(); }
});

test('browser: session ends with 4401 "token expired" when exp + leeway passes (--leeway 0)', async () => {
  const short = await issue(fx.localKeyFile, 'brief', ['--ttl', '3s']);
  const exp = Date.parse(pts.decrypt(fx.localKey, short).payload.exp);
  const ctx = await newContext();
  try {
    const page = await openPage(ctx, fx.app.origin + '/');
    const r = await wsTry(page, fx.strict.ws + '/', ['wsgate', short], { send: ['still here'], timeoutMs: 8000 });
    expectEcho(r, 'still here', 'short-lived token socket');
    expectClose(r, 4401, 'token expired', 'session past exp');
    const late = Date.now() - exp;
    assert(late > -1000 && late < 3000, `closed ${late} ms after exp (want at exp, within the test's slack)`);
    await new Promise((r) => setTimeout(r, 1100)); // past exp by more than the clock's second
    const again = await wsTry(page, fx.strict.ws + '/', ['wsgate', short]);
    expectClose(again, 4401, 'token expired', 'the same wsgate-issued token after its exp');
  } finally { await ctx.close(); }
});

test('browser: refresh — "expiring" at exp − notice, page sends {"type":"refresh"}, "refreshed", echoes past the first exp', async () => {
  // live: --refresh --refresh-notice 2 --leeway 0. Without the refresh the server would close at
  // the first exp (+ under 1 s: it counts whole seconds).
  const first = await issue(fx.localKeyFile, 'renewer', ['--ttl', '4s']);
  const exp1 = expOf(first);
  const minted = [];
  const ctx = await newContext();
  try {
    const page = await openPage(ctx, fx.app.origin + '/');
    // Stands in for the application's token endpoint: the page awaits window.mintToken().
    await page.exposeFunction('mintToken', async () => {
      const t = await issue(fx.localKeyFile, 'renewer', ['--ttl', '10m']);
      minted.push(t);
      return t;
    });
    const r = await wsSession(page, fx.live.ws + '/', ['wsgate', first], {
      refresh: 'mintToken', tickMs: 200, holdUntil: exp1 + 2000, timeoutMs: 12_000,
    });
    const what = describeSession(r);
    assert(r.opened, `socket did not open (${what})`);
    assertEq(r.protocol, 'wsgate', 'ws.protocol');
    assert(!r.refreshError && !r.timedOut, `session: ${what}`);
    const control = controlFrames(r);
    assertEq(control.map((c) => c.type), ['expiring', 'refreshed'],
      `wsgate's frames (one notice: the fresh token ends 10 min later) (${what})`);
    const [notice, refreshed] = control;
    assert(RFC3339.test(notice.exp) && Date.parse(notice.exp) === exp1,
      `expiring exp ${notice.exp}, want the first token's exp ${new Date(exp1).toISOString()}`);
    assert(notice.at >= exp1 - 2050 && notice.at < exp1,
      `expiring came ${notice.at - exp1} ms from exp, want in [-2000, 0) (exp − --refresh-notice, or at once)`);
    assertEq(minted.length, 1, 'fresh tokens the page asked for');
    const refreshes = r.sent.filter((m) => !m.data.startsWith('tick '));
    assertEq(refreshes.map((m) => JSON.parse(m.data)), [{ type: 'refresh', token: minted[0] }], 'refresh messages sent');
    assert(RFC3339.test(refreshed.exp) && Date.parse(refreshed.exp) === expOf(minted[0]),
      `refreshed exp ${refreshed.exp}, want the fresh token's exp ${new Date(expOf(minted[0])).toISOString()}`);
    assert(!r.frames.some((f) => f.data.includes('"refresh"') || f.data.includes(minted[0])),
      `the refresh message was echoed: wsgate must consume it (${what})`);
    // Every tick came back, in order, across the refresh: nothing lost, nothing extra.
    const ticks = r.sent.filter((m) => m.data.startsWith('tick ')).map((m) => m.data);
    const echoes = r.frames.filter((f) => f.data.startsWith('tick ')).map((f) => f.data);
    assertEq(echoes, ticks, 'echoes');
    const late = r.frames.filter((f) => f.data.startsWith('tick ') && f.at > exp1 + 1100);
    assert(late.length > 0, `no echo more than 1.1 s past the first token's exp (${what})`);
    assertEq([r.closeCode, r.closeReason], [1000, 'done'], "close: the page's own at holdUntil, not 4401");
  } finally { await ctx.close(); }
});

test('browser: revocation — POST /revoke {"sub"} on --admin-listen: page reads 4401 "token revoked", others stay', async () => {
  const token = await issue(fx.localKeyFile, 'revokee', ['--ttl', '15m']);
  const other = await issue(fx.localKeyFile, 'bystander', ['--ttl', '15m']);
  const ctx = await newContext();
  try {
    const page = await openPage(ctx, fx.app.origin + '/');
    const side = await openPage(ctx, fx.app.origin + '/');
    const holdUntil = Date.now() + 4000;
    const bystander = wsSession(side, fx.live.ws + '/', ['wsgate', other], { tickMs: 200, holdUntil, timeoutMs: 8000 });
    const session = wsSession(page, fx.live.ws + '/', ['wsgate', token], { tickMs: 200, timeoutMs: 8000 });
    // Both sessions are authenticated and echoing before the operator acts.
    for (const p of [page, side]) {
      await p.waitForFunction(() => window.wsSessionState && window.wsSessionState.echoes > 0, null, { timeout: 5000 });
    }
    const t0 = Date.now();
    const ans = await revoke(fx.live, { sub: 'revokee' });
    assertEq(ans.status, 200, `POST /revoke status (${ans.body})`);
    assertEq(JSON.parse(ans.body), { revoked: 'sub', closed: 1 }, 'POST /revoke answer');
    const r = await session;
    const what = describeSession(r);
    assert(r.closeCode === 4401 && r.closeReason === 'token revoked',
      `page's onclose: want 4401 "token revoked" (${what})`);
    assert(r.closedAt - t0 < 1500, `page saw the close ${r.closedAt - t0} ms after POST /revoke, want within 1 s (+0.5 s slack)`);
    const b = await bystander;
    assertEq([b.closeCode, b.closeReason], [1000, 'done'], `the other sub's session (${describeSession(b)})`);
    assert(b.frames.some((f) => f.data.startsWith('tick ') && f.at > r.closedAt),
      `the other sub's session stopped echoing at the revocation (${describeSession(b)})`);
    // The same token again, from the browser: 101 then the close the page can read
    // (docs/protocol.md#browsers-in-band-refusals).
    const again = await wsTry(page, fx.live.ws + '/', ['wsgate', token]);
    assert(again.opened, `revoked token by subprotocol: want 101 then close (${describe(again)})`);
    expectClose(again, 4401, 'token revoked', 'revoked token by subprotocol');
    const m = await wsTry(page, fx.live.ws + '/', null, { send: [token] });
    expectClose(m, 4401, 'token revoked', 'revoked token as the first message');
  } finally { await ctx.close(); }
});

test('browser: first-message deadline → 4408 "authentication timeout"; binary first frame → 4401', async () => {
  const ctx = await newContext();
  try {
    const page = await openPage(ctx, fx.app.origin + '/');
    const t0 = Date.now();
    const r = await wsTry(page, fx.strict.ws + '/', null, { timeoutMs: 5000 });
    const waited = Date.now() - t0;
    assert(r.opened, `no-token socket did not open for first-message auth (${describe(r)})`);
    expectClose(r, 4408, 'authentication timeout', 'silent socket (--auth-timeout 1)');
    assert(waited > 700 && waited < 3000, `closed after ${waited} ms, want about 1 s`);
    const b = await wsTry(page, fx.gate.ws + '/', null, { send: [fx.alice], binary: true });
    expectClose(b, 4401, 'invalid token', 'token in a binary first frame');
  } finally { await ctx.close(); }
});

test('browser: --cookie NAME — the named cookie authenticates; wsgate_token is then no token', async () => {
  let ctx = await fx.browser.newContext();
  try {
    await ctx.addCookies([{ name: 'app_session', value: fx.alice, url: fx.strict.origin + '/', httpOnly: true, sameSite: 'Lax' }]);
    const page = await openPage(ctx, fx.app.origin + '/');
    const r = await wsTry(page, fx.strict.ws + '/', null, { send: ['named cookie'], expect: 1 });
    expectEcho(r, 'named cookie', 'app_session cookie socket');
  } finally { await ctx.close(); }
  ctx = await newContext(fx.alice); // wsgate_token only
  try {
    const page = await openPage(ctx, fx.app.origin + '/');
    const r = await wsTry(page, fx.strict.ws + '/', null, { send: ['hello?'], timeoutMs: 5000 });
    assert(r.opened, `wsgate_token cookie on a --cookie app_session server: want first-message auth (${describe(r)})`);
    assert(r.messages.length === 0, `'hello?' as first message must not be echoed (${describe(r)})`);
    expectClose(r, 4401, 'invalid token', "'hello?' taken as the first-message token");
  } finally { await ctx.close(); }
});

test('browser: tickets — 401 readable cross-origin, no ticket from a ticket, expired ticket 4401', async () => {
  const ctx = await newContext();
  try {
    const page = await openPage(ctx, fx.app.origin + '/');
    const post = (url, token) => page.evaluate(async ([u, t]) => {
      try {
        const res = await fetch(u, { method: 'POST', headers: { Authorization: `Bearer ${t}` }, signal: AbortSignal.timeout(5000) });
        return { status: res.status, body: await res.text() };
      } catch (e) { return { error: String(e) }; }
    }, [url, token]);
    const bad = await post(fx.gate.origin + '/ticket', tamper(fx.alice));
    assert(!bad.error, `401 answer must carry CORS headers so the page can read it (docs/protocol.md#tickets): ${bad.error}`);
    assertEq(bad.status, 401, 'POST /ticket with a tampered token');
    const good = await post(fx.gate.origin + '/ticket', fx.alice);
    assertEq(good.status, 200, 'POST /ticket');
    const { ticket } = JSON.parse(good.body);
    const again = await post(fx.gate.origin + '/ticket', ticket);
    assertEq(again.status, 401, 'POST /ticket with a ticket as the Bearer token (a ticket cannot mint a ticket)');

    const short = await post(fx.strict.origin + '/ticket', fx.alice);
    assertEq(short.status, 200, 'POST /ticket on the --ticket-ttl 1 server');
    const st = JSON.parse(short.body);
    assertEq(st.expires_in, 1, 'expires_in with --ticket-ttl 1');
    await new Promise((r) => setTimeout(r, 2100));
    const late = await wsTry(page, fx.strict.ws + '/', ['wsgate', st.ticket]);
    expectClose(late, 4401, 'token expired', 'ticket used after its --ticket-ttl (no leeway)');
  } finally { await ctx.close(); }
});

test('browser: message over --max-message → close 1009 "message too big"', async () => {
  const ctx = await newContext();
  try {
    const page = await openPage(ctx, fx.app.origin + '/');
    const r = await wsTry(page, fx.strict.ws + '/', ['wsgate', fx.alice], {
      send: ['small'], sendAfterFirst: ['x'.repeat(2000)], timeoutMs: 5000,
    });
    expectEcho(r, 'small', 'message under the limit');
    expectClose(r, 1009, 'message too big', '2000-byte message with --max-message 1024');
  } finally { await ctx.close(); }
});

test('browser: tampered token — close 4401 "invalid token"', async () => {
  const ctx = await newContext();
  try {
    const page = await openPage(ctx, fx.app.origin + '/');
    for (const [label, token] of [['v4.local', tamper(fx.alice)], ['v4.public', tamper(fx.alicePub)]]) {
      const p = await wsTry(page, fx.gate.ws + '/', ['wsgate', token]);
      expectClose(p, 4401, 'invalid token', `subprotocol ${label}`);
      const m = await wsTry(page, fx.gate.ws + '/', null, { send: [token] });
      expectClose(m, 4401, 'invalid token', `first message ${label}`);
    }
  } finally { await ctx.close(); }
});

test('browser: no fallback — bad subprotocol token with a valid cookie is 4401 (methods in order, no fallback)', async () => {
  const ctx = await newContext(fx.alice);
  try {
    const page = await openPage(ctx, fx.app.origin + '/');
    const r = await wsTry(page, fx.gate.ws + '/', ['wsgate', tamper(fx.alice)]);
    expectClose(r, 4401, 'invalid token', 'tampered subprotocol token beside a valid cookie');
  } finally { await ctx.close(); }
});

test('browser: non-allowed origin cannot open a cookie socket (nor fetch a ticket)', async () => {
  const ctx = await newContext(fx.alice);
  try {
    // Same site (127.0.0.1), other port: the browser attaches the Lax cookie; only Origin protects.
    const page = await openPage(ctx, fx.evil.origin + '/');
    const c = await wsTry(page, fx.gate.ws + '/', null, { send: ['stolen?'], expect: 1 });
    assert(!c.opened && c.messages.length === 0,
      `cookie socket from ${fx.evil.origin} opened (${describe(c)})`);
    assertEq(c.closeCode, 1006, 'refused handshake (HTTP 403) seen by the page as close code');
    // With --allow-origin every Origin-bearing upgrade is checked, whatever the method.
    const p = await wsTry(page, fx.gate.ws + '/', ['wsgate', fx.alice], { send: ['x'], expect: 1 });
    assert(!p.opened, `subprotocol socket from non-allowed origin opened (${describe(p)})`);
    const f = await page.evaluate(async ([url, token]) => {
      try {
        const res = await fetch(url, { method: 'POST', headers: { Authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(5000) });
        return { status: res.status };
      } catch (e) { return { error: String(e) }; }
    }, [fx.gate.origin + '/ticket', fx.alice]);
    assert(f.error, `fetch POST /ticket from non-allowed origin was readable (status ${f.status}): CORS must refuse`);
    assert(f.error.startsWith('TypeError'), `fetch from non-allowed origin: want a CORS TypeError, got ${f.error}`);
  } finally { await ctx.close(); }
});

test('browser: same-origin --static page sets its cookie and connects', async () => {
  const ctx = await newContext();
  try {
    const page = await openPage(ctx, fx.gate.origin + '/');
    const r = await page.evaluate(async (token) => {
      document.cookie = `wsgate_token=${token}; path=/; SameSite=Strict`;
      return window.wsTry(`ws://${location.host}/`, null, { send: ['same origin'], expect: 1, timeoutMs: 5000 });
    }, fx.alice);
    expectEcho(r, 'same origin', 'same-origin cookie socket');
  } finally { await ctx.close(); }
});

test('browser: interop — npm-minted tokens (paseto-ts v4.local, paseto v4.public) by subprotocol', async () => {
  const local = pts.encrypt(fx.localKey, { sub: 'npm-local', exp: '15 minutes' }, { footer: { kid: paserkId(fx.localKey) } });
  const pub = await V4.sign({ sub: 'npm-public' }, fx.edSecret, { expiresIn: '15m' });
  const ctx = await newContext();
  try {
    const page = await openPage(ctx, fx.app.origin + '/');
    for (const [label, token, sub] of [['paseto-ts v4.local', local, 'npm-local'], ['paseto v4.public', pub, 'npm-public']]) {
      const r = await wsTry(page, fx.gate.ws + '/', ['wsgate', token], { send: ['npm'], expect: 1 });
      expectEcho(r, 'npm', label);
      const m = await wsTry(page, fx.gate.ws + '/', null, { send: [token], expect: 1 });
      assert(m.messages.length === 1, `${label} by first message (${describe(m)})`);
      expectAuthenticated(m.messages[0], sub, null, `${label} by first message`);
    }
  } finally { await ctx.close(); }
});

test('browser: examples/browser page — cookie, subprotocol, first message and ticket buttons', async () => {
  const ctx = await newContext();
  try {
    const page = await ctx.newPage();
    const resp = await page.goto(fx.example.origin + '/', { waitUntil: 'load', timeout: 10_000 });
    assertEq(resp && resp.status(), 200, 'GET examples/browser/index.html');
    await page.fill('#token', fx.alice);
    const statuses = {};
    for (const m of ['cookie', 'protocol', 'message', 'ticket']) {
      await page.click(`#btn-${m}`);
      await page.waitForFunction((id) => {
        const s = document.getElementById(id)?.dataset.status;
        return s === 'ok' || s === 'fail';
      }, `out-${m}`, { timeout: 10_000 });
      statuses[m] = await page.$eval(`#out-${m}`, (el) => `${el.dataset.status}: ${el.textContent}`);
    }
    await page.screenshot({ path: path.join(ARTIFACTS, 'example.png'), fullPage: true });
    const bad = Object.entries(statuses).filter(([, s]) => !s.startsWith('ok'));
    assert(bad.length === 0, `example page: ${bad.map(([m, s]) => `${m} → ${s}`).join('; ')}`);
  } finally { await ctx.close(); }
});

test('browser: examples/browser page — "Long session" refreshes past the first exp, then shows 4401 "token revoked"', async () => {
  // example: --refresh (notice 30 s: at once for this token) --leeway 0 --admin-listen.
  const first = await issue(fx.localKeyFile, 'example-live', ['--ttl', '3s']);
  const exp1 = expOf(first);
  const next = await issue(fx.localKeyFile, 'example-live', ['--ttl', '15m']);
  const ctx = await newContext();
  try {
    const page = await ctx.newPage();
    const resp = await page.goto(fx.example.origin + '/', { waitUntil: 'load', timeout: 10_000 });
    assertEq(resp && resp.status(), 200, 'GET examples/browser/index.html');
    await page.fill('#token', first);
    await page.fill('#next-token', next);
    await page.click('#btn-live');
    const text = () => page.$eval('#out-live', (el) => `${el.dataset.status}: ${el.textContent}`);
    await page.waitForFunction(() => {
      const el = document.getElementById('out-live');
      return el.dataset.refreshed === '1' || el.dataset.status === 'fail';
    }, null, { timeout: 10_000 });
    assert((await text()).includes('refreshed: the session now ends at'), `no refresh: ${await text()}`);
    // Past the first token's exp (+ the server's whole second), the page still gets echoes.
    await page.waitForFunction((t) => Date.now() > t, exp1 + 1100, { timeout: 10_000 });
    const echoes = await page.$eval('#out-live', (el) => Number(el.dataset.echoes));
    await page.waitForFunction((n) => {
      const el = document.getElementById('out-live');
      return Number(el.dataset.echoes) > n || el.dataset.status === 'fail';
    }, echoes, { timeout: 5000 });
    const alive = await text();
    assert(alive.startsWith('running:') && !alive.includes('closed'), `session after the first exp: ${alive}`);

    const ans = await revoke(fx.example, { sub: 'example-live' });
    assertEq(JSON.parse(ans.body), { revoked: 'sub', closed: 1 }, 'POST /revoke answer');
    await page.waitForFunction(() => document.getElementById('out-live').dataset.status === 'fail', null, { timeout: 5000 });
    await page.screenshot({ path: path.join(ARTIFACTS, 'example-refresh.png'), fullPage: true });
    const end = await text();
    assert(end.includes('closed 4401 "token revoked" → revoked by an operator: log in again'), `after POST /revoke: ${end}`);
  } finally { await ctx.close(); }
});

test('interop: v4.local minted by paseto-ts with wsgate\'s k4.local file, every method', async () => {
  const noKid = pts.encrypt(fx.localKey, { sub: 'ts-local', exp: '15 minutes' });
  const withKid = pts.encrypt(fx.localKey, { sub: 'ts-local', exp: '15 minutes' }, { footer: { kid: paserkId(fx.localKey) } });
  await acceptedByEveryMethod(noKid, 'ts-local', 'paseto-ts v4.local (no footer)');
  await acceptedByEveryMethod(withKid, 'ts-local', 'paseto-ts v4.local (kid footer)');
});

test('interop: v4.public minted by paseto (Node crypto) and paseto-ts with wsgate\'s k4.secret, every method', async () => {
  const kid = paserkId(fx.edPublic);
  assertEq(publicFromSecret(fx.edSecret), fx.edPublic, 'k4.public in F.pub is the public half of k4.secret in F');
  const panvaToken = await V4.sign({ sub: 'panva-pub' }, fx.edSecret, { expiresIn: '15m', footer: { kid } });
  const panvaNoKid = await V4.sign({ sub: 'panva-pub' }, fx.edSecret, { expiresIn: '15m' });
  const tsToken = pts.sign(fx.edSecret, { sub: 'ts-pub', exp: '15 minutes' }, { footer: { kid } });
  await acceptedByEveryMethod(panvaToken, 'panva-pub', 'paseto v4.public (kid footer)');
  await acceptedByEveryMethod(panvaNoKid, 'panva-pub', 'paseto v4.public (no footer)');
  await acceptedByEveryMethod(tsToken, 'ts-pub', 'paseto-ts v4.public (kid footer)');
});

test('interop: tokens `wsgate issue` mints verify with the npm packages (claims, kid)', async () => {
  const local = pts.decrypt(fx.localKey, fx.alice);
  assertEq(local.payload.sub, 'alice', 'paseto-ts decrypt: sub');
  assert(RFC3339.test(local.payload.exp), `exp not RFC 3339: ${local.payload.exp}`);
  const ttl = Date.parse(local.payload.exp) - Date.now();
  assert(ttl > 14 * 60_000 && ttl <= 15 * 60_000 + 5000, `--ttl 15m gave exp ${local.payload.exp}`);
  assertEq(JSON.parse(footerOf(fx.alice)), { kid: paserkId(fx.localKey) }, 'v4.local footer = {"kid": k4.lid of the key}');

  const complete = await V4.verify(fx.alicePub, fx.edPublic, { complete: true });
  assertEq(complete.payload.sub, 'alice-pub', 'paseto V4.verify: sub');
  assertEq(JSON.parse(complete.footer.toString('utf8')), { kid: paserkId(fx.edPublic) }, 'v4.public footer = {"kid": k4.pid}');
  const ts = pts.verify(fx.edPublic, fx.alicePub);
  assertEq(ts.payload.sub, 'alice-pub', 'paseto-ts verify: sub');

  const extra = await issue(fx.localKeyFile, 'carol', ['--ttl', '2h', '--aud', 'api', '--iss', 'me', '--claim', 'role=admin', '--jti', 'j-1']);
  const p = pts.decrypt(fx.localKey, extra).payload;
  assertEq([p.sub, p.aud, p.iss, p.role, p.jti], ['carol', 'api', 'me', 'admin', 'j-1'], 'issue --aud --iss --claim --jti');
});

test('interop: keys generated by the npm packages work in wsgate issue/verify', async () => {
  const localKey = pts.generateKeys('local');
  const lf = writeFile(tmp, 'npm-local.key', localKey + '\n');
  fs.chmodSync(lf, 0o600);
  const fromWsgate = await issue(lf, 'dave');
  assertEq(pts.decrypt(localKey, fromWsgate).payload.sub, 'dave', 'paseto-ts decrypts wsgate issue with an npm key');
  const fromTs = pts.encrypt(localKey, { sub: 'erin', exp: '5 minutes' });
  const v = await wsgate(['verify', '--key', lf, fromTs]);
  assert(v.code === 0, `wsgate verify of a paseto-ts token exited ${v.code}: ${v.stderr.trim()}`);
  assertEq(JSON.parse(v.stdout).sub, 'erin', 'wsgate verify claims');
  const bad = await wsgate(['verify', '--key', lf, tamper(fromTs)]);
  assertEq(bad.code, 1, 'wsgate verify of a tampered token: exit code');

  const { secretKey, publicKey } = await V4.generateKey('public', { format: 'paserk' });
  const sf = writeFile(tmp, 'npm-ed.key', secretKey + '\n');
  const pf = writeFile(tmp, 'npm-ed.key.pub', publicKey + '\n');
  fs.chmodSync(sf, 0o600);
  const signed = await issue(sf, 'frank');
  assertEq((await V4.verify(signed, publicKey)).sub, 'frank', 'paseto verifies wsgate issue with an npm Ed25519 key');
  const v2 = await wsgate(['verify', '--key', pf, await V4.sign({ sub: 'gina' }, secretKey, { expiresIn: '5m' })]);
  assert(v2.code === 0, `wsgate verify --key k4.public of a paseto token exited ${v2.code}: ${v2.stderr.trim()}`);
  assertEq(JSON.parse(v2.stdout).sub, 'gina', 'wsgate verify claims (public)');
});

// ---------------------------------------------------------------- runner

async function screenshotResults(results, totalMs) {
  if (!fx.browser) return;
  const esc = (s) => String(s).replace(/[&<>]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;' }[c]));
  const rows = results.map((r) => `<tr class="${r.ok ? 'ok' : 'fail'}"><td>${r.ok ? 'PASS' : 'FAIL'}</td>` +
    `<td>${esc(r.name)}</td><td>${r.ms} ms</td><td>${esc(r.error || '')}</td></tr>`).join('');
  const passed = results.filter((r) => r.ok).length;
  const html = `<!doctype html><meta charset="utf-8"><title>wsgate browser suite</title>
<style>body{font:14px sans-serif;margin:16px}td{border-bottom:1px solid #ddd;padding:4px 8px;vertical-align:top}
.ok td:first-child{color:#080;font-weight:bold}.fail td:first-child{color:#b00;font-weight:bold}
td:last-child{font:12px monospace;max-width:520px;word-break:break-word}</style>
<h1>wsgate browser + interop suite</h1>
<p>Chromium ${esc(fx.chromiumVersion)} · ${passed} passed, ${results.length - passed} failed · ${totalMs} ms · ${new Date().toISOString()}</p>
<table>${rows}</table>`;
  const ctx = await fx.browser.newContext({ viewport: { width: 1200, height: 800 } });
  try {
    const page = await ctx.newPage();
    await page.setContent(html, { timeout: 10_000 });
    await page.screenshot({ path: path.join(ARTIFACTS, 'results.png'), fullPage: true, timeout: 10_000 });
  } finally { await ctx.close(); }
}

async function main() {
  const t0 = Date.now();
  const results = [];
  let setupError = null;
  try {
    await withTimeout(setup(), 60_000, 'setup');
  } catch (e) {
    setupError = e;
    console.log(`not ok - setup: ${e.message.split('\n').join('\n    ')}`);
    results.push({ name: 'setup', ok: false, ms: Date.now() - t0, error: e.message });
  }
  const selected = cases.filter((c) => c.name.includes(FILTER));
  for (const c of selected) {
    const s = Date.now();
    let error = null;
    if (setupError) error = 'setup failed';
    else {
      try { await withTimeout(c.fn(), CASE_TIMEOUT_MS, c.name); } catch (e) { error = e.message || String(e); }
    }
    const ms = Date.now() - s;
    results.push({ name: c.name, ok: !error, ms, error });
    console.log(`${error ? 'not ok' : 'ok'} - ${c.name} (${ms} ms)`);
    if (error && !setupError) console.log(`    ${error.split('\n').join('\n    ')}`);
  }
  const totalMs = Date.now() - t0;
  try { await withTimeout(screenshotResults(results, totalMs), 20_000, 'screenshot'); } catch (e) {
    console.log(`# screenshot failed: ${e.message}`);
  }
  fs.writeFileSync(path.join(ARTIFACTS, 'results.json'), JSON.stringify({
    chromium: fx.chromiumVersion || null, node: process.version, totalMs, results,
  }, null, 2) + '\n');
  await teardown().catch((e) => console.log(`# teardown: ${e.message}`));
  const passed = results.filter((r) => r.ok).length;
  const failed = results.length - passed;
  console.log(`# ${totalMs} ms in all; artifacts in ${path.relative(process.cwd(), ARTIFACTS) || '.'}`);
  console.log(`${passed} passed, ${failed} failed`);
  process.exitCode = failed === 0 ? 0 : 1;
}

await main();
clearTimeout(watchdog);
