// The fleet.v1 API over the Connect protocol (JSON): unary calls are plain POSTs, server
// streams are enveloped messages read from the response body. Same services, same tokens
// as gRPC clients.

export class APIError extends Error {
  constructor(code, message) {
    super(message || code);
    this.code = code;
  }
}

let token = sessionStorage.getItem('fleetwire.token') || '';

export function setToken(t) {
  token = t;
  if (t) sessionStorage.setItem('fleetwire.token', t);
  else sessionStorage.removeItem('fleetwire.token');
}

export function hasToken() { return token !== ''; }

function headers(contentType) {
  const h = {'Content-Type': contentType, 'Connect-Protocol-Version': '1'};
  if (token) h['Authorization'] = 'Bearer ' + token;
  return h;
}

// call invokes a unary method, e.g. call('TrackingService', 'GetVehicle', {vehicleId: 'v1'}).
export async function call(service, method, req = {}, signal) {
  const res = await fetch(`/fleet.v1.${service}/${method}`, {
    method: 'POST', headers: headers('application/json'), body: JSON.stringify(req), signal,
  });
  const text = await res.text();
  let body = {};
  try { body = text ? JSON.parse(text) : {}; } catch (e) { body = {message: text}; }
  if (!res.ok) throw new APIError(body.code || String(res.status), body.message || res.statusText);
  return body;
}

function envelope(obj) {
  const data = new TextEncoder().encode(JSON.stringify(obj));
  const out = new Uint8Array(5 + data.length);
  new DataView(out.buffer).setUint32(1, data.length);
  out.set(data, 5);
  return out;
}

// stream invokes a server-streaming method and calls onMessage for each response until the
// stream ends or signal aborts. Resolves when the server closes the stream cleanly; rejects
// with an APIError otherwise.
export async function stream(service, method, req, onMessage, signal) {
  const res = await fetch(`/fleet.v1.${service}/${method}`, {
    method: 'POST', headers: headers('application/connect+json'), body: envelope(req), signal,
  });
  if (!res.ok) {
    let body = {};
    try { body = await res.json(); } catch (e) { /* not JSON */ }
    throw new APIError(body.code || String(res.status), body.message || res.statusText);
  }
  const reader = res.body.getReader();
  let buf = new Uint8Array(0);
  const dec = new TextDecoder();
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    const joined = new Uint8Array(buf.length + value.length);
    joined.set(buf);
    joined.set(value, buf.length);
    buf = joined;
    let off = 0;
    while (buf.length - off >= 5) {
      const view = new DataView(buf.buffer, buf.byteOffset + off);
      const flags = view.getUint8(0);
      const len = view.getUint32(1);
      if (buf.length - off - 5 < len) break;
      const msg = JSON.parse(dec.decode(buf.subarray(off + 5, off + 5 + len)));
      off += 5 + len;
      if (flags & 2) {
        if (msg.error) throw new APIError(msg.error.code, msg.error.message);
        return;
      }
      onMessage(msg);
    }
    buf = buf.slice(off);
  }
  throw new APIError('unavailable', 'stream closed without end');
}

// watch keeps a stream open: it reopens it after an error (not after abort), with backoff.
// A hidden tab closes its streams and reopens them when shown again: over plain HTTP/1.1 a
// browser gives one server six connections for all its tabs, and each open stream holds
// one, so background tabs must not hold them.
export function watch(service, method, req, onMessage, onState) {
  const ctl = new AbortController();
  let attempt = null;
  let delay = 500;
  const visible = () => document.visibilityState !== 'hidden';
  const onVis = () => { if (!visible() && attempt) attempt.abort(); };
  document.addEventListener('visibilitychange', onVis);
  ctl.signal.addEventListener('abort', () => { document.removeEventListener('visibilitychange', onVis); if (attempt) attempt.abort(); });
  (async () => {
    while (!ctl.signal.aborted) {
      if (!visible()) {
        await new Promise((r) => document.addEventListener('visibilitychange', r, {once: true}));
        continue;
      }
      attempt = new AbortController();
      try {
        onState && onState('open');
        await stream(service, method, typeof req === 'function' ? req() : req, (m) => { delay = 500; onMessage(m); }, attempt.signal);
      } catch (e) {
        if (ctl.signal.aborted) return;
        if (attempt.signal.aborted) continue; // hidden: wait to be shown
        onState && onState('error', e);
        if (e.code === 'unauthenticated' || e.code === 'permission_denied') return;
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
    }
  })();
  return () => ctl.abort();
}
