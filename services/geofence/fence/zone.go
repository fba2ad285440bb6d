// Package fence is the geofencing engine: zones compiled from GeoJSON, a spatial index
// over them, and the per-vehicle membership rules that turn position fixes into enter,
// exit, dwell, overspeed and pass-through events. It knows nothing of NATS, gRPC or
// storage; the geofence service feeds it fixes and persists what it returns.
package fence

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/tidwall/geojson"
	"github.com/tidwall/geojson/geometry"

	"github.com/fleetwire/fleetwire/pkg/geo"
)

// Limits on one zone definition. A zone travels through a NATS key-value bucket whose
// values are bounded by the server's max payload (64 KiB by default), so the encoded
// definition must stay below MaxDefinitionBytes; MaxVertices keeps a single exact test
// cheap and comes well inside that size.
const (
	MaxVertices        = 2000
	MaxDefinitionBytes = 60 << 10
	MaxNameLen         = 200
	MaxIDLen           = 64
	MaxRadiusM         = 500_000
	MaxBufferM         = 50_000
	MaxDwell           = 7 * 24 * time.Hour
)

// ErrInvalidZone is the parent of every validation error; the gRPC edge maps it to
// InvalidArgument. Each sub-kind names the problem; the wrapping message says where.
var (
	ErrInvalidZone     = errors.New("invalid zone")
	ErrMalformedJSON   = fmt.Errorf("%w: malformed GeoJSON", ErrInvalidZone)
	ErrUnsupported     = fmt.Errorf("%w: unsupported geometry type", ErrInvalidZone)
	ErrEmptyGeometry   = fmt.Errorf("%w: empty geometry", ErrInvalidZone)
	ErrRingNotClosed   = fmt.Errorf("%w: ring not closed", ErrInvalidZone)
	ErrRingTooShort    = fmt.Errorf("%w: ring too short", ErrInvalidZone)
	ErrCoordinate      = fmt.Errorf("%w: coordinate out of range", ErrInvalidZone)
	ErrTooManyVertices = fmt.Errorf("%w: too many vertices", ErrInvalidZone)
	ErrRingAroundPole  = fmt.Errorf("%w: ring encircles a pole", ErrInvalidZone)
	ErrRadius          = fmt.Errorf("%w: bad circle radius", ErrInvalidZone)
	ErrBuffer          = fmt.Errorf("%w: bad corridor buffer", ErrInvalidZone)
	ErrID              = fmt.Errorf("%w: bad zone id", ErrInvalidZone)
	ErrName            = fmt.Errorf("%w: bad zone name", ErrInvalidZone)
	ErrAlert           = fmt.Errorf("%w: bad alert", ErrInvalidZone)
	ErrSchedule        = fmt.Errorf("%w: bad schedule", ErrInvalidZone)
	ErrSpeedLimit      = fmt.Errorf("%w: bad speed limit", ErrInvalidZone)
	ErrTooLarge        = fmt.Errorf("%w: definition too large", ErrInvalidZone)
)

// Alert says which events a zone raises.
type Alert string

const (
	AlertEnter          Alert = "enter"            // ENTER (and CROSSED)
	AlertExit           Alert = "exit"             // EXIT (and CROSSED)
	AlertBoth           Alert = "both"             // ENTER, EXIT (and CROSSED)
	AlertDwell          Alert = "dwell"            // DWELL after Spec.DwellMinutes inside
	AlertMustStayInside Alert = "must_stay_inside" // EXIT, flagged must_stay_inside
)

func (a Alert) valid() bool {
	switch a {
	case AlertEnter, AlertExit, AlertBoth, AlertDwell, AlertMustStayInside:
		return true
	}
	return false
}

const (
	alertEnter uint8 = 1 << iota
	alertExit
	alertCross
	alertDwell
)

// hashID is FNV-1a, enough to tell zone ids apart before comparing them.
func hashID(id string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(id); i++ {
		h ^= uint64(id[i])
		h *= 1099511628211
	}
	return h
}

func (a Alert) onEnter() bool { return a == AlertEnter || a == AlertBoth }
func (a Alert) onExit() bool  { return a == AlertExit || a == AlertBoth || a == AlertMustStayInside }
func (a Alert) onCross() bool { return a == AlertEnter || a == AlertExit || a == AlertBoth }

