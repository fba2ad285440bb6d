package fence

import (
	"math"
	"sort"

	"github.com/tidwall/geojson/geometry"

	"github.com/fleetwire/fleetwire/pkg/geo"
)

// metresPerDeg is the length of one degree of latitude on the mean sphere.
const metresPerDeg = geo.EarthRadiusM * math.Pi / 180

// shape is the exact geometry of a zone. Longitudes inside a shape may run past 180
// (an antimeridian-crossing shape is kept in one continuous frame); callers pass points
// in [-180, 180] and the shape moves them into its frame.
type shape interface {
	contains(lat, lon float64) bool
	// boundaryDistM is the distance to the boundary, or capM when it is at least that.
	boundaryDistM(lat, lon, capM float64) float64
	// crossing reports the inside part of the straight segment a→b (b already unwrapped
	// to within 180° of a) when a is outside: the fractions where it first enters and
	// last leaves, and the length in metres spent inside.
	crossing(a, b geo.Point) (tIn, tOut, insideM float64, ok bool)
	rects() [][4]float64 // minX, minY, maxX, maxY in the shape's frame
	extentM() float64
}

// local is an equirectangular projection in metres around a reference latitude; within
// a zone (tens of km) its error is far below GPS noise.
type local struct{ kx float64 }

func newLocal(lat float64) local { return local{kx: math.Cos(lat*math.Pi/180) * metresPerDeg} }

func (l local) xy(lat, lon, refLat, refLon float64) (float64, float64) {
	return (lon - refLon) * l.kx, (lat - refLat) * metresPerDeg
}

// segDist is the distance from (px,py) to the segment (ax,ay)-(bx,by) in the plane.
func segDist(px, py, ax, ay, bx, by float64) float64 {
	dx, dy := bx-ax, by-ay
	l2 := dx*dx + dy*dy
	t := 0.0
	if l2 > 0 {
		t = ((px-ax)*dx + (py-ay)*dy) / l2
		t = math.Max(0, math.Min(1, t))
	}
	ex, ey := ax+t*dx-px, ay+t*dy-py
	return math.Sqrt(ex*ex + ey*ey)
}

// toFrame moves lon by a multiple of 360 so it lies closest to ref.
func toFrame(lon, ref float64) float64 { return lon + frameShift(lon, ref) }

// ---- polygons ----

type polyPart struct {
	// The exact test reads only these first fields and the band array.
	minX, minY, maxX, maxY float64
	bands                  bandIndex
	rings                  [][]geometry.Point
	poly                   *geometry.Poly // the library's polygon (bounds)
	vertices               int
}

// bandIndex cuts a polygon's latitude range into horizontal bands, each listing the
// edges (from every ring) that overlap it. A horizontal ray from a point only meets
// edges that span the point's latitude, and those are all in the point's band, so the
// even-odd test reads a handful of edges instead of all of them. Offsets and edges
// share one array (one memory fetch fewer on the hot path, where the zones of a large
// fleet do not fit in cache).
type bandIndex struct {
	minY, invH float64
	n          int
	data       []float64 // n+1 offsets into data, then x1,y1,x2,y2 per listed edge
}

func newBandIndex(rings [][]geometry.Point, minY, maxY float64, edgeCount int) bandIndex {
	n := min(max(edgeCount/2, 1), 4096)
	h := (maxY - minY) / float64(n)
	if h <= 0 {
		n, h = 1, 1
	}
	bi := bandIndex{minY: minY, invH: 1 / h, n: n}
	per := make([][]float64, n)
	total := 0
	for _, r := range rings {
		for i := 0; i+1 < len(r); i++ {
			a, b := r[i], r[i+1]
			lo, hi := bi.band(min(a.Y, b.Y)), bi.band(max(a.Y, b.Y))
			for k := lo; k <= hi; k++ {
				per[k] = append(per[k], a.X, a.Y, b.X, b.Y)
				total += 4
			}
		}
	}
	bi.data = make([]float64, n+1, n+1+total)
	for k := range per {
		bi.data[k] = float64(len(bi.data))
		bi.data = append(bi.data, per[k]...)
	}
	bi.data[n] = float64(len(bi.data))
	return bi
}

