// The vehicle panel: live values, odometer, maintenance due, open alerts, trips, track
// playback with stops, fuel chart and commands.
import {call} from './api.js';
import {time, ago, num, esc, short, localInput} from './fmt.js';

const $ = (s) => document.querySelector(s);
let stopWatch = null;
let track = null; // {fixes, line, stops, marker, timer}

const commandKinds = [
  ['COMMAND_KIND_LOCATE_NOW', 'Locate now', 'ROLE_DISPATCHER'],
  ['COMMAND_KIND_SET_REPORT_INTERVAL', 'Report every 10 s', 'ROLE_DISPATCHER'],
  ['COMMAND_KIND_IMMOBILIZE', 'Immobilize', 'ROLE_SUPERVISOR'],
  ['COMMAND_KIND_RESUME', 'Resume', 'ROLE_SUPERVISOR'],
];

export function closePanel(app) {
  if (stopWatch) stopWatch();
  stopWatch = null;
  clearTrack(app);
  $('#panel').hidden = true;
  app.selected = '';
  app.layer.select('');
}

export async function openPanel(app, id) {
  if (stopWatch) stopWatch();
  clearTrack(app);
  const p = $('#panel');
  p.hidden = false;
  p.dataset.vehicle = id;
  const now = new Date();
  const cmdButtons = commandKinds.filter(([, , role]) => app.can(role))
    .map(([kind, label]) => `<button data-cmd="${kind.replace('COMMAND_KIND_', '')}">${label}</button>`).join('');
  p.innerHTML = `
    <div class="row"><h2 id="panel-title">${esc(id)}</h2><span class="spacer"></span><button id="panel-close">×</button></div>
    <div id="panel-sub" class="muted"></div>
    <dl class="kv" id="live"></dl>
    <h3>Maintenance due</h3><div id="p-due" class="muted">…</div>
    <h3>Open alerts</h3><ul id="p-alerts" class="list"></ul>
    <h3>Track playback</h3>
    <div class="row"><input id="track-from" type="datetime-local" value="${localInput(new Date(now - 2 * 3600e3))}">
      <input id="track-to" type="datetime-local" value="${localInput(new Date(now.getTime() + 60e3))}">
      <button id="track-load">Show track</button></div>
    <div class="timeline"><button id="play" disabled>Play</button>
      <select id="play-speed"><option value="1">1×</option><option value="10" selected>10×</option><option value="60">60×</option><option value="300">300×</option></select>
      <input id="timeline" type="range" min="0" max="0" value="0" disabled></div>
    <div id="play-time" class="muted"></div>
    <h3>Trips</h3><ul id="p-trips" class="list"></ul>
    <h3>Fuel</h3><div id="p-fuel" class="muted">…</div>
    <h3>Commands</h3>
    <div id="cmd-buttons" class="row">${cmdButtons || '<span class="muted">your role sends no commands</span>'}</div>
    <ul id="p-commands" class="list"></ul>`;
  $('#panel-close').addEventListener('click', () => closePanel(app));
  $('#track-load').addEventListener('click', () => loadTrack(app, id));
  $('#play').addEventListener('click', () => togglePlay(app));
  $('#timeline').addEventListener('input', () => showAt(app, Number($('#timeline').value)));
  $('#cmd-buttons').addEventListener('click', (e) => {
    const b = e.target.closest('button[data-cmd]');
    if (b) sendCommand(app, id, 'COMMAND_KIND_' + b.dataset.cmd);
  });
  $('#p-commands').addEventListener('click', async (e) => {
    const b = e.target.closest('button[data-cancel]');
    if (!b) return;
    try { await call('CommandService', 'CancelCommand', {commandId: b.dataset.cancel}); } catch (err) { alert(err.message); }
    loadCommands(id);
  });
  const v = app.vehicles.get(id);
  if (v) refreshPanelVehicle(app, v);
  // Inside the view the map's watch keeps the values live; outside it, a poll does (few
  // streams per page: see api.js).
  const poll = async () => {
    try {
      const r = await call('TrackingService', 'GetVehicle', {vehicleId: id});
      if (r.vehicle) { app.vehicles.set(id, r.vehicle); app.layer.upsert(r.vehicle); refreshPanelVehicle(app, r.vehicle); }
    } catch (e) { /* retried */ }
  };
  const timer = setInterval(poll, 2000);
  stopWatch = () => clearInterval(timer);
  loadDetails(app, id);
}

