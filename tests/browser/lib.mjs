// Helpers for the wsgate browser/interop suite: wsgate processes, keys, PASERK ids,
// a tiny bounded test runner. No fixed ports, bounded timeouts everywhere.
import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { BLAKE2b } from '@stablelib/blake2b';

export const WSGATE_BIN = process.env.WSGATE_BIN || '';
const LISTEN_TIMEOUT_MS = 15_000;
const CLI_TIMEOUT_MS = 15_000;

const children = new Set();
function killAll() {
  for (const c of children) {
    try { c.kill('SIGKILL'); } catch { /* already gone */ }
  }
}
process.on('exit', killAll);

/** Runs `wsgate ARGS`; resolves { code, stdout, stderr } (never rejects on non-zero exit). */
export function wsgate(args, { timeoutMs = CLI_TIMEOUT_MS } = {}) {
  return new Promise((resolve, reject) => {
    execFile(WSGATE_BIN, args, { timeout: timeoutMs, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') {
        reject(new Error(`wsgate ${args[0]}: ${err.message}${err.killed ? ' (timed out)' : ''}\n${stderr}`));
        return;
      }
      resolve({ code: err ? err.code : 0, stdout, stderr });
    });
  });
}

/** `wsgate issue` → token (throws with stderr on failure). */
export async function issue(keyFile, sub, extra = []) {
  const r = await wsgate(['issue', '--key', keyFile, '--sub', sub, ...extra]);
  const token = r.stdout.trim();
  if (r.code !== 0 || !/^v4\.(local|public)\./.test(token)) {
    throw new Error(`wsgate issue exited ${r.code}: ${r.stderr.trim()} stdout=${JSON.stringify(token.slice(0, 40))}`);
  }
  return token;
}

/** `wsgate keygen [--public] --out F` → file path(s). */
export async function keygen(file, { pub = false } = {}) {
  const r = await wsgate(['keygen', ...(pub ? ['--public'] : []), '--out', file]);
  if (r.code !== 0) throw new Error(`wsgate keygen exited ${r.code}: ${r.stderr.trim()}`);
  if (!fs.existsSync(file)) {
    throw new Error(`wsgate keygen exited 0 but wrote no ${file}; stdout=${JSON.stringify(r.stdout.slice(0, 80))}`);
  }
  const key = fs.readFileSync(file, 'utf8').trim();
  const want = pub ? 'k4.secret.' : 'k4.local.';
  if (!key.startsWith(want)) throw new Error(`keygen wrote ${JSON.stringify(key.slice(0, 12))}, want ${want}…`);
  if (pub) {
    const p = fs.readFileSync(file + '.pub', 'utf8').trim();
    if (!p.startsWith('k4.public.')) throw new Error(`keygen --public wrote ${file}.pub without k4.public.`);
  }
  return file;
}

/**
 * Starts `wsgate serve --listen 127.0.0.1:0 ARGS`, waits for `event=listen addr=…`.
 * Returns { port, host, origin, ws, admin, logs(), stop() }; `admin` is the operators' listener
 * (`http://127.0.0.1:P`, from `event=admin_listen`, logged before `listen`) or null.
 */
export function serve(name, args) {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    delete env.WSGATE_KEY; // keys come from --key only
    const proc = spawn(WSGATE_BIN, ['serve', '--listen', '127.0.0.1:0', ...args], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env,
    });
    children.add(proc);
    let buf = '';
    let done = false;
    let admin = null;
    const lines = [];
    const timer = setTimeout(() => {
      if (done) return;
      done = true;
      try { proc.kill('SIGKILL'); } catch { /* gone */ }
      reject(new Error(`${name}: no "event=listen" line within ${LISTEN_TIMEOUT_MS} ms; stderr:\n${lines.join('\n')}`));
    }, LISTEN_TIMEOUT_MS);
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (chunk) => {
      buf += chunk;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (lines.length < 5000) lines.push(line);
        const a = !done && /\bevent=admin_listen\b.*?\baddr="?(127\.0\.0\.1:\d+)/.exec(line);
        if (a) admin = `http://${a[1]}`;
        const m = !done && /\bevent=listen\b.*?\baddr="?(127\.0\.0\.1):(\d+)/.exec(line);
        if (m) {
          done = true;
          clearTimeout(timer);
          const port = Number(m[2]);
          resolve({
            name,
            proc,
            port,
            host: `127.0.0.1:${port}`,
            origin: `http://127.0.0.1:${port}`,
            ws: `ws://127.0.0.1:${port}`,
            admin,
            logs: () => lines.slice(),
            stop: () => stopProc(proc),
          });
        }
      }
    });
    proc.on('error', (e) => {
      if (!done) { done = true; clearTimeout(timer); reject(new Error(`${name}: cannot start ${WSGATE_BIN}: ${e.message}`)); }
    });
    proc.on('exit', (code, sig) => {
      children.delete(proc);
      if (!done) {
        done = true;
        clearTimeout(timer);
        reject(new Error(`${name}: wsgate serve exited (${code ?? sig}) before listening; stderr:\n${lines.join('\n')}`));
      }
    });
  });
}

function stopProc(proc) {
  return new Promise((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
    const t = setTimeout(() => { try { proc.kill('SIGKILL'); } catch { /* gone */ } }, 3000);
    proc.once('exit', () => { clearTimeout(t); resolve(); });
    try { proc.kill('SIGTERM'); } catch { clearTimeout(t); resolve(); }
  });
}

// ---- PASERK helpers (independent of wsgate: BLAKE2b from @stablelib) ----

function b64url(bytes) {
  return Buffer.from(bytes).toString('base64url');
}

/** PASERK id: k4.lid (for k4.local) or k4.pid (for k4.public): h || b64url(BLAKE2b-264(h || paserk)). */
export function paserkId(paserk) {
  const h = paserk.startsWith('k4.local.') ? 'k4.lid.' : paserk.startsWith('k4.public.') ? 'k4.pid.' : null;
  if (!h) throw new Error('paserkId: want k4.local. or k4.public.');
  const d = new BLAKE2b(33).update(new TextEncoder().encode(h + paserk)).digest();
  return h + b64url(d);
}

/** k4.secret (64 bytes: seed || public) → k4.public PASERK. */
export function publicFromSecret(secret) {
  const raw = Buffer.from(secret.slice('k4.secret.'.length), 'base64url');
  if (raw.length !== 64) throw new Error('k4.secret must hold 64 bytes');
  return 'k4.public.' + b64url(raw.subarray(32));
}

/** Decodes the footer of a PASETO token (string, '' if none). */
export function footerOf(token) {
  const parts = token.split('.');
  return parts.length === 4 ? Buffer.from(parts[3], 'base64url').toString('utf8') : '';
}

/** Flips one character in the middle of the payload part: a tampered token of the same shape. */
export function tamper(token) {
  const parts = token.split('.');
  const p = parts[2];
  const i = Math.floor(p.length / 2);
  const c = p[i] === 'A' ? 'B' : 'A';
  parts[2] = p.slice(0, i) + c + p.slice(i + 1);
  return parts.join('.');
}

// ---- a small bounded runner ----

export function withTimeout(promise, ms, what) {
  let t;
  return Promise.race([
    promise.finally(() => clearTimeout(t)),
    new Promise((_, reject) => { t = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms); }),
  ]);
}

export function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

export function assertEq(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what}: got ${a}, want ${e}`);
}

export function ensureDir(p) {
  fs.mkdirSync(p, { recursive: true });
  return p;
}

export function writeFile(dir, name, text) {
  const p = path.join(dir, name);
  fs.writeFileSync(p, text);
  return p;
}
