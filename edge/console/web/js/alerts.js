// The alert feed: live (polled every 2 s, so new alerts and state changes made by other
// sessions show), acknowledge and resolve with a note, bulk actions; clicking flies to the
// vehicle. Zone events stream below it.
import {call, watch} from './api.js';
import {time, esc, short} from './fmt.js';

const $ = (s) => document.querySelector(s);
const alerts = new Map(); // id -> Alert
const selected = new Set();

export function initAlerts(app) {
  const refresh = async () => {
    try {
      const r = await call('AlertService', 'ListAlerts', {state: $('#alert-state').value || undefined, pageSize: 200});
      alerts.clear();
      for (const a of r.alerts || []) alerts.set(a.alertId, a);
      $('#alert-count').textContent = r.totalSize ? `(${r.totalSize})` : '';
      render(app);
    } catch (e) { /* shown by the connection dot; retried */ }
  };
  app.refreshAlerts = refresh;
  $('#alert-state').addEventListener('change', refresh);
  refresh();
  setInterval(refresh, 2000);
  // Zone events stream (WatchZoneEvents); the last hour's are not replayed.
  watch('GeofenceService', 'WatchZoneEvents', {}, (m) => zoneEvent(app, m.event));
  $('#feed').addEventListener('click', async (e) => {
    const li = e.target.closest('li[data-id]');
    if (!li) return;
    const id = li.dataset.id;
    if (e.target.matches('input[type=checkbox]')) {
      if (e.target.checked) selected.add(id); else selected.delete(id);
      return;
    }
    if (e.target.matches('button.ack')) { await act('AcknowledgeAlert', [id]); await refresh(); return; }
    if (e.target.matches('button.resolve')) { await act('ResolveAlert', [id]); await refresh(); return; }
    const a = alerts.get(id);
    if (a && a.vehicleId) app.flyTo(a.vehicleId);
  });
  $('#alert-all').addEventListener('change', (e) => {
    selected.clear();
    if (e.target.checked) for (const id of alerts.keys()) selected.add(id);
    render(app);
  });
  $('#bulk-ack').addEventListener('click', async () => { await act('AcknowledgeAlert', [...selected]); selected.clear(); $('#alert-all').checked = false; await refresh(); });
  $('#bulk-resolve').addEventListener('click', async () => { await act('ResolveAlert', [...selected]); selected.clear(); $('#alert-all').checked = false; await refresh(); });
}

async function act(method, ids) {
  const note = $('#alert-note').value;
  const failed = [];
  await Promise.all(ids.map((id) => call('AlertService', method, {alertId: id, note}).catch((e) => failed.push(`${id}: ${e.message}`))));
  if (failed.length) alert(failed.join('\n'));
}

let lastHTML = '';

function render(app) {
  const want = $('#alert-state').value;
  const list = [...alerts.values()].filter((a) => !want || a.state === want)
    .sort((a, b) => Number(b.alertId) - Number(a.alertId));
  const html = list.map((a) => {
    const sev = short(a.severity, 'ALERT_SEVERITY_').toUpperCase();
    const open = a.state === 'ALERT_STATE_OPEN', resolved = a.state === 'ALERT_STATE_RESOLVED';
    const who = a.acknowledgedBy ? ` · ack ${esc(a.acknowledgedBy)}${a.acknowledgeNote ? ': ' + esc(a.acknowledgeNote) : ''}` : '';
    const res = a.resolvedBy ? ` · resolved ${esc(a.resolvedBy)}${a.resolveNote ? ': ' + esc(a.resolveNote) : ''}` : '';
    return `<li data-id="${esc(a.alertId)}" data-state="${esc(a.state)}" data-kind="${esc(a.kind)}" class="alert-item sev-${sev}">
      <span class="needs-dispatcher"><input type="checkbox" ${selected.has(a.alertId) ? 'checked' : ''}></span>
      <b>${esc(a.kind)}</b> ${esc(a.vehicleId)} <span class="state">${esc(short(a.state, 'ALERT_STATE_'))}</span><br>
      <span>${esc(a.message)}</span><br>
      <span class="muted">${time(a.lastTime || a.createTime)}${a.occurrences > 1 ? ` · ×${a.occurrences}` : ''}${who}${res}</span>
      <span class="needs-dispatcher">${open ? '<button class="ack">Acknowledge</button>' : ''}${resolved ? '' : '<button class="resolve">Resolve</button>'}</span></li>`;
  }).join('') || '<li class="muted">no alerts</li>';
  // Re-rendered only on a change, so a click never lands on a replaced row.
  if (html !== lastHTML) { $('#feed').innerHTML = html; lastHTML = html; }
}

const zoneEvents = [];

function zoneEvent(app, ev) {
  if (!ev) return;
  zoneEvents.unshift(ev);
  zoneEvents.length = Math.min(zoneEvents.length, 100);
  const at = ev.attributes || {};
  $('#zone-events').innerHTML = zoneEvents.map((e) => {
    const a = e.attributes || {};
    return `<li class="zone-event" data-zone="${esc(a.zone_id)}" data-vehicle="${esc(e.vehicleId)}" data-kind="${esc(e.kind)}"><b>${esc(e.kind)}</b> ${esc(e.vehicleId)} · ${esc(a.zone_name || a.zone_id)}<br><span class="muted">${time(e.time)}</span></li>`;
  }).join('');
  if (app.onZoneEvent) app.onZoneEvent(ev, at);
}