export function refreshPanelVehicle(app, v) {
  if ($('#panel').dataset.vehicle !== v.vehicleId || $('#panel').hidden) return;
  const st = v.state || {};
  const fix = st.lastFix || {};
  $('#panel-sub').textContent = [v.name, v.plate, (v.groups || []).join(', ')].filter(Boolean).join(' · ');
  const ign = st.ignition === undefined ? '—' : st.ignition ? 'on' : 'off';
  const fuel = st.fuelLevelL !== undefined ? `${num(st.fuelLevelL)} l` + (st.fuelLevelPct !== undefined ? ` (${num(st.fuelLevelPct, 0)} %)` : '') :
    st.fuelLevelPct !== undefined ? `${num(st.fuelLevelPct, 0)} %` : '—';
  $('#live').innerHTML = `
    <dt>status</dt><dd id="live-status">${esc(short(st.status, 'VEHICLE_STATUS_'))}</dd>
    <dt>speed</dt><dd id="live-speed">${num(fix.speedKmh, 0)} km/h</dd>
    <dt>heading</dt><dd>${num(fix.headingDeg, 0)}°</dd>
    <dt>fuel</dt><dd id="live-fuel">${fuel}</dd>
    <dt>ignition</dt><dd id="live-ignition">${ign}</dd>
    <dt>last seen</dt><dd id="live-seen">${time(st.lastSeenTime)} <span class="muted">${ago(st.lastSeenTime)}</span></dd>
    <dt>position</dt><dd>${fix.position ? num(fix.position.latitude, 5) + ', ' + num(fix.position.longitude, 5) : '—'}</dd>
    <dt>odometer</dt><dd id="live-odometer">${num((st.odometerM || 0) / 1000, 1)} km <span class="muted">${esc(short(st.odometerSource, 'ODOMETER_SOURCE_'))}</span></dd>
    <dt>engine hours</dt><dd>${num(st.engineHours, 1)}</dd>`;
}

async function loadDetails(app, id) {
  const now = new Date();
  const dayAgo = new Date(now - 24 * 3600e3).toISOString();
  call('MaintenanceService', 'ListDue', {vehicleId: id, horizonDays: 30}).then((r) => {
    const items = r.items || [];
    $('#p-due').innerHTML = items.length ? `<table>${items.map((d) => `<tr class="${esc(short(d.state, 'PLAN_STATE_').replace(' ', '_'))}"><td>${esc(d.planName || d.planId)}</td><td>${esc(short(d.state, 'PLAN_STATE_'))}</td><td>${remaining(d)}</td></tr>`).join('')}</table>` : 'nothing due in 30 days';
  }).catch((e) => { $('#p-due').textContent = e.message; });
  call('AlertService', 'ListAlerts', {vehicleId: id, state: 'ALERT_STATE_OPEN', pageSize: 20}).then((r) => {
    $('#p-alerts').innerHTML = (r.alerts || []).map((a) => `<li class="sev-${esc(short(a.severity, 'ALERT_SEVERITY_').toUpperCase())}">${esc(a.kind)} — ${esc(a.message)} <span class="muted">${time(a.lastTime)}</span></li>`).join('') || '<li class="muted">none</li>';
  }).catch((e) => { $('#p-alerts').innerHTML = `<li class="error">${esc(e.message)}</li>`; });
  call('TrackingService', 'ListTrips', {vehicleId: id, startTime: dayAgo, endTime: now.toISOString()}).then((r) => {
    const trips = (r.trips || []).slice().reverse();
    $('#p-trips').innerHTML = trips.map((t, i) => `<li data-trip="${i}" data-from="${esc(t.startTime)}" data-to="${esc(t.endTime)}">${time(t.startTime)} → ${time(t.endTime)}<br><span class="muted">${num((t.distanceM || 0) / 1000, 1)} km, max ${num(t.maxSpeedKmh, 0)} km/h</span></li>`).join('') || '<li class="muted">no trips in 24 h</li>';
    $('#p-trips').onclick = (e) => {
      const li = e.target.closest('li[data-from]');
      if (!li) return;
      $('#track-from').value = localInput(new Date(li.dataset.from));
      $('#track-to').value = localInput(new Date(new Date(li.dataset.to).getTime() + 60e3));
      loadTrack(app, id);
    };
  }).catch(() => {});
  call('MaintenanceService', 'GetFuelReport', {vehicleId: id, fromTime: dayAgo, toTime: now.toISOString()}).then((r) => fuelChart(id, r, dayAgo, now)).catch((e) => { $('#p-fuel').textContent = e.message; });
  loadCommands(id);
}

