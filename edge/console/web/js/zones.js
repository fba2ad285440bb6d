// Zones: listed and drawn on the map; drawn (polygon, circle, corridor) and edited
// (dragging a polygon's or corridor's vertices, a circle's centre) by admins, with a
// schedule and a speed limit; GeoJSON import and export; a zone's occupants and recent
// events.
import {call} from './api.js';
import {time, esc, short} from './fmt.js';

const $ = (s) => document.querySelector(s);
const layers = new Map(); // zone id -> Leaflet layer
const zones = new Map(); // zone id -> Zone
let draft = null; // {kind, points: [LatLng], layer, handles}

export function initZones(app) {
  const refresh = async () => {
    try {
      const r = await call('GeofenceService', 'ListZones', {});
      draw(app, r.zones || []);
    } catch (e) { $('#zone-list').innerHTML = `<li class="error">${esc(e.message)}</li>`; }
  };
  app.refreshZones = refresh;
  refresh();
  setInterval(refresh, 15000);
  for (const kind of ['polygon', 'circle', 'corridor']) $('#draw-' + kind).addEventListener('click', () => startDraw(app, kind));
  $('#draw-finish').addEventListener('click', () => finishDraw(app));
  $('#draw-cancel').addEventListener('click', () => cancelDraw(app));
  $('#zone-discard').addEventListener('click', () => { cancelDraw(app); $('#zone-form').hidden = true; });
  $('#zone-form').addEventListener('submit', (e) => { e.preventDefault(); saveZone(app, refresh); });
  app.map.on('click', (e) => {
    if (!draft || draft.done) return;
    draft.points.push(e.latlng);
    redrawDraft(app);
    if (draft.kind === 'circle' && draft.points.length === 2) finishDraw(app);
  });
  $('#zone-list').addEventListener('click', (e) => {
    const li = e.target.closest('li[data-zone]');
    if (!li) return;
    const id = li.dataset.zone;
    if (e.target.matches('button.edit')) return editZone(app, id);
    if (e.target.matches('button.delete')) {
      if (confirm(`Delete zone ${id}?`)) call('GeofenceService', 'DeleteZone', {zoneId: id}).then(refresh).catch((err) => alert(err.message));
      return;
    }
    showZone(app, id);
  });
  $('#zones-export').addEventListener('click', async () => {
    const r = await call('GeofenceService', 'ExportZones', {});
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([r.geojson || '{}'], {type: 'application/geo+json'}));
    a.download = 'zones.geojson';
    a.click();
    URL.revokeObjectURL(a.href);
  });
  $('#zones-import').addEventListener('change', async (e) => {
    const f = e.target.files[0];
    if (!f) return;
    const n = await importGeoJSON(await f.text()).catch((err) => { alert(err.message); return 0; });
    e.target.value = '';
    if (n) refresh();
  });
}

// importGeoJSON creates one zone per feature (a FeatureCollection, a Feature or a bare
// geometry); a feature's properties may carry name, radius_m, buffer_m, speed_limit_kmh.
export async function importGeoJSON(text) {
  const doc = JSON.parse(text);
  const feats = doc.type === 'FeatureCollection' ? doc.features : doc.type === 'Feature' ? [doc] : [{type: 'Feature', geometry: doc, properties: {}}];
  let n = 0;
  const errs = [];
  for (const f of feats) {
    const p = f.properties || {};
    const zone = {zoneId: p.zone_id || p.id || '', name: p.name || '', geojson: JSON.stringify(f.geometry),
      radiusM: Number(p.radius_m || 0), bufferM: Number(p.buffer_m || 0), speedLimitKmh: Number(p.speed_limit_kmh || 0)};
    try { await call('GeofenceService', 'CreateZone', {zone}); n++; } catch (e) { errs.push(`${zone.name || zone.zoneId || 'feature'}: ${e.message}`); }
  }
  if (errs.length) alert(`imported ${n}; refused:\n` + errs.join('\n'));
  return n;
}

function draw(app, list) {
  const seen = new Set();
  for (const z of list) {
    seen.add(z.zoneId);
    const old = zones.get(z.zoneId);
    zones.set(z.zoneId, z);
    if (old && old.revision === z.revision && layers.has(z.zoneId)) continue;
    if (layers.has(z.zoneId)) app.map.removeLayer(layers.get(z.zoneId));
    const l = zoneLayer(z);
    if (l) { l.addTo(app.map); layers.set(z.zoneId, l); }
  }
  for (const id of [...zones.keys()]) {
    if (seen.has(id)) continue;
    zones.delete(id);
    if (layers.has(id)) { app.map.removeLayer(layers.get(id)); layers.delete(id); }
  }
  $('#zone-list').innerHTML = list.map((z) => `<li data-zone="${esc(z.zoneId)}" class="zone-item">${esc(z.name || z.zoneId)} <span class="muted">${esc(z.shape)}${z.speedLimitKmh ? ` · ${z.speedLimitKmh} km/h` : ''}${z.schedule ? ' · scheduled' : ''}</span>
    <span class="needs-admin"><button class="edit">Edit</button><button class="delete">Delete</button></span></li>`).join('') || '<li class="muted">no zones</li>';
}