// AlertPolicy lists the event kinds of a zone that raise alerts. An empty Raise means
// none: the zone's events are only events (the zone event feed).
type AlertPolicy struct {
	Raise []EventKind `json:"raise"`
}

// DefaultRaises reports whether a zone without an AlertPolicy asks for an alert on an
// event: only where the zone states a rule that was broken, an exit from a
// must-stay-inside zone or overspeed inside a speed limit. Plain enter, exit, dwell and
// crossed are facts for the event feed, not alarms: a handful of busy zones otherwise
// bury the real alarms under hundreds of open alerts.
func DefaultRaises(kind EventKind, mustStayInside bool) bool {
	return kind == Overspeed || (kind == Exit && mustStayInside)
}

// raises reports whether z asks for an alert on an event of kind.
func (z *Zone) raises(kind EventKind) bool {
	if z.AlertPolicy == nil {
		return DefaultRaises(kind, z.Alert == AlertMustStayInside)
	}
	return slices.Contains(z.AlertPolicy.Raise, kind)
}

// Schedule limits when a zone raises events. Membership is tracked at all times, so a
// vehicle that entered outside the window is known to be inside when it opens.
type Schedule struct {
	// Days the window opens on; empty means every day.
	Days []time.Weekday `json:"days,omitempty"`
	// Start and End as "HH:MM" local time. End before Start is an overnight window
	// (22:00–06:00 opens on each listed day and closes the next morning). Both empty, or
	// equal, means the whole day.
	Start string `json:"start,omitempty"`
	End   string `json:"end,omitempty"`
	// TimeZone is an IANA name such as "Europe/Berlin"; empty means UTC. Daylight saving
	// is applied by the time zone database.
	TimeZone string `json:"time_zone,omitempty"`

	loc        *time.Location
	start, end int // minutes after local midnight
	days       uint8
}

// Spec is a zone as users define it and as it is stored in the zone bucket.
type Spec struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// GeoJSON geometry, or a Feature holding one: Polygon (holes allowed), MultiPolygon,
	// Point with RadiusM (a circle) or LineString with BufferM (a corridor).
	GeoJSON string   `json:"geojson"`
	RadiusM float64  `json:"radius_m,omitempty"`
	BufferM float64  `json:"buffer_m,omitempty"`
	Tags    []string `json:"tags,omitempty"`
	// Vehicles and Groups the zone applies to; both empty means every vehicle.
	Vehicles      []string  `json:"vehicles,omitempty"`
	Groups        []string  `json:"groups,omitempty"`
	Schedule      *Schedule `json:"schedule,omitempty"`
	SpeedLimitKmh float64   `json:"speed_limit_kmh,omitempty"`
	Alert         Alert     `json:"alert"`
	DwellMinutes  float64   `json:"dwell_minutes,omitempty"`
	// AlertPolicy says which of the zone's events also raise an alert in the alert feed;
	// nil is the default (DefaultRaises). Every event is published whatever it says.
	AlertPolicy *AlertPolicy `json:"alert_policy,omitempty"`
	UpdateTime  time.Time    `json:"update_time"`

	// Revision is the bucket revision the spec was read at (not stored).
	Revision uint64 `json:"-"`
}

// Shape kinds.
const (
	ShapePolygon      = "Polygon"
	ShapeMultiPolygon = "MultiPolygon"
	ShapeCircle       = "Circle"
	ShapeCorridor     = "Corridor"
)

// Zone is a compiled, immutable zone ready for the index.
type Zone struct {
	// Hot fields first: a candidate's checks and the exact test of a single polygon
	// read only the start of the struct and the polygon's band array.
	idHash   uint64   // hash of ID: compared before the string (which lives elsewhere)
	poly     polyPart // a single polygon's geometry (when single)
	single   bool
	alerts   uint8   // alertEnter|alertExit|alertCross|alertDwell bits from Alert
	limitKmh float64 // SpeedLimitKmh
	extentM  float64 // smallest extent, bounds the hysteresis margin of small zones
	vehicles map[string]struct{}
	groups   map[string]struct{}
	shape    shape
	dwell    time.Duration
	object   geojson.Object // for export

	Spec
	Shape string
}

