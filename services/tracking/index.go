package tracking

import (
	"math"

	"github.com/tidwall/rtree"

	"github.com/fleetwire/fleetwire/pkg/geo"
)

const rad = math.Pi / 180

// index is an R-tree of vehicle positions answering nearest-first searches by great-circle
// distance. The tree is kept in plain latitude/longitude; correctness at the antimeridian
// and the poles comes from the distance bound used to order its nodes (boxLowerBound), not
// from the layout. It is not safe for concurrent use; the store guards it.
type index struct {
	tr  rtree.RTreeG[*indexed]
	pos map[string]*indexed
}

type indexed struct {
	id       string
	v        *memVehicle // the store's record, so a search needs no map lookups
	lat, lon float64
}

func newIndex() *index { return &index{pos: make(map[string]*indexed)} }

// Set places id at p, moving it if it was indexed elsewhere.
func (x *index) Set(id string, p geo.Point, v *memVehicle) {
	if e, ok := x.pos[id]; ok {
		if e.lat == p.Lat && e.lon == p.Lon {
			return
		}
		x.tr.Delete([2]float64{e.lat, e.lon}, [2]float64{e.lat, e.lon}, e)
	}
	e := &indexed{id: id, v: v, lat: p.Lat, lon: p.Lon}
	x.pos[id] = e
	x.tr.Insert([2]float64{p.Lat, p.Lon}, [2]float64{p.Lat, p.Lon}, e)
}

// Remove takes id out of the index.
func (x *index) Remove(id string) {
	if e, ok := x.pos[id]; ok {
		x.tr.Delete([2]float64{e.lat, e.lon}, [2]float64{e.lat, e.lon}, e)
		delete(x.pos, id)
	}
}

// Len returns how many positions are indexed.
func (x *index) Len() int { return len(x.pos) }

// Nearby calls iter with indexed positions in order of increasing great-circle distance
// from p, until iter returns false or the next one is further than maxM (0: no limit).
func (x *index) Nearby(p geo.Point, maxM float64, iter func(e *indexed, distM float64) bool) {
	φ, λ := p.Lat, p.Lon
	cosφ := math.Cos(φ * rad)
	hMax := math.Inf(1)
	if maxM > 0 {
		hMax = hav(math.Min(maxM/geo.EarthRadiusM, math.Pi))
	}
	x.tr.Nearby(func(min, max [2]float64, e *indexed, item bool) float64 {
		if item {
			// Computed from the node's own copy of the position, not from e: following
			// the pointer of every candidate costs a cache miss each, far more than the
			// trigonometry.
			s1 := math.Sin((min[0] - φ) * rad / 2)
			s2 := math.Sin(lonDiff(min[1], λ) * rad / 2)
			return s1*s1 + cosφ*math.Cos(min[0]*rad)*s2*s2
		}
		return boxLowerBound(φ, λ, cosφ, min, max)
	}, func(_, _ [2]float64, e *indexed, h float64) bool {
		if h > hMax {
			return false
		}
		return iter(e, 2*geo.EarthRadiusM*math.Asin(math.Sqrt(math.Min(h, 1))))
	})
}

// hav returns sin²(θ/2), the haversine of central angle θ.
func hav(θ float64) float64 { s := math.Sin(θ / 2); return s * s }

// lonDiff is the absolute longitude difference, the short way round (0..180).
func lonDiff(a, b float64) float64 {
	d := math.Abs(a - b)
	if d > 180 {
		d = 360 - d
	}
	return d
}

// boxLowerBound returns a lower bound of the haversine term h = sin²(Δφ/2) +
// cosφ1·cosφ2·sin²(Δλ/2) from (φ, λ) to any point of the box. Each term is minimised on
// its own over the box: the smallest latitude difference, the smallest longitude
// difference the short way round (so a box on the other side of ±180° is near), and the
// smallest cosine of the box's latitudes (so near a pole, where meridians converge, the
// longitude term fades out). The sum of the minima never exceeds the minimum of the sum,
// which is what a best-first search needs to stay exact.
func boxLowerBound(φ, λ, cosφ float64, min, max [2]float64) float64 {
	var dφ float64
	switch {
	case φ < min[0]:
		dφ = min[0] - φ
	case φ > max[0]:
		dφ = φ - max[0]
	}
	var dλ float64
	if λ < min[1] || λ > max[1] {
		dλ = math.Min(lonDiff(λ, min[1]), lonDiff(λ, max[1]))
	}
	s1 := sinLow(dφ * rad / 2)
	h := s1 * s1
	if dλ > 0 {
		// cos y ≥ 1 − y²/2, clamped at 0 (near the poles).
		y := math.Max(math.Abs(min[0]), math.Abs(max[0])) * rad
		cosBox := math.Max(1-y*y/2, 0)
		s2 := sinLow(dλ * rad / 2)
		h += cosφ * cosBox * s2 * s2
	}
	return h
}

// sinLow is a lower bound of sin x for 0 ≤ x ≤ π/2 (x − x³/6, exact to 1e-4 relative at
// 0.1 rad): the search ranks many boxes per query and needs no more than a bound.
func sinLow(x float64) float64 { return x - x*x*x/6 }