func (bi *bandIndex) band(y float64) int {
	k := int((y - bi.minY) * bi.invH)
	return max(0, min(k, bi.n-1))
}

// edges returns band k's edges.
func (bi *bandIndex) edges(k int) []float64 {
	return bi.data[int(bi.data[k]):int(bi.data[k+1])]
}

func (p *polyPart) contains(lat, lon float64) bool {
	if lon < p.minX {
		lon += 360 // only an antimeridian-crossing part (maxX > 180) can match after this
	}
	if lat < p.minY || lat > p.maxY || lon < p.minX || lon > p.maxX {
		return false
	}
	e := p.bands.edges(p.bands.band(lat))
	in := false
	for i := 0; i+3 < len(e); i += 4 {
		x1, y1, x2, y2 := e[i], e[i+1], e[i+2], e[i+3]
		if (y2 > lat) != (y1 > lat) && lon < x1+(lat-y1)*(x2-x1)/(y2-y1) {
			in = !in
		}
	}
	return in
}

func (p *polyPart) boundaryDistM(lat, lon, capM float64) float64 {
	lon = toFrame(lon, (p.minX+p.maxX)/2)
	l := newLocal(lat)
	lo, hi := 0, p.bands.n-1
	if !math.IsInf(capM, 1) {
		// An edge closer than capM overlaps the bands within capM of the latitude.
		d := capM / metresPerDeg
		lo, hi = p.bands.band(lat-d), p.bands.band(lat+d)
	}
	best := capM
	for k := lo; k <= hi; k++ {
		e := p.bands.edges(k)
		for i := 0; i+3 < len(e); i += 4 {
			// Cheap rejection: an edge whose latitude span stays farther than the best
			// distance so far cannot be closer.
			dy := best / metresPerDeg
			if math.Min(e[i+1], e[i+3]) > lat+dy || math.Max(e[i+1], e[i+3]) < lat-dy {
				continue
			}
			ax, ay := l.xy(e[i+1], e[i], lat, lon)
			bx, by := l.xy(e[i+3], e[i+2], lat, lon)
			best = math.Min(best, segDist(0, 0, ax, ay, bx, by))
		}
	}
	return best
}

// crossing intersects the segment with every edge; between consecutive intersections
// the segment alternates between outside and inside.
func (p *polyPart) crossing(a, b geo.Point) (float64, float64, float64, bool) {
	ax := toFrame(a.Lon, (p.minX+p.maxX)/2)
	bx := ax + (b.Lon - a.Lon)
	if math.Max(ax, bx) < p.minX || math.Min(ax, bx) > p.maxX || math.Max(a.Lat, b.Lat) < p.minY || math.Min(a.Lat, b.Lat) > p.maxY {
		return 0, 0, 0, false
	}
	in := p.contains(a.Lat, ax)
	if in {
		return 0, 0, 0, false // starts inside: not a pass-through
	}
	var tsBuf [16]float64
	ts := tsBuf[:0]
	dx, dy := bx-ax, b.Lat-a.Lat
	lo, hi := p.bands.band(min(a.Lat, b.Lat)), p.bands.band(max(a.Lat, b.Lat))
	for k := lo; k <= hi; k++ {
		e := p.bands.edges(k)
		for i := 0; i+3 < len(e); i += 4 {
			ex, ey := e[i+2]-e[i], e[i+3]-e[i+1]
			den := dx*ey - dy*ex
			if den == 0 {
				continue
			}
			wx, wy := e[i]-ax, e[i+1]-a.Lat
			t := (wx*ey - wy*ex) / den
			u := (wx*dy - wy*dx) / den
			// An edge listed in several bands counts once: in the band of the crossing.
			if t >= 0 && t <= 1 && u >= 0 && u < 1 && (lo == hi || p.bands.band(a.Lat+t*dy) == k) {
				ts = append(ts, t)
			}
		}
	}
	if len(ts) == 0 {
		return 0, 0, 0, false
	}
	sort.Float64s(ts)
	prev, inside := 0.0, 0.0
	first, last := -1.0, -1.0
	for _, t := range ts {
		if in {
			inside += t - prev
			last = t
		} else if first < 0 {
			first = t
		}
		in = !in
		prev = t
	}
	if in {
		inside += 1 - prev
		last = 1
	}
	if first < 0 {
		first = 0
	}
	segM := geo.DistanceM(a, b)
	return first, last, inside * segM, inside > 0
}