// ValidID reports whether id can be a zone id: 1..64 characters from [A-Za-z0-9_-]
// (it is a bucket key and an event attribute).
func ValidID(id string) error {
	if id == "" || len(id) > MaxIDLen {
		return fmt.Errorf("%w: %q must be 1..%d characters", ErrID, id, MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("%w: %q may hold only letters, digits, '_' and '-'", ErrID, id)
		}
	}
	return nil
}

// Compile validates spec and builds the zone. Every error wraps ErrInvalidZone and
// names the problem and where it is.
func Compile(spec Spec) (*Zone, error) {
	if err := ValidID(spec.ID); err != nil {
		return nil, err
	}
	if strings.TrimSpace(spec.Name) == "" || len(spec.Name) > MaxNameLen {
		return nil, fmt.Errorf("%w: name must be 1..%d characters", ErrName, MaxNameLen)
	}
	if spec.Alert == "" {
		spec.Alert = AlertBoth
	}
	if !spec.Alert.valid() {
		return nil, fmt.Errorf("%w: %q (want enter, exit, both, dwell or must_stay_inside)", ErrAlert, spec.Alert)
	}
	if p := spec.AlertPolicy; p != nil {
		for _, k := range p.Raise {
			if !k.valid() {
				return nil, fmt.Errorf("%w: alert policy names event kind %q (want enter, exit, dwell, crossed or overspeed_in_zone)", ErrAlert, k)
			}
		}
	}
	if spec.Alert == AlertDwell && !(spec.DwellMinutes > 0) {
		return nil, fmt.Errorf("%w: a dwell alert needs dwell_minutes > 0", ErrAlert)
	}
	dwell := time.Duration(spec.DwellMinutes * float64(time.Minute))
	if spec.DwellMinutes < 0 || dwell > MaxDwell || math.IsNaN(spec.DwellMinutes) {
		return nil, fmt.Errorf("%w: dwell_minutes %v outside 0..%v", ErrAlert, spec.DwellMinutes, MaxDwell.Minutes())
	}
	if spec.SpeedLimitKmh < 0 || spec.SpeedLimitKmh > 500 || math.IsNaN(spec.SpeedLimitKmh) {
		return nil, fmt.Errorf("%w: %v km/h outside 0..500", ErrSpeedLimit, spec.SpeedLimitKmh)
	}
	if spec.Schedule != nil {
		sc, err := compileSchedule(*spec.Schedule)
		if err != nil {
			return nil, err
		}
		spec.Schedule = &sc
	}
	z := &Zone{Spec: spec, dwell: dwell, idHash: hashID(spec.ID), limitKmh: spec.SpeedLimitKmh}
	if spec.Alert.onEnter() {
		z.alerts |= alertEnter
	}
	if spec.Alert.onExit() {
		z.alerts |= alertExit
	}
	if spec.Alert.onCross() {
		z.alerts |= alertCross
	}
	if spec.Alert == AlertDwell {
		z.alerts |= alertDwell
	}
	if err := z.compileGeometry(); err != nil {
		return nil, err
	}
	if len(spec.Vehicles) > 0 {
		z.vehicles = make(map[string]struct{}, len(spec.Vehicles))
		for _, v := range spec.Vehicles {
			z.vehicles[v] = struct{}{}
		}
	}
	if len(spec.Groups) > 0 {
		z.groups = make(map[string]struct{}, len(spec.Groups))
		for _, g := range spec.Groups {
			z.groups[g] = struct{}{}
		}
	}
	if b, _ := json.Marshal(spec); len(b) > MaxDefinitionBytes {
		return nil, fmt.Errorf("%w: %d bytes encoded, limit %d", ErrTooLarge, len(b), MaxDefinitionBytes)
	}
	return z, nil
}