function zoneLayer(z) {
  let g;
  try { g = JSON.parse(z.geojson); } catch (e) { return null; }
  if (g.type === 'Feature') g = g.geometry;
  const style = {color: '#8e44ad', weight: 2, fillOpacity: 0.12, className: 'zone-shape'};
  const tip = (l) => l.bindTooltip(z.name || z.zoneId);
  if (g.type === 'Point' && z.radiusM) return tip(L.circle([g.coordinates[1], g.coordinates[0]], {...style, radius: z.radiusM}));
  if (g.type === 'LineString') {
    // A corridor: its centre line, drawn as wide as the corridor at the current scale is
    // not possible in pixels, so the line and its half-width in the tooltip.
    return L.polyline(g.coordinates.map((c) => [c[1], c[0]]), {...style, weight: 6, opacity: 0.6}).bindTooltip(`${z.name || z.zoneId} (±${z.bufferM} m)`);
  }
  return tip(L.geoJSON(g, {style: () => style}));
}

function startDraw(app, kind) {
  cancelDraw(app);
  draft = {kind, points: [], layer: null, handles: []};
  app.drawing = true;
  app.map.doubleClickZoom.disable();
  $('#draw-finish').disabled = kind === 'circle';
  $('#draw-cancel').disabled = false;
  $('#draw-hint').textContent = kind === 'circle' ? 'click the centre, then a point on the edge' :
    kind === 'corridor' ? 'click the points of the route, then Finish' : 'click the corners, then Finish';
}

function redrawDraft(app) {
  if (draft.layer) app.map.removeLayer(draft.layer);
  for (const h of draft.handles) app.map.removeLayer(h);
  draft.handles = [];
  const pts = draft.points;
  const style = {color: '#e67e22', weight: 2, dashArray: '4 4', className: 'zone-draft'};
  if (draft.kind === 'circle') {
    draft.layer = pts.length === 2 ? L.circle(pts[0], {...style, radius: app.map.distance(pts[0], pts[1])}) : L.circleMarker(pts[0], {...style, radius: 4});
  } else if (draft.kind === 'polygon' && pts.length >= 3) {
    draft.layer = L.polygon(pts, style);
  } else {
    draft.layer = L.polyline(pts, style);
  }
  draft.layer.addTo(app.map);
  // Vertex handles: dragging one reshapes the draft (this is also how a zone is edited).
  pts.forEach((p, i) => {
    const h = L.marker(p, {draggable: true, icon: L.divIcon({className: 'vertex', html: '<div style="width:10px;height:10px;background:#fff;border:2px solid #e67e22"></div>', iconSize: [14, 14]})});
    h.on('drag', (e) => { draft.points[i] = e.target.getLatLng(); if (draft.layer.setLatLngs) draft.layer.setLatLngs(draft.points); else if (draft.layer.setLatLng) { draft.layer.setLatLng(draft.points[0]); if (draft.points[1] && draft.layer.setRadius) draft.layer.setRadius(app.map.distance(draft.points[0], draft.points[1])); } });
    h.addTo(app.map);
    draft.handles.push(h);
  });
}

function finishDraw(app) {
  if (!draft) return;
  const need = draft.kind === 'polygon' ? 3 : 2;
  if (draft.points.length < need) { $('#draw-hint').textContent = `needs at least ${need} points`; return; }
  draft.done = true;
  app.drawing = false;
  $('#draw-finish').disabled = true;
  $('#draw-hint').textContent = 'drag the corners to adjust, then save';
  const f = $('#zone-form');
  f.hidden = false;
  $('#zone-width-row').hidden = draft.kind !== 'corridor';
  if (!draft.editing) { $('#zone-id').value = ''; $('#zone-name').value = ''; }
  $('#zone-error').textContent = '';
  $('#zone-name').focus();
}

function cancelDraw(app) {
  if (draft) {
    if (draft.layer) app.map.removeLayer(draft.layer);
    for (const h of draft.handles) app.map.removeLayer(h);
    if (draft.editing && layers.has(draft.editing)) layers.get(draft.editing).addTo(app.map);
  }
  draft = null;
  app.drawing = false;
  app.map.doubleClickZoom.enable();
  $('#draw-finish').disabled = true;
  $('#draw-cancel').disabled = true;
  $('#draw-hint').textContent = '';
}

function geometry(app) {
  const c = (p) => [Number(p.lng.toFixed(6)), Number(p.lat.toFixed(6))];
  if (draft.kind === 'circle') return {geo: {type: 'Point', coordinates: c(draft.points[0])}, radiusM: Math.round(app.map.distance(draft.points[0], draft.points[1]))};
  if (draft.kind === 'corridor') return {geo: {type: 'LineString', coordinates: draft.points.map(c)}, bufferM: Number($('#zone-width').value) || 50};
  const ring = draft.points.map(c);
  ring.push(ring[0]);
  return {geo: {type: 'Polygon', coordinates: [ring]}};
}

