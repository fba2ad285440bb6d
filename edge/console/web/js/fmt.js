// Every time is shown in the user's time zone, with the date.
const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
const dtf = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit',
  hour12: false, timeZoneName: 'short',
});

export function time(ts) {
  if (!ts) return '—';
  const d = ts instanceof Date ? ts : new Date(ts);
  if (isNaN(d)) return '—';
  return dtf.format(d);
}

export function zoneName() { return zone; }

export function ago(ts) {
  if (!ts) return '';
  const s = Math.round((Date.now() - new Date(ts).getTime()) / 1000);
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function num(v, digits = 1) {
  return v === undefined || v === null ? '—' : Number(v).toFixed(digits);
}

export function esc(s) {
  return String(s ?? '').replace(/[&<>"']/g, (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c]));
}

// short strips an enum's prefix: VEHICLE_STATUS_MOVING -> moving.
export function short(e, prefix) {
  return String(e || '').replace(prefix, '').toLowerCase().replace(/_/g, ' ');
}

// localInput renders a Date for <input type=datetime-local> in the user's zone.
export function localInput(d) {
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}
