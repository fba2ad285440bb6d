// The dispatch console: sign-in, the live map, the vehicle list and the tabs. Everything
// it shows comes from the fleet.v1 API over the Connect protocol (api.js).
import {call, watch, setToken, hasToken, APIError} from './api.js';
import {VehicleLayer, statusColour} from './vehicles.js';
import {time, zoneName, esc, short} from './fmt.js';
import {openPanel, closePanel, refreshPanelVehicle} from './panel.js';
import {initAlerts} from './alerts.js';
import {initZones} from './zones.js';
import {initMaintenance} from './maintenance.js';

const roles = ['ROLE_UNSPECIFIED', 'ROLE_VIEWER', 'ROLE_DISPATCHER', 'ROLE_SUPERVISOR', 'ROLE_ADMIN'];

export const app = {
  me: null,
  roleLevel: 0,
  map: null,
  layer: null,
  vehicles: new Map(), // id -> Vehicle (API form), the whole fleet the caller sees
  groups: new Set(),
  // Fix-to-marker delays (ms): from the device sending a fix to the first frame drawn
  // after it arrived; read by the performance harness.
  latencies: [],
  pendingSent: [],
  stops: [], // cancel functions of open watches
  can(role) { return this.roleLevel >= roles.indexOf(role); },
  // flyTo centres the map on a vehicle and opens its panel.
  flyTo(id) {
    const v = this.vehicles.get(id);
    const p = v && v.state && v.state.lastFix && v.state.lastFix.position;
    if (p) this.map.setView([p.latitude || 0, p.longitude || 0], Math.max(this.map.getZoom(), 15));
    select(id);
  },
};
window.fleetwire = app; // for the browser tests and the curious

const $ = (s) => document.querySelector(s);

async function start() {
  $('#tz').textContent = zoneName();
  $('#signin-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    setToken($('#token').value.trim());
    await signIn();
  });
  $('#signout').addEventListener('click', () => { setToken(''); location.reload(); });
  if (hasToken()) await signIn();
}

async function signIn() {
  try {
    app.me = await call('IdentityService', 'WhoAmI');
  } catch (e) {
    setToken('');
    $('#signin-error').textContent = e instanceof APIError && e.code === 'unauthenticated' ? 'Token refused: ' + e.message : 'Sign-in failed: ' + e.message;
    return;
  }
  app.roleLevel = roles.indexOf(app.me.role);
  for (const r of roles.slice(1)) if (app.can(r)) document.body.classList.add('role-' + r.replace('ROLE_', '').toLowerCase());
  $('#who').textContent = `${app.me.name} (${short(app.me.role, 'ROLE_')}${app.me.groups && app.me.groups.length ? ': ' + app.me.groups.join(', ') : ''})`;
  $('#signin').hidden = true;
  $('#app').hidden = false;
  document.body.classList.add('signed-in');
  await initMap();
  initTabs();
  initList();
  initAlerts(app);
  initZones(app);
  initMaintenance(app);
}

async function initMap() {
  let settings = {tiles: '', attribution: ''};
  try { settings = await (await fetch('settings.json')).json(); } catch (e) { /* plain background */ }
  const map = L.map('map', {preferCanvas: false, zoomControl: true}).setView([52.52, 13.405], 11);
  if (settings.tiles) {
    // Without a reachable tile server the map keeps its plain background and still draws
    // vehicles, zones and tracks.
    L.tileLayer(settings.tiles, {maxZoom: 19, attribution: settings.attribution}).addTo(map);
  }
  app.map = map;
  app.layer = new VehicleLayer(map);
  app.layer.onFrame = () => {
    if (!app.pendingSent.length) return;
    const now = Date.now();
    for (const sent of app.pendingSent) app.latencies.push(now - sent);
    app.pendingSent = [];
    if (app.latencies.length > 200000) app.latencies.splice(0, 100000);
  };
  map.on('click', (e) => {
    if (app.drawing) return;
    const h = app.layer.hit(e.containerPoint);
    if (!h) return;
    if (h.vehicle) select(h.vehicle);
    else if (h.cluster) map.setView(map.containerPointToLatLng([h.cluster.x, h.cluster.y]), map.getZoom() + 2);
  });
  // The fleet, a page at a time, for the list; then the live watch of what is in view.
  await loadFleet();
  let timer = null;
  map.on('moveend', () => { clearTimeout(timer); timer = setTimeout(watchViewport, 250); });
  watchViewport();
  setInterval(updateCounts, 1000);
}

async function loadFleet() {
  let pageToken = '';
  do {
    const r = await call('TrackingService', 'ListVehicles', {pageSize: 1000, pageToken});
    for (const v of r.vehicles || []) ingest(v, false);
    pageToken = r.nextPageToken || '';
  } while (pageToken);
  renderGroups();
  renderList();
}

let stopViewport = null;