async function saveZone(app, refresh) {
  if (!draft) return;
  const g = geometry(app);
  const zone = {
    zoneId: $('#zone-id').value, name: $('#zone-name').value.trim(), geojson: JSON.stringify(g.geo),
    radiusM: g.radiusM || 0, bufferM: g.bufferM || 0, speedLimitKmh: Number($('#zone-speed').value) || 0,
  };
  const days = $('#zone-days').value.split(',').map((s) => parseInt(s, 10)).filter((n) => n >= 1 && n <= 7);
  if (days.length || $('#zone-start').value) {
    zone.schedule = {daysOfWeek: days, startTime: $('#zone-start').value, endTime: $('#zone-end').value,
      timeZone: Intl.DateTimeFormat().resolvedOptions().timeZone};
  }
  if ($('#zone-alert').checked) zone.alertPolicy = {raise: ['ZONE_EVENT_KIND_ENTER', 'ZONE_EVENT_KIND_EXIT']};
  const old = zone.zoneId && zones.get(zone.zoneId);
  try {
    if (old) {
      await call('GeofenceService', 'UpdateZone', {zone: {...old, ...zone, shape: undefined, revision: undefined, updateTime: undefined}, expectedRevision: old.revision});
    } else {
      await call('GeofenceService', 'CreateZone', {zone});
    }
  } catch (e) {
    $('#zone-error').textContent = e.message;
    return;
  }
  const editing = draft.editing;
  cancelDraw(app);
  if (editing && layers.has(editing)) { app.map.removeLayer(layers.get(editing)); layers.delete(editing); }
  $('#zone-form').hidden = true;
  await refresh();
}

function editZone(app, id) {
  const z = zones.get(id);
  if (!z) return;
  let g = JSON.parse(z.geojson);
  if (g.type === 'Feature') g = g.geometry;
  let kind, pts;
  if (g.type === 'Point') {
    kind = 'circle';
    const c = L.latLng(g.coordinates[1], g.coordinates[0]);
    // A point on the circle's edge, due east.
    const edge = L.latLng(c.lat, c.lng + (z.radiusM / (111320 * Math.cos((c.lat * Math.PI) / 180))));
    pts = [c, edge];
  } else if (g.type === 'LineString') {
    kind = 'corridor';
    pts = g.coordinates.map((c) => L.latLng(c[1], c[0]));
  } else if (g.type === 'Polygon') {
    kind = 'polygon';
    pts = g.coordinates[0].slice(0, -1).map((c) => L.latLng(c[1], c[0]));
  } else {
    alert(`${g.type} zones are edited through GeoJSON export and import`);
    return;
  }
  startDraw(app, kind);
  draft.points = pts;
  draft.editing = id;
  if (layers.has(id)) app.map.removeLayer(layers.get(id));
  redrawDraft(app);
  finishDraw(app);
  $('#zone-id').value = id;
  $('#zone-name').value = z.name || '';
  $('#zone-width').value = z.bufferM || 50;
  $('#zone-speed').value = z.speedLimitKmh || 0;
  $('#zone-days').value = (z.schedule && z.schedule.daysOfWeek || []).join(',');
  $('#zone-start').value = z.schedule ? z.schedule.startTime || '' : '';
  $('#zone-end').value = z.schedule ? z.schedule.endTime || '' : '';
  $('#zone-alert').checked = !!(z.alertPolicy && (z.alertPolicy.raise || []).length);
}

async function showZone(app, id) {
  const z = zones.get(id);
  if (layers.has(id) && layers.get(id).getBounds) app.map.fitBounds(layers.get(id).getBounds().pad(0.3));
  const el = $('#zone-detail');
  el.innerHTML = `<h3>${esc(z ? z.name || id : id)}</h3><div id="zone-occupants" class="muted">…</div><ul id="zone-recent" class="list"></ul>`;
  const from = new Date(Date.now() - 24 * 3600e3).toISOString();
  try {
    const [occ, ev] = await Promise.all([
      call('GeofenceService', 'VehiclesInZone', {zoneId: id}),
      call('GeofenceService', 'ListZoneEvents', {zoneId: id, from, limit: 50}),
    ]);
    const ids = occ.vehicleIds || [];
    $('#zone-occupants').innerHTML = `${ids.length} inside: ` + ids.slice(0, 50).map((v) => `<a href="#" data-vehicle="${esc(v)}">${esc(v)}</a>`).join(', ');
    $('#zone-recent').innerHTML = (ev.events || []).slice().reverse().map((e) => `<li data-vehicle="${esc(e.vehicleId)}">${esc(e.kind)} ${esc(e.vehicleId)} <span class="muted">${time(e.time)}</span></li>`).join('') || '<li class="muted">no events in 24 h</li>';
    el.onclick = (e) => {
      const t = e.target.closest('[data-vehicle]');
      if (t) { e.preventDefault(); app.flyTo(t.dataset.vehicle); }
    };
  } catch (e) {
    $('#zone-occupants').textContent = e.message;
  }
}

export {short};