func compileSchedule(s Schedule) (Schedule, error) {
	loc := time.UTC
	if s.TimeZone != "" {
		l, err := time.LoadLocation(s.TimeZone)
		if err != nil {
			return s, fmt.Errorf("%w: time zone %q: %w", ErrSchedule, s.TimeZone, err)
		}
		loc = l
	}
	s.loc = loc
	var err error
	if s.start, err = parseClock(s.Start, 0); err != nil {
		return s, fmt.Errorf("%w: start: %w", ErrSchedule, err)
	}
	if s.end, err = parseClock(s.End, 0); err != nil {
		return s, fmt.Errorf("%w: end: %w", ErrSchedule, err)
	}
	for _, d := range s.Days {
		if d < time.Sunday || d > time.Saturday {
			return s, fmt.Errorf("%w: day of week %d outside 0 (Sunday)..6 (Saturday)", ErrSchedule, d)
		}
		s.days |= 1 << d
	}
	if len(s.Days) == 0 {
		s.days = 0x7f
	}
	return s, nil
}

func parseClock(s string, def int) (int, error) {
	if s == "" {
		return def, nil
	}
	var h, m int
	if n, err := fmt.Sscanf(s, "%d:%d", &h, &m); err != nil || n != 2 || len(s) != 5 || h < 0 || h > 24 || m < 0 || m > 59 || (h == 24 && m != 0) {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	return h*60 + m, nil
}

// Active reports whether the schedule's window is open at t.
func (s *Schedule) Active(t time.Time) bool {
	if s == nil {
		return true
	}
	lt := t.In(s.loc)
	m := lt.Hour()*60 + lt.Minute()
	day := lt.Weekday()
	on := func(d time.Weekday) bool { return s.days&(1<<d) != 0 }
	switch {
	case s.start == s.end:
		return on(day)
	case s.start < s.end:
		return on(day) && m >= s.start && m < s.end
	default: // overnight
		return on(day) && m >= s.start || on((day+6)%7) && m < s.end
	}
}

// Active reports whether the zone raises events at t.
func (z *Zone) Active(t time.Time) bool { return z.Schedule.Active(t) }

// AppliesTo reports whether the zone concerns vehicle, a member of groups.
func (z *Zone) AppliesTo(vehicle string, groups []string) bool {
	if z.vehicles == nil && z.groups == nil {
		return true
	}
	if _, ok := z.vehicles[vehicle]; ok {
		return true
	}
	for _, g := range groups {
		if _, ok := z.groups[g]; ok {
			return true
		}
	}
	return false
}

// Contains reports whether the point lies inside the zone.
func (z *Zone) Contains(lat, lon float64) bool {
	if z.single {
		return z.poly.contains(lat, lon)
	}
	return z.shape.contains(lat, lon)
}

// BoundaryDistanceM is the distance in metres from the point to the zone's boundary.
func (z *Zone) BoundaryDistanceM(lat, lon float64) float64 {
	return z.boundaryWithin(lat, lon, math.Inf(1))
}

func (z *Zone) crossing(a, b geo.Point) (float64, float64, float64, bool) {
	if z.single {
		return z.poly.crossing(a, b)
	}
	return z.shape.crossing(a, b)
}

// boundaryWithin is BoundaryDistanceM capped at capM (cheaper: only nearby edges).
func (z *Zone) boundaryWithin(lat, lon, capM float64) float64 {
	if z.single {
		return z.poly.boundaryDistM(lat, lon, capM)
	}
	return z.shape.boundaryDistM(lat, lon, capM)
}

// Margin is the hysteresis margin for this zone: h, reduced to an eighth of the zone's
// smallest extent so a small zone can still be entered.
func (z *Zone) Margin(h float64) float64 { return math.Min(h, z.extentM/8) }

// Feature returns the zone as a GeoJSON Feature with its settings as properties.
func (z *Zone) Feature() map[string]any {
	props := map[string]any{
		"id": z.ID, "name": z.Name, "alert": string(z.Alert), "shape": z.Shape,
	}
	if z.RadiusM > 0 {
		props["radius_m"] = z.RadiusM
	}
	if z.BufferM > 0 {
		props["buffer_m"] = z.BufferM
	}
	if len(z.Tags) > 0 {
		props["tags"] = z.Tags
	}
	if len(z.Vehicles) > 0 {
		props["vehicles"] = z.Vehicles
	}
	if len(z.Groups) > 0 {
		props["groups"] = z.Groups
	}
	if z.SpeedLimitKmh > 0 {
		props["speed_limit_kmh"] = z.SpeedLimitKmh
	}
	if z.DwellMinutes > 0 {
		props["dwell_minutes"] = z.DwellMinutes
	}
	if z.Schedule != nil {
		props["schedule"] = z.Schedule
	}
	if z.AlertPolicy != nil {
		props["alert_policy"] = z.AlertPolicy
	}
	return map[string]any{
		"type":       "Feature",
		"id":         z.ID,
		"geometry":   json.RawMessage(z.object.JSON()),
		"properties": props,
	}
}

// ExportFeatureCollection renders zones as a GeoJSON FeatureCollection.
func ExportFeatureCollection(zones []*Zone) ([]byte, error) {
	fs := make([]map[string]any, 0, len(zones))
	for _, z := range zones {
		fs = append(fs, z.Feature())
	}
	return json.Marshal(map[string]any{"type": "FeatureCollection", "features": fs})
}

// precheck refuses a definition too large, or with too many positions, before anything
// parses it: one pass over the bytes, no allocation. A position is an array whose first
// element is a number, so counting '[' followed by a number bounds the vertices from
// above (a few extra for bounding boxes, which only makes the check stricter by a hair).
func precheck(src string) error {
	if len(src) > MaxDefinitionBytes {
		return fmt.Errorf("%w: GeoJSON of %d bytes, limit %d", ErrTooLarge, len(src), MaxDefinitionBytes)
	}
	n := 0
	for i := 0; i < len(src); i++ {
		if src[i] != '[' {
			continue
		}
		j := i + 1
		for j < len(src) && (src[j] == ' ' || src[j] == '\t' || src[j] == '\n' || src[j] == '\r') {
			j++
		}
		if j < len(src) && (src[j] == '-' || (src[j] >= '0' && src[j] <= '9')) {
			if n++; n > MaxVertices+maxBBoxes {
				return fmt.Errorf("%w: more than %d positions, limit %d vertices", ErrTooManyVertices, MaxVertices+maxBBoxes, MaxVertices)
			}
		}
	}
	return nil
}

// maxBBoxes: room for "bbox" members, which look like positions to precheck.
const maxBBoxes = 8

// rawGeo is the part of a GeoJSON object the compiler reads.
type rawGeo struct {
	Type        string          `json:"type"`
	Coordinates json.RawMessage `json:"coordinates"`
	Geometry    json.RawMessage `json:"geometry"`
	Properties  map[string]any  `json:"properties"`
}

func (z *Zone) compileGeometry() error {
	src := strings.TrimSpace(z.GeoJSON)
	if src == "" {
		return fmt.Errorf("%w: no GeoJSON given", ErrEmptyGeometry)
	}
	if err := precheck(src); err != nil {
		return err
	}
	var g rawGeo
	if err := json.Unmarshal([]byte(src), &g); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformedJSON, err)
	}
	if g.Type == "Feature" {
		if len(g.Geometry) == 0 || string(g.Geometry) == "null" {
			return fmt.Errorf("%w: Feature has no geometry", ErrEmptyGeometry)
		}
		props := g.Properties
		if err := json.Unmarshal(g.Geometry, &g); err != nil {
			return fmt.Errorf("%w: Feature geometry: %w", ErrMalformedJSON, err)
		}
		// A Feature may carry the circle radius or corridor buffer as properties.
		if z.RadiusM == 0 {
			z.RadiusM, _ = props["radius_m"].(float64)
		}
		if z.BufferM == 0 {
			z.BufferM, _ = props["buffer_m"].(float64)
		}
	}
	if g.Type == "" {
		return fmt.Errorf("%w: no \"type\" member", ErrMalformedJSON)
	}
	if len(g.Coordinates) == 0 || string(g.Coordinates) == "null" {
		return fmt.Errorf("%w: %s has no coordinates", ErrEmptyGeometry, g.Type)
	}
	// The library parser checks the document as GeoJSON; the checks below explain
	// precisely what is wrong when it (or they) refuse it.
	lib, libErr := geojson.Parse(src, &geojson.ParseOptions{IndexGeometry: 64, IndexGeometryKind: geometry.QuadTree, IndexChildren: 64, DisableCircleType: true})
	switch g.Type {
	case "Polygon":
		var rings [][][]float64
		if err := json.Unmarshal(g.Coordinates, &rings); err != nil {
			return fmt.Errorf("%w: Polygon coordinates must be an array of rings of [lon, lat]: %w", ErrMalformedJSON, err)
		}
		part, err := compilePolygon(rings, "polygon")
		if err != nil {
			return err
		}
		z.Shape = ShapePolygon
		z.shape = &multiPoly{parts: []*polyPart{part}}
		z.poly, z.single = *part, true
	case "MultiPolygon":
		var polys [][][][]float64
		if err := json.Unmarshal(g.Coordinates, &polys); err != nil {
			return fmt.Errorf("%w: MultiPolygon coordinates must be an array of polygons: %w", ErrMalformedJSON, err)
		}
		if len(polys) == 0 {
			return fmt.Errorf("%w: MultiPolygon has no polygons", ErrEmptyGeometry)
		}
		mp := &multiPoly{}
		total := 0
		for i, rings := range polys {
			part, err := compilePolygon(rings, fmt.Sprintf("polygon %d", i))
			if err != nil {
				return err
			}
			total += part.vertices
			if total > MaxVertices {
				return fmt.Errorf("%w: %d vertices, limit %d", ErrTooManyVertices, total, MaxVertices)
			}
			mp.parts = append(mp.parts, part)
		}
		z.Shape = ShapeMultiPolygon
		z.shape = mp
	case "Point":
		var c []float64
		if err := json.Unmarshal(g.Coordinates, &c); err != nil {
			return fmt.Errorf("%w: Point coordinates must be [lon, lat]: %w", ErrMalformedJSON, err)
		}
		if err := checkPosition(c, "circle centre"); err != nil {
			return err
		}
		if !(z.RadiusM > 0) || z.RadiusM > MaxRadiusM {
			return fmt.Errorf("%w: a Point zone is a circle and needs radius_m in (0, %d], got %v", ErrRadius, MaxRadiusM, z.RadiusM)
		}
		z.Shape = ShapeCircle
		z.shape = newCircle(geo.Point{Lat: c[1], Lon: c[0]}, z.RadiusM)
	case "LineString":
		var line [][]float64
		if err := json.Unmarshal(g.Coordinates, &line); err != nil {
			return fmt.Errorf("%w: LineString coordinates must be an array of [lon, lat]: %w", ErrMalformedJSON, err)
		}
		if len(line) < 2 {
			return fmt.Errorf("%w: corridor line has %d positions, needs at least 2", ErrEmptyGeometry, len(line))
		}
		if len(line) > MaxVertices {
			return fmt.Errorf("%w: %d vertices, limit %d", ErrTooManyVertices, len(line), MaxVertices)
		}
		for i, p := range line {
			if err := checkPosition(p, fmt.Sprintf("corridor position %d", i)); err != nil {
				return err
			}
		}
		if !(z.BufferM > 0) || z.BufferM > MaxBufferM {
			return fmt.Errorf("%w: a LineString zone is a corridor and needs buffer_m in (0, %d], got %v", ErrBuffer, MaxBufferM, z.BufferM)
		}
		z.Shape = ShapeCorridor
		z.shape = newCorridor(line, z.BufferM)
	default:
		return fmt.Errorf("%w: %q (want Polygon, MultiPolygon, Point with radius_m, or LineString with buffer_m)", ErrUnsupported, g.Type)
	}
	if libErr != nil {
		return fmt.Errorf("%w: %s: %w", ErrMalformedJSON, g.Type, libErr)
	}
	z.object = lib
	if f, ok := lib.(*geojson.Feature); ok {
		z.object = f.Base()
	}
	z.extentM = z.shape.extentM()
	return nil
}