function remaining(d) {
  const parts = [];
  if (d.remainingKm !== undefined) parts.push(`${num(d.remainingKm, 0)} km`);
  if (d.remainingDays !== undefined) parts.push(`${num(d.remainingDays, 0)} d`);
  if (d.remainingEngineHours !== undefined) parts.push(`${num(d.remainingEngineHours, 0)} h`);
  return parts.join(' / ') || '—';
}
export {remaining};

// fuelChart draws the day's fuel level from the fuel report: the start level, the level
// before and after each refuel (green) and drain (red), and the end level.
async function fuelChart(id, r, from, to) {
  const rep = (r.reports || [])[0] || r.total;
  const el = $('#p-fuel');
  if (!rep || !rep.hasData) { el.textContent = 'no fuel data in 24 h'; return; }
  const t0 = new Date(from).getTime(), t1 = to.getTime();
  const events = [...(rep.refuels || []).map((e) => ({...e, k: 'refuel'})), ...(rep.drains || []).map((e) => ({...e, k: 'drain'}))]
    .sort((a, b) => new Date(a.startTime) - new Date(b.startTime));
  // Level points: start, before/after each event, end.
  const pts = [[t0, rep.startLevelL || 0]];
  for (const e of events) {
    pts.push([new Date(e.startTime).getTime(), e.levelBeforeL || 0]);
    pts.push([new Date(e.endTime || e.startTime).getTime(), e.levelAfterL || 0]);
  }
  pts.push([t1, rep.endLevelL || 0]);
  const max = Math.max(1, ...pts.map((p) => p[1])) * 1.1;
  const W = 320, H = 110;
  const x = (t) => ((t - t0) / (t1 - t0)) * W, y = (l) => H - (l / max) * H;
  const line = pts.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' ');
  const marks = events.map((e) => `<circle class="fuel-${e.k}" cx="${x(new Date(e.startTime).getTime()).toFixed(1)}" cy="${y(e.levelAfterL || 0).toFixed(1)}" r="4" fill="${e.k === 'refuel' ? '#1a9641' : '#c0392b'}"><title>${e.k} ${num(e.litres)} l at ${time(e.startTime)}</title></circle>`).join('');
  el.innerHTML = `<svg class="fuel" viewBox="0 0 ${W} ${H}" preserveAspectRatio="none"><polyline points="${line}" fill="none" stroke="#2c7bb6" stroke-width="1.5"/>${marks}</svg>
    <div>${num(rep.startLevelL)} l → ${num(rep.endLevelL)} l · refuelled ${num(rep.refuelledL)} l · drained ${num(rep.drainedL)} l · ${num(rep.litresPer100km)} l/100 km</div>`;
}

async function loadCommands(id) {
  try {
    const r = await call('CommandService', 'ListCommands', {vehicleId: id, pageSize: 20});
    $('#p-commands').innerHTML = (r.commands || []).map((c) => `<li data-command="${esc(c.commandId)}" data-state="${esc(c.state)}">${esc(short(c.kind, 'COMMAND_KIND_'))} <span class="state">${esc(short(c.state, 'COMMAND_STATE_'))}</span> <span class="muted">${esc(c.stateReason || '')} ${time(c.updateTime || c.issueTime)} by ${esc(c.issuedBy)}</span>${c.state === 'COMMAND_STATE_QUEUED' ? ` <button data-cancel="${esc(c.commandId)}" class="needs-dispatcher">Cancel</button>` : ''}</li>`).join('') || '<li class="muted">no commands</li>';
  } catch (e) {
    $('#p-commands').innerHTML = `<li class="error">${esc(e.message)}</li>`;
  }
}

async function sendCommand(app, id, kind) {
  const req = {vehicleId: id, kind};
  if (kind === 'COMMAND_KIND_SET_REPORT_INTERVAL') req.params = {interval_s: '10'};
  if (kind === 'COMMAND_KIND_IMMOBILIZE') {
    // Cutting an engine is confirmed by typing the vehicle's id.
    const ok = await confirmTyped(`Immobilize ${id}? The engine is cut once the vehicle is at a safe speed. Type the vehicle id to confirm.`, id);
    if (!ok) return;
  }
  try {
    await call('CommandService', 'SendCommand', req);
  } catch (e) {
    alert(`${short(kind, 'COMMAND_KIND_')} refused: ${e.message}`);
  }
  loadCommands(id);
  setTimeout(() => loadCommands(id), 3000);
}