// watchViewport streams the vehicles inside the view (with a margin): the server sends only
// those, coalesced per vehicle when the browser falls behind.
function watchViewport() {
  if (stopViewport) stopViewport();
  const b = app.map.getBounds().pad(0.25);
  const bounds = {
    minLatitude: Math.max(-90, b.getSouth()), maxLatitude: Math.min(90, b.getNorth()),
    minLongitude: Math.max(-180, b.getWest()), maxLongitude: Math.min(180, b.getEast()),
  };
  stopViewport = watch('TrackingService', 'WatchVehicles', {bounds}, (m) => ingest(m.vehicle, true, m.snapshot), (state) => {
    $('#conn').className = 'conn ' + (state === 'open' ? 'ok' : 'bad');
    $('#conn').title = state === 'open' ? 'live' : 'reconnecting';
  });
}

let listDirty = false;

function ingest(v, live, snapshot) {
  if (!v || !v.vehicleId) return;
  const known = app.vehicles.has(v.vehicleId);
  app.vehicles.set(v.vehicleId, v);
  for (const g of v.groups || []) if (!app.groups.has(g)) { app.groups.add(g); if (live) renderGroups(); }
  app.layer.upsert(v);
  if (live && !snapshot && v.state && v.state.lastSentTime) app.pendingSent.push(Date.parse(v.state.lastSentTime));
  if (!known || live) listDirty = true;
  if (app.selected === v.vehicleId) refreshPanelVehicle(app, v);
}

function updateCounts() {
  let moving = 0;
  for (const v of app.vehicles.values()) if (v.state && v.state.status === 'VEHICLE_STATUS_MOVING') moving++;
  $('#counts').textContent = `${app.vehicles.size} vehicles, ${moving} moving`;
  if (listDirty) { listDirty = false; renderList(); }
}

function initTabs() {
  for (const b of document.querySelectorAll('#side nav button')) {
    b.addEventListener('click', () => showTab(b.dataset.tab));
  }
}

export function showTab(name) {
  for (const b of document.querySelectorAll('#side nav button')) b.classList.toggle('active', b.dataset.tab === name);
  for (const s of document.querySelectorAll('.tab')) s.hidden = s.id !== 'tab-' + name;
}

function initList() {
  const apply = () => {
    const q = $('#search').value.trim().toLowerCase();
    const g = $('#filter-group').value;
    const st = $('#filter-status').value;
    app.matches = (v) => (!q || v.id.toLowerCase().includes(q) || v.name.toLowerCase().includes(q) || v.plate.toLowerCase().includes(q)) &&
      (!g || v.groups.includes(g)) && (!st || v.status === st);
    app.layer.setFilter(app.matches);
    renderList();
  };
  for (const id of ['#search', '#filter-group', '#filter-status']) $(id).addEventListener('input', apply);
  apply();
  $('#vehicle-list').addEventListener('click', (e) => {
    const li = e.target.closest('li[data-id]');
    if (li) app.flyTo(li.dataset.id);
  });
}

function renderGroups() {
  const sel = $('#filter-group');
  const cur = sel.value;
  sel.innerHTML = '<option value="">all groups</option>' + [...app.groups].sort().map((g) => `<option>${esc(g)}</option>`).join('');
  sel.value = cur;
}

const LIST_MAX = 300;

// renderList shows the vehicles matching the search and filters, the same ones the map
// draws (at most LIST_MAX rows; the count says how many match).
function renderList() {
  if (!app.matches) return;
  const rows = [];
  let n = 0;
  const ids = [...app.vehicles.keys()].sort();
  for (const id of ids) {
    const v = app.vehicles.get(id);
    const st = v.state || {};
    const flat = {id, name: v.name || '', plate: v.plate || '', groups: v.groups || [], status: st.status || ''};
    if (!app.matches(flat)) continue;
    n++;
    if (rows.length >= LIST_MAX) continue;
    const speed = st.lastFix ? Math.round(st.lastFix.speedKmh || 0) + ' km/h' : '';
    rows.push(`<li data-id="${esc(id)}" class="veh-item${id === app.selected ? ' selected' : ''}"><span class="dot" style="background:${statusColour[st.status] || '#444'}"></span>${esc(id)} <span class="muted">${esc(v.name || '')} ${esc(short(st.status, 'VEHICLE_STATUS_'))} ${speed}</span></li>`);
  }
  $('#vehicle-list').innerHTML = rows.join('');
  $('#list-count').textContent = n > LIST_MAX ? `${n} match, first ${LIST_MAX} shown` : `${n} match`;
}

export function select(id) {
  app.selected = id;
  app.layer.select(id);
  for (const li of document.querySelectorAll('#vehicle-list li')) li.classList.toggle('selected', li.dataset.id === id);
  openPanel(app, id);
}

export {closePanel, time};

start();
