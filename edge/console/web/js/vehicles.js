// VehicleLayer draws every vehicle on one canvas above the map: an arrow turned to its
// heading and coloured by status, or, at low zoom with many vehicles, grid clusters with
// their counts. One canvas redrawn at most once per animation frame keeps 20,000 moving
// vehicles fluid where 20,000 DOM markers would not be.

export const statusColour = {
  VEHICLE_STATUS_MOVING: '#1a9641',
  VEHICLE_STATUS_IDLE: '#f39c12',
  VEHICLE_STATUS_STOPPED: '#2c7bb6',
  VEHICLE_STATUS_OFFLINE: '#7f7f7f',
  VEHICLE_STATUS_NEVER_SEEN: '#bbbbbb',
};

const CLUSTER_CELL = 56; // px
const CLUSTER_BELOW_ZOOM = 13; // cluster at zoom < 13 when many vehicles are in view
const CLUSTER_MIN = 150; // ... and more than this many are visible

export class VehicleLayer {
  constructor(map) {
    this.map = map;
    this.vehicles = new Map(); // id -> {id, lat, lon, heading, status, speed, name, groups, plate}
    this.filter = () => true;
    this.selected = '';
    this.dirty = true;
    this.frames = []; // draw durations (ms), for the performance harness
    this.drawn = 0; // frames drawn
    this.positions = new Map(); // id -> [x, y] as last drawn (tests)
    this.onFrame = null;
    const c = document.createElement('canvas');
    c.className = 'vehicle-canvas';
    map.getContainer().appendChild(c);
    this.canvas = c;
    this.ctx = c.getContext('2d');
    const mark = () => { this.dirty = true; };
    map.on('move zoom resize viewreset', mark);
    const loop = () => {
      if (this.dirty) this.draw();
      requestAnimationFrame(loop);
    };
    requestAnimationFrame(loop);
  }

  upsert(v) {
    const st = v.state || {};
    const fix = st.lastFix;
    if (!fix || !fix.position) {
      this.vehicles.delete(v.vehicleId);
      this.dirty = true;
      return;
    }
    this.vehicles.set(v.vehicleId, {
      id: v.vehicleId,
      lat: fix.position.latitude || 0,
      lon: fix.position.longitude || 0,
      heading: fix.headingDeg || 0,
      speed: fix.speedKmh || 0,
      status: st.status || 'VEHICLE_STATUS_UNSPECIFIED',
      name: v.name || '',
      plate: v.plate || '',
      groups: v.groups || [],
      deviceTime: fix.deviceTime,
    });
    this.dirty = true;
  }

  setFilter(f) { this.filter = f; this.dirty = true; }
  select(id) { this.selected = id; this.dirty = true; }

  visible() {
    const out = [];
    for (const v of this.vehicles.values()) if (this.filter(v)) out.push(v);
    return out;
  }

  clustering(count) {
    return this.map.getZoom() < CLUSTER_BELOW_ZOOM && count > CLUSTER_MIN;
  }

  draw() {
    const t0 = performance.now();
    this.dirty = false;
    const size = this.map.getSize();
    const dpr = window.devicePixelRatio || 1;
    if (this.canvas.width !== size.x * dpr || this.canvas.height !== size.y * dpr) {
      this.canvas.width = size.x * dpr;
      this.canvas.height = size.y * dpr;
      this.canvas.style.width = size.x + 'px';
      this.canvas.style.height = size.y + 'px';
    }
    const ctx = this.ctx;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, size.x, size.y);
    const list = this.visible();
    this.positions = new Map();
    this.clusters = [];
    const pts = [];
    for (const v of list) {
      const p = this.map.latLngToContainerPoint([v.lat, v.lon]);
      if (p.x < -20 || p.y < -20 || p.x > size.x + 20 || p.y > size.y + 20) continue;
      pts.push([v, p.x, p.y]);
    }
    if (this.clustering(pts.length)) {
      const cells = new Map();
      for (const [v, x, y] of pts) {
        const key = Math.floor(x / CLUSTER_CELL) + ',' + Math.floor(y / CLUSTER_CELL);
        let c = cells.get(key);
        if (!c) { c = {n: 0, x: 0, y: 0, moving: 0}; cells.set(key, c); }
        c.n++; c.x += x; c.y += y;
        if (v.status === 'VEHICLE_STATUS_MOVING') c.moving++;
      }
      ctx.font = 'bold 11px sans-serif';
      ctx.textAlign = 'center';
      ctx.textBaseline = 'middle';
      for (const c of cells.values()) {
        const x = c.x / c.n, y = c.y / c.n;
        const r = 10 + Math.min(14, Math.log2(c.n) * 2);
        ctx.beginPath();
        ctx.arc(x, y, r, 0, 2 * Math.PI);
        ctx.fillStyle = c.moving * 2 >= c.n ? 'rgba(26,150,65,0.75)' : 'rgba(44,123,182,0.75)';
        ctx.fill();
        ctx.strokeStyle = '#fff';
        ctx.lineWidth = 2;
        ctx.stroke();
        ctx.fillStyle = '#fff';
        ctx.fillText(String(c.n), x, y);
        this.clusters.push({x, y, r, n: c.n});
      }
    } else {
      for (const [v, x, y] of pts) {
        this.positions.set(v.id, [x, y]);
        ctx.save();
        ctx.translate(x, y);
        ctx.rotate((v.heading * Math.PI) / 180);
        ctx.beginPath();
        ctx.moveTo(0, -9);
        ctx.lineTo(6, 7);
        ctx.lineTo(0, 3);
        ctx.lineTo(-6, 7);
        ctx.closePath();
        ctx.fillStyle = statusColour[v.status] || '#444';
        ctx.fill();
        ctx.lineWidth = v.id === this.selected ? 3 : 1.2;
        ctx.strokeStyle = v.id === this.selected ? '#d7191c' : '#fff';
        ctx.stroke();
        ctx.restore();
      }
    }
    this.drawn++;
    const dt = performance.now() - t0;
    this.frames.push(dt);
    if (this.frames.length > 5000) this.frames.splice(0, 1000);
    if (this.onFrame) this.onFrame(dt);
  }

  // hit returns the vehicle or cluster under a container point, if any.
  hit(pt) {
    let best = null, bestD = 12 * 12;
    for (const [id, [x, y]] of this.positions) {
      const d = (x - pt.x) ** 2 + (y - pt.y) ** 2;
      if (d < bestD) { bestD = d; best = id; }
    }
    if (best) return {vehicle: best};
    for (const c of this.clusters || []) {
      if ((c.x - pt.x) ** 2 + (c.y - pt.y) ** 2 <= c.r * c.r) return {cluster: c};
    }
    return null;
  }
}
