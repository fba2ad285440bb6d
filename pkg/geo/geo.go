// Package geo holds the spherical-earth arithmetic the services share: great-circle
// distance, bearings, destination points and bounding boxes that know about the
// antimeridian and the poles.
package geo

import "math"

// EarthRadiusM is the mean Earth radius (IUGG), the usual choice for haversine distances.
const EarthRadiusM = 6371008.8

const rad = math.Pi / 180

// Point is a WGS84 position in degrees.
type Point struct{ Lat, Lon float64 }

// DistanceM returns the great-circle distance in metres between two points (haversine;
// numerically stable for the short distances between consecutive fixes).
func DistanceM(a, b Point) float64 {
	dLat := (b.Lat - a.Lat) * rad
	dLon := (b.Lon - a.Lon) * rad
	s1 := math.Sin(dLat / 2)
	s2 := math.Sin(dLon / 2)
	h := s1*s1 + math.Cos(a.Lat*rad)*math.Cos(b.Lat*rad)*s2*s2
	if h > 1 {
		h = 1
	}
	return 2 * EarthRadiusM * math.Asin(math.Sqrt(h))
}

// BearingDeg returns the initial bearing from a to b in degrees, 0..360.
func BearingDeg(a, b Point) float64 {
	φ1, φ2 := a.Lat*rad, b.Lat*rad
	dλ := (b.Lon - a.Lon) * rad
	y := math.Sin(dλ) * math.Cos(φ2)
	x := math.Cos(φ1)*math.Sin(φ2) - math.Sin(φ1)*math.Cos(φ2)*math.Cos(dλ)
	return math.Mod(math.Atan2(y, x)/rad+360, 360)
}

// Destination returns the point reached from p after distM metres on bearing bearingDeg.
func Destination(p Point, bearingDeg, distM float64) Point {
	δ := distM / EarthRadiusM
	θ := bearingDeg * rad
	φ1, λ1 := p.Lat*rad, p.Lon*rad
	φ2 := math.Asin(math.Sin(φ1)*math.Cos(δ) + math.Cos(φ1)*math.Sin(δ)*math.Cos(θ))
	λ2 := λ1 + math.Atan2(math.Sin(θ)*math.Sin(δ)*math.Cos(φ1), math.Cos(δ)-math.Sin(φ1)*math.Sin(φ2))
	return Point{Lat: φ2 / rad, Lon: NormalizeLon(λ2 / rad)}
}

// NormalizeLon maps any longitude into [-180, 180).
func NormalizeLon(lon float64) float64 {
	lon = math.Mod(lon+180, 360)
	if lon < 0 {
		lon += 360
	}
	return lon - 180
}

// Interpolate returns the point a fraction f (0..1) of the way from a to b along the
// straight line in degree space, taking the short way across the antimeridian. Between
// consecutive fixes (at most a few km apart) this is indistinguishable from the great circle.
func Interpolate(a, b Point, f float64) Point {
	dLon := b.Lon - a.Lon
	if dLon > 180 {
		dLon -= 360
	} else if dLon < -180 {
		dLon += 360
	}
	return Point{Lat: a.Lat + (b.Lat-a.Lat)*f, Lon: NormalizeLon(a.Lon + dLon*f)}
}

// Rect is a latitude/longitude box. When MinLon > MaxLon the box crosses the antimeridian.
type Rect struct{ MinLat, MinLon, MaxLat, MaxLon float64 }

// Contains reports whether p lies in r, handling boxes that cross the antimeridian.
func (r Rect) Contains(p Point) bool {
	if p.Lat < r.MinLat || p.Lat > r.MaxLat {
		return false
	}
	if r.MinLon <= r.MaxLon {
		return p.Lon >= r.MinLon && p.Lon <= r.MaxLon
	}
	return p.Lon >= r.MinLon || p.Lon <= r.MaxLon
}

// CrossesAntimeridian reports whether r wraps from +180 to -180.
func (r Rect) CrossesAntimeridian() bool { return r.MinLon > r.MaxLon }

// BoundsAround returns the smallest box containing every point within radiusM of c. Near
// a pole the box widens to all longitudes; across the antimeridian it wraps (MinLon > MaxLon).
func BoundsAround(c Point, radiusM float64) Rect {
	δ := radiusM / EarthRadiusM / rad // angular radius in degrees
	r := Rect{MinLat: c.Lat - δ, MaxLat: c.Lat + δ}
	if r.MinLat <= -90 || r.MaxLat >= 90 {
		// The circle contains a pole: every longitude is reachable.
		r.MinLat = math.Max(r.MinLat, -90)
		r.MaxLat = math.Min(r.MaxLat, 90)
		r.MinLon, r.MaxLon = -180, 180
		return r
	}
	// Longitude half-width at the latitude of tangency (exact for a spherical cap).
	s := math.Sin(δ*rad) / math.Cos(c.Lat*rad)
	if s >= 1 {
		r.MinLon, r.MaxLon = -180, 180
		return r
	}
	dLon := math.Asin(s) / rad
	r.MinLon = NormalizeLon(c.Lon - dLon)
	r.MaxLon = NormalizeLon(c.Lon + dLon)
	if c.Lon+dLon == 180 { // NormalizeLon maps 180 to -180; keep the east edge closed
		r.MaxLon = 180
	}
	return r
}