type multiPoly struct{ parts []*polyPart }

func (m *multiPoly) contains(lat, lon float64) bool {
	for _, p := range m.parts {
		if p.contains(lat, lon) {
			return true
		}
	}
	return false
}

func (m *multiPoly) boundaryDistM(lat, lon, capM float64) float64 {
	best := capM
	for _, p := range m.parts {
		best = math.Min(best, p.boundaryDistM(lat, lon, capM))
	}
	return best
}

func (m *multiPoly) crossing(a, b geo.Point) (float64, float64, float64, bool) {
	tIn, tOut, total, any := 2.0, -1.0, 0.0, false
	for _, p := range m.parts {
		i, o, l, ok := p.crossing(a, b)
		if !ok {
			continue
		}
		any = true
		tIn, tOut, total = math.Min(tIn, i), math.Max(tOut, o), total+l
	}
	return tIn, tOut, total, any
}

func (m *multiPoly) rects() [][4]float64 {
	var out [][4]float64
	for _, p := range m.parts {
		out = append(out, [4]float64{p.minX, p.minY, p.maxX, p.maxY})
	}
	return out
}

func (m *multiPoly) extentM() float64 {
	best := math.Inf(1)
	for _, p := range m.parts {
		w := (p.maxX - p.minX) * newLocal((p.minY+p.maxY)/2).kx
		h := (p.maxY - p.minY) * metresPerDeg
		best = math.Min(best, math.Min(w, h))
	}
	return best
}

// ---- circles ----

type circle struct {
	c      geo.Point
	radius float64
	r      geo.Rect
}

func newCircle(c geo.Point, radius float64) *circle {
	r := geo.BoundsAround(c, radius)
	if r.MinLon > r.MaxLon {
		r.MaxLon += 360
	}
	return &circle{c: c, radius: radius, r: r}
}

func (c *circle) contains(lat, lon float64) bool {
	if lat < c.r.MinLat || lat > c.r.MaxLat {
		return false
	}
	return geo.DistanceM(c.c, geo.Point{Lat: lat, Lon: lon}) <= c.radius
}

func (c *circle) boundaryDistM(lat, lon, capM float64) float64 {
	return math.Min(capM, math.Abs(geo.DistanceM(c.c, geo.Point{Lat: lat, Lon: lon})-c.radius))
}

func (c *circle) crossing(a, b geo.Point) (float64, float64, float64, bool) {
	l := newLocal(c.c.Lat)
	ax, ay := l.xy(a.Lat, toFrame(a.Lon, c.c.Lon), c.c.Lat, c.c.Lon)
	bx, by := l.xy(b.Lat, toFrame(a.Lon, c.c.Lon)+(b.Lon-a.Lon), c.c.Lat, c.c.Lon)
	dx, dy := bx-ax, by-ay
	qa := dx*dx + dy*dy
	qb := 2 * (ax*dx + ay*dy)
	qc := ax*ax + ay*ay - c.radius*c.radius
	disc := qb*qb - 4*qa*qc
	if qc <= 0 || qa == 0 || disc <= 0 { // starts inside, no move, or misses
		return 0, 0, 0, false
	}
	s := math.Sqrt(disc)
	t1 := math.Max(0, (-qb-s)/(2*qa))
	t2 := math.Min(1, (-qb+s)/(2*qa))
	if t2 <= t1 {
		return 0, 0, 0, false
	}
	return t1, t2, (t2 - t1) * math.Sqrt(qa), true
}