func checkPosition(c []float64, where string) error {
	if len(c) < 2 {
		return fmt.Errorf("%w: %s has %d numbers, needs [lon, lat]", ErrCoordinate, where, len(c))
	}
	lon, lat := c[0], c[1]
	if math.IsNaN(lon) || math.IsNaN(lat) || lon < -180 || lon > 180 || lat < -90 || lat > 90 {
		return fmt.Errorf("%w: %s [%v, %v]: longitude must be in [-180, 180] and latitude in [-90, 90]", ErrCoordinate, where, lon, lat)
	}
	return nil
}

// compilePolygon validates the rings of one polygon and unwraps longitudes across the
// antimeridian: a ring whose consecutive vertices are more than 180° apart in longitude
// is taken to cross it, and is rewritten with continuous longitudes (e.g. 179 → 181), so
// the exact test works in one frame; lookups shift points into that frame.
func compilePolygon(rings [][][]float64, where string) (*polyPart, error) {
	if len(rings) == 0 {
		return nil, fmt.Errorf("%w: %s has no rings", ErrEmptyGeometry, where)
	}
	total := 0
	var pts [][]geometry.Point
	for ri, ring := range rings {
		name := fmt.Sprintf("%s ring %d", where, ri)
		if ri == 0 {
			name += " (exterior)"
		} else {
			name += " (hole)"
		}
		if len(ring) == 0 {
			return nil, fmt.Errorf("%w: %s has no positions", ErrEmptyGeometry, name)
		}
		if len(ring) < 4 {
			return nil, fmt.Errorf("%w: %s has %d positions, a closed ring needs at least 4", ErrRingTooShort, name, len(ring))
		}
		total += len(ring)
		if total > MaxVertices {
			return nil, fmt.Errorf("%w: %d vertices, limit %d", ErrTooManyVertices, total, MaxVertices)
		}
		for i, p := range ring {
			if err := checkPosition(p, fmt.Sprintf("%s position %d", name, i)); err != nil {
				return nil, err
			}
		}
		first, last := ring[0], ring[len(ring)-1]
		if first[0] != last[0] || first[1] != last[1] {
			return nil, fmt.Errorf("%w: %s starts at [%v, %v] and ends at [%v, %v]; the last position must repeat the first", ErrRingNotClosed, name, first[0], first[1], last[0], last[1])
		}
		if distinct(ring) < 3 {
			return nil, fmt.Errorf("%w: %s has fewer than 3 distinct positions", ErrRingTooShort, name)
		}
		ps := make([]geometry.Point, len(ring))
		ps[0] = geometry.Point{X: ring[0][0], Y: ring[0][1]}
		for i := 1; i < len(ring); i++ {
			x := ring[i][0]
			prev := ps[i-1].X
			for x-prev > 180 {
				x -= 360
			}
			for x-prev < -180 {
				x += 360
			}
			ps[i] = geometry.Point{X: x, Y: ring[i][1]}
		}
		if d := ps[len(ps)-1].X - ps[0].X; math.Abs(d) > 1e-9 {
			return nil, fmt.Errorf("%w: %s winds once around the earth", ErrRingAroundPole, name)
		}
		ps[len(ps)-1] = ps[0]
		// Put the ring in [-180, 540) with its west edge in [-180, 180).
		minX := ps[0].X
		for _, p := range ps {
			minX = math.Min(minX, p.X)
		}
		shift := 0.0
		for minX+shift < -180 {
			shift += 360
		}
		for minX+shift >= 180 {
			shift -= 360
		}
		if ri > 0 && len(pts) > 0 {
			// Holes follow the exterior's frame.
			ex := pts[0]
			shift = frameShift(ps[0].X, ex[0].X)
		}
		if shift != 0 {
			for i := range ps {
				ps[i].X += shift
			}
		}
		pts = append(pts, ps)
	}
	part := &polyPart{rings: pts, vertices: total}
	part.poly = geometry.NewPoly(pts[0], pts[1:], &geometry.IndexOptions{Kind: geometry.QuadTree, MinPoints: 64})
	r := part.poly.Rect()
	part.minX, part.minY, part.maxX, part.maxY = r.Min.X, r.Min.Y, r.Max.X, r.Max.Y
	part.bands = newBandIndex(pts, part.minY, part.maxY, total-len(pts))
	return part, nil
}

// frameShift is the multiple of 360 that brings x closest to ref.
func frameShift(x, ref float64) float64 {
	return math.Round((ref-x)/360) * 360
}

func distinct(ring [][]float64) int {
	seen := make([][2]float64, 0, 4)
	for _, p := range ring {
		k := [2]float64{p[0], p[1]}
		if !slices.Contains(seen, k) {
			seen = append(seen, k)
			if len(seen) >= 3 {
				return 3
			}
		}
	}
	return len(seen)
}