function confirmTyped(text, expect) {
  const d = $('#confirm');
  $('#confirm-text').textContent = text;
  const input = $('#confirm-input');
  const ok = $('#confirm-ok');
  input.value = '';
  ok.disabled = true;
  input.oninput = () => { ok.disabled = input.value !== expect; };
  return new Promise((resolve) => {
    d.onclose = () => resolve(d.returnValue === 'ok' && input.value === expect);
    d.returnValue = '';
    d.showModal();
  });
}

function clearTrack(app) {
  if (!track) return;
  clearInterval(track.timer);
  for (const l of [track.line, track.marker, ...track.stopMarkers]) l && app.map.removeLayer(l);
  track = null;
}

async function loadTrack(app, id) {
  clearTrack(app);
  const from = new Date($('#track-from').value).toISOString();
  const to = new Date($('#track-to').value).toISOString();
  $('#play-time').textContent = 'loading…';
  let fixes = [], stops = [];
  try {
    const [tr, sr] = await Promise.all([
      call('TrackingService', 'GetTrack', {vehicleId: id, startTime: from, endTime: to, simplifyToleranceM: 2}),
      call('TrackingService', 'ListStops', {vehicleId: id, startTime: from, endTime: to}),
    ]);
    fixes = (tr.fixes || []).filter((f) => f.position);
    stops = sr.stops || [];
  } catch (e) {
    $('#play-time').textContent = e.message;
    return;
  }
  const ll = fixes.map((f) => [f.position.latitude || 0, f.position.longitude || 0]);
  track = {fixes, stopMarkers: [], timer: null, i: 0};
  if (ll.length) {
    track.line = L.polyline(ll, {color: '#d7191c', weight: 3, className: 'track-line'}).addTo(app.map);
    track.marker = L.circleMarker(ll[0], {radius: 7, color: '#000', fillColor: '#ffeb3b', fillOpacity: 1, className: 'playback-marker'}).addTo(app.map);
    app.map.fitBounds(track.line.getBounds().pad(0.2));
  }
  for (const s of stops) {
    if (!s.position) continue;
    const m = L.circleMarker([s.position.latitude || 0, s.position.longitude || 0], {radius: 6, color: s.dataGap ? '#7f7f7f' : '#6a1b9a', fillOpacity: 0.6, className: 'stop-marker'})
      .bindTooltip(`${s.dataGap ? 'data gap' : 'stop'} ${time(s.startTime)} → ${time(s.endTime)}`).addTo(app.map);
    track.stopMarkers.push(m);
  }
  const tl = $('#timeline');
  tl.max = String(Math.max(0, fixes.length - 1));
  tl.value = '0';
  tl.disabled = $('#play').disabled = fixes.length === 0;
  $('#play-time').textContent = fixes.length ? `${fixes.length} fixes, ${stops.length} stops` : 'no fixes in this range';
  $('#panel').dataset.trackFixes = String(fixes.length);
  if (fixes.length) showAt(app, 0);
}

function showAt(app, i) {
  if (!track || !track.fixes[i]) return;
  track.i = i;
  const f = track.fixes[i];
  track.marker.setLatLng([f.position.latitude || 0, f.position.longitude || 0]);
  $('#timeline').value = String(i);
  $('#play-time').textContent = `${time(f.deviceTime)} · ${num(f.speedKmh, 0)} km/h (${i + 1}/${track.fixes.length})`;
}

// togglePlay replays the track in device time, sped up by the chosen factor.
function togglePlay(app) {
  if (!track) return;
  if (track.timer) {
    clearInterval(track.timer);
    track.timer = null;
    $('#play').textContent = 'Play';
    return;
  }
  $('#play').textContent = 'Pause';
  if (track.i >= track.fixes.length - 1) track.i = 0;
  let clock = new Date(track.fixes[track.i].deviceTime).getTime();
  const tick = 100;
  track.timer = setInterval(() => {
    clock += tick * Number($('#play-speed').value);
    let i = track.i;
    while (i < track.fixes.length - 1 && new Date(track.fixes[i + 1].deviceTime).getTime() <= clock) i++;
    showAt(app, i);
    if (i >= track.fixes.length - 1) togglePlay(app);
  }, tick);
}