func (c *circle) rects() [][4]float64 {
	return [][4]float64{{c.r.MinLon, c.r.MinLat, c.r.MaxLon, c.r.MaxLat}}
}

func (c *circle) extentM() float64 { return 2 * c.radius }

// ---- corridors ----

type corridor struct {
	line                   []geo.Point // longitudes continuous (may pass 180)
	buffer                 float64
	minX, minY, maxX, maxY float64
}

func newCorridor(coords [][]float64, buffer float64) *corridor {
	c := &corridor{buffer: buffer}
	for i, p := range coords {
		lon := p[0]
		if i > 0 {
			lon = toFrame(lon, c.line[i-1].Lon)
		}
		c.line = append(c.line, geo.Point{Lat: p[1], Lon: lon})
	}
	c.minX, c.minY, c.maxX, c.maxY = c.line[0].Lon, c.line[0].Lat, c.line[0].Lon, c.line[0].Lat
	for _, p := range c.line {
		c.minX, c.maxX = math.Min(c.minX, p.Lon), math.Max(c.maxX, p.Lon)
		c.minY, c.maxY = math.Min(c.minY, p.Lat), math.Max(c.maxY, p.Lat)
	}
	if c.minX < -180 {
		for i := range c.line {
			c.line[i].Lon += 360
		}
		c.minX, c.maxX = c.minX+360, c.maxX+360
	}
	dLat := buffer / metresPerDeg
	maxLat := math.Min(89, math.Max(math.Abs(c.minY), math.Abs(c.maxY))+dLat)
	dLon := buffer / (metresPerDeg * math.Cos(maxLat*math.Pi/180))
	c.minX, c.maxX = c.minX-dLon, c.maxX+dLon
	c.minY, c.maxY = math.Max(-90, c.minY-dLat), math.Min(90, c.maxY+dLat)
	return c
}

func (c *corridor) lineDistM(lat, lon float64) float64 {
	lon = toFrame(lon, (c.minX+c.maxX)/2)
	l := newLocal(lat)
	best := math.Inf(1)
	for i := 0; i+1 < len(c.line); i++ {
		ax, ay := l.xy(c.line[i].Lat, c.line[i].Lon, lat, lon)
		bx, by := l.xy(c.line[i+1].Lat, c.line[i+1].Lon, lat, lon)
		best = math.Min(best, segDist(0, 0, ax, ay, bx, by))
	}
	return best
}

func (c *corridor) contains(lat, lon float64) bool {
	x := lon
	if x < c.minX {
		x += 360
	}
	if lat < c.minY || lat > c.maxY || x < c.minX || x > c.maxX {
		return false
	}
	return c.lineDistM(lat, lon) <= c.buffer
}

func (c *corridor) boundaryDistM(lat, lon, capM float64) float64 {
	return math.Min(capM, math.Abs(c.lineDistM(lat, lon)-c.buffer))
}

// crossing samples the segment every quarter of the buffer (at most 2 000 samples):
// a corridor is at least twice the buffer wide, so no crossing is missed.
func (c *corridor) crossing(a, b geo.Point) (float64, float64, float64, bool) {
	segM := geo.DistanceM(a, b)
	if segM == 0 || c.contains(a.Lat, a.Lon) {
		return 0, 0, 0, false
	}
	n := int(math.Min(2000, math.Ceil(segM/(c.buffer/4))))
	if n < 2 {
		n = 2
	}
	first, last, count := -1.0, -1.0, 0
	for i := 0; i <= n; i++ {
		t := float64(i) / float64(n)
		p := geo.Interpolate(a, b, t)
		if c.contains(p.Lat, p.Lon) {
			if first < 0 {
				first = t
			}
			last = t
			count++
		}
	}
	if count == 0 {
		return 0, 0, 0, false
	}
	return first, last, float64(count) / float64(n) * segM, true
}

func (c *corridor) rects() [][4]float64 { return [][4]float64{{c.minX, c.minY, c.maxX, c.maxY}} }

func (c *corridor) extentM() float64 { return 2 * c.buffer }
