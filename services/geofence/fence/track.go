package fence

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fleetwire/fleetwire/pkg/geo"
)

// EventKind is what happened between a vehicle and a zone.
type EventKind string

const (
	Enter     EventKind = "enter"
	Exit      EventKind = "exit"
	Dwell     EventKind = "dwell"
	Overspeed EventKind = "overspeed_in_zone"
	Crossed   EventKind = "crossed"
)

// Event is one zone event. Time is the device time of the fix that caused it, except
// for Crossed, whose Time is interpolated to where the segment entered the zone (and
// ExitTime to where it left).
type Event struct {
	ID             string // deterministic: the same fix and zone always give the same id
	Kind           EventKind
	Vehicle        string
	ZoneID         string
	ZoneName       string
	Time           time.Time
	ExitTime       time.Time // Crossed only
	Lat, Lon       float64
	SpeedKmh       float64
	SpeedLimitKmh  float64 // Overspeed only
	MustStayInside bool    // an Exit from a must-stay-inside zone
	// RaiseAlert: the zone's alert policy asks the alert feed to raise an alert for it.
	RaiseAlert bool
}

func (k EventKind) valid() bool {
	switch k {
	case Enter, Exit, Dwell, Overspeed, Crossed:
		return true
	}
	return false
}

// Fix is the part of a telemetry record the engine uses.
type Fix struct {
	Time     time.Time
	Lat, Lon float64
	SpeedKmh float64
}

// Membership is a vehicle being inside one zone.
type Membership struct {
	ZoneID     string    `json:"z"`
	Since      time.Time `json:"s"`           // device time of the fix that confirmed the entry
	DwellFired bool      `json:"d,omitempty"` // DWELL already raised for this visit
	Overspeed  bool      `json:"o,omitempty"` // inside an overspeed episode (raised once)
	Out        int       `json:"x,omitempty"` // consecutive fixes clearly outside, not yet an exit
}

// Pending is a zone a vehicle has been clearly inside for fewer than the confirming
// number of consecutive fixes.
type Pending struct {
	ZoneID string `json:"z"`
	Count  int    `json:"n"`
}

// State is what the engine remembers about one vehicle between fixes.
type State struct {
	Vehicle  string       `json:"v"`
	LastTime time.Time    `json:"t"`
	LastLat  float64      `json:"la"`
	LastLon  float64      `json:"lo"`
	HasLast  bool         `json:"h"`
	Zones    []Membership `json:"m,omitempty"` // sorted by zone id
	Pending  []Pending    `json:"p,omitempty"`
}

// Clone returns a deep copy.
func (s State) Clone() State {
	s.Zones = slices.Clone(s.Zones)
	s.Pending = slices.Clone(s.Pending)
	return s
}

// Inside reports whether the vehicle is a member of zone.
func (s *State) Inside(zoneID string) bool {
	for _, m := range s.Zones {
		if m.ZoneID == zoneID {
			return true
		}
	}
	return false
}

// ErrOutOfOrder is returned for a fix not newer than the last one applied; it changes
// nothing, so a late or replayed record never produces an event backwards in time.
var ErrOutOfOrder = errors.New("fix not newer than the last applied")

// Rules are the tunables of the membership rules. See docs/geofence.md.
type Rules struct {
	// HysteresisM and ConfirmFixes are the anti-flapping rule: a vehicle counts as
	// having entered once ConfirmFixes consecutive fixes lie at least HysteresisM inside
	// the boundary, and as having left once as many lie at least HysteresisM outside.
	// Fixes within the band change nothing and break a run. A single fix at least
	// FarFactor × HysteresisM beyond the boundary confirms at once (a vehicle driving
	// through with sparse fixes). For a zone smaller than 8× the margin, an eighth of its
	// smallest extent is used as the margin.
	HysteresisM  float64
	ConfirmFixes int
	FarFactor    float64
	// CrossMaxGap and CrossMaxDistM bound the pass-through check: only consecutive fixes
	// at most this far apart in time and distance are joined by a straight segment.
	CrossMaxGap   time.Duration
	CrossMaxDistM float64
	// OverspeedRearmKmh: after an overspeed event, another is raised in the same visit
	// only once the speed has dropped to the limit minus this.
	OverspeedRearmKmh float64
	// Groups maps a vehicle to the groups it belongs to, for zones that apply to groups.
	Groups map[string][]string
	// GroupsOf, when set, answers instead of Groups: the vehicle registry's groups (one
	// group model for every service; see geofence.Service.UseGroups).
	GroupsOf func(vehicle string) []string
}

// groupsOf returns the groups vehicle belongs to.
func (r *Rules) groupsOf(vehicle string) []string {
	if r.GroupsOf != nil {
		return r.GroupsOf(vehicle)
	}
	return r.Groups[vehicle]
}

// DefaultRules returns the documented defaults.
func DefaultRules() Rules {
	return Rules{HysteresisM: 20, ConfirmFixes: 2, FarFactor: 4, CrossMaxGap: 10 * time.Minute, CrossMaxDistM: 20_000, OverspeedRearmKmh: 5}
}

// Step applies one fix to the vehicle's state, appending the events it raises to out.
// It mutates st; a caller that may have to abandon the result works on a Clone.
//
// One index search finds every zone that matters: those near the fix (or near the
// segment from the previous fix), the box grown by the hysteresis margin so a zone
// whose band holds the fix is among them. A zone the vehicle was in that the search
// does not return is one it is clearly outside of.
func (r *Rules) Step(ix *Index, st *State, f Fix, out []Event) ([]Event, error) {
	if st.HasLast && !f.Time.After(st.LastTime) {
		return out, ErrOutOfOrder
	}
	groups := r.groupsOf(st.Vehicle)
	p := geo.Point{Lat: f.Lat, Lon: f.Lon}
	prev := geo.Point{Lat: st.LastLat, Lon: st.LastLon}
	cross := st.HasLast && f.Time.Sub(st.LastTime) <= r.CrossMaxGap
	if cross {
		segM := geo.DistanceM(prev, p)
		cross = segM > 0 && segM <= r.CrossMaxDistM
	}
	minX, minY, maxX, maxY := f.Lon, f.Lat, f.Lon, f.Lat
	b := p
	if cross {
		// Unwrap the fix to within 180° of the previous one (short way round).
		b.Lon = prev.Lon + normDelta(p.Lon-prev.Lon)
		minX, maxX = math.Min(prev.Lon, b.Lon), math.Max(prev.Lon, b.Lon)
		minY, maxY = math.Min(prev.Lat, b.Lat), math.Max(prev.Lat, b.Lat)
		if minX < -180 {
			minX, maxX = minX+360, maxX+360
		}
	}
	gLat := r.HysteresisM / metresPerDeg
	gLon := gLat / math.Max(0.01, math.Cos(f.Lat*math.Pi/180))
	minX, maxX, minY, maxY = minX-gLon, maxX+gLon, minY-gLat, maxY+gLat

	old := st.Zones
	var hashBuf [16]uint64
	hashes := hashBuf[:0]
	for i := range old {
		hashes = append(hashes, hashID(old[i].ZoneID))
	}
	var flagsBuf [16]uint8 // per old membership: 1 visited, 2 dropped
	flags := flagsBuf[:0]
	if len(old) > len(flagsBuf) {
		flags = make([]uint8, len(old))
	} else {
		flags = flagsBuf[:len(old)]
	}
	var addedBuf [4]Membership
	added := addedBuf[:0]
	var pendBuf [4]Pending
	pending := pendBuf[:0]
	var seenBuf [16]*Zone
	seen := seenBuf[:0]

	ix.candidates(minX, minY, maxX, maxY, func(z *Zone) {
		if slices.Contains(seen, z) {
			return
		}
		seen = append(seen, z)
		if i := indexOf(old, hashes, z); i >= 0 {
			flags[i] |= 1
			if !z.AppliesTo(st.Vehicle, groups) {
				flags[i] |= 2
				return
			}
			var left bool
			out, left = r.stay(z, &old[i], st.Vehicle, f, out)
			if left {
				flags[i] |= 2
			}
			return
		}
		if !z.AppliesTo(st.Vehicle, groups) {
			return
		}
		margin := z.Margin(r.HysteresisM)
		if z.Contains(f.Lat, f.Lon) {
			d := z.boundaryWithin(f.Lat, f.Lon, r.FarFactor*margin+1)
			if d < margin {
				return // in the band: not yet entered, and any run is broken
			}
			n := 1 + pendingCount(st.Pending, z.ID)
			if n < r.ConfirmFixes && d < r.FarFactor*margin {
				pending = append(pending, Pending{ZoneID: z.ID, Count: n})
				return
			}
			m := Membership{ZoneID: z.ID, Since: f.Time}
			if z.alerts&alertEnter != 0 && z.Active(f.Time) {
				out = append(out, r.event(Enter, st.Vehicle, z, f, f.Time))
			}
			out = r.inside(z, &m, st.Vehicle, f, out)
			added = append(added, m)
			return
		}
		if z.alerts&alertCross == 0 {
			return
		}
		if pendingCount(st.Pending, z.ID) > 0 {
			// The previous fix was clearly inside but alone: a vehicle crossing a zone
			// narrower than its fix spacing. Clearly outside now, that is a pass-through.
			if z.boundaryWithin(f.Lat, f.Lon, margin) >= margin && z.Active(st.LastTime) {
				e := r.event(Crossed, st.Vehicle, z, f, st.LastTime)
				e.ExitTime = f.Time
				e.Lat, e.Lon = prev.Lat, prev.Lon
				out = append(out, e)
			}
			return
		}
		if !cross {
			return
		}
		tIn, tOut, insideM, ok := z.crossing(prev, b)
		if !ok || insideM < margin {
			return
		}
		span := f.Time.Sub(st.LastTime)
		at := st.LastTime.Add(time.Duration(tIn * float64(span)))
		if !z.Active(at) {
			return
		}
		e := r.event(Crossed, st.Vehicle, z, f, at)
		e.ExitTime = st.LastTime.Add(time.Duration(tOut * float64(span)))
		ip := geo.Interpolate(prev, p, tIn)
		e.Lat, e.Lon = ip.Lat, ip.Lon
		out = append(out, e)
	})
	// Zones the vehicle was in that the search did not return: clearly outside them.
	for i := range old {
		if flags[i]&1 != 0 {
			continue
		}
		z, ok := ix.byID[old[i].ZoneID]
		if !ok || !z.AppliesTo(st.Vehicle, groups) {
			flags[i] |= 2 // zone deleted or no longer concerns this vehicle: forget it quietly
			continue
		}
		var left bool
		if out, left = r.stay(z, &old[i], st.Vehicle, f, out); left {
			flags[i] |= 2
		}
	}
	kept := old[:0]
	for i := range old {
		if flags[i]&2 == 0 {
			kept = append(kept, old[i])
		}
	}
	st.Zones = append(kept, added...)
	if len(added) > 0 {
		slices.SortFunc(st.Zones, func(a, b Membership) int { return strings.Compare(a.ZoneID, b.ZoneID) })
	}
	st.Pending = append(st.Pending[:0], pending...)
	if len(st.Pending) == 0 {
		st.Pending = nil
	}
	st.LastTime, st.LastLat, st.LastLon, st.HasLast = f.Time, f.Lat, f.Lon, true
	return out, nil
}

// stay applies a fix to a zone the vehicle is in; left reports a confirmed exit.
func (r *Rules) stay(z *Zone, m *Membership, vehicle string, f Fix, out []Event) ([]Event, bool) {
	margin := z.Margin(r.HysteresisM)
	if !z.Contains(f.Lat, f.Lon) {
		if d := z.boundaryWithin(f.Lat, f.Lon, r.FarFactor*margin+1); d >= margin {
			m.Out++
			if m.Out < r.ConfirmFixes && d < r.FarFactor*margin {
				return out, false
			}
			if z.alerts&alertExit != 0 && z.Active(f.Time) {
				out = append(out, r.event(Exit, vehicle, z, f, f.Time))
			}
			return out, true
		}
	}
	m.Out = 0
	return r.inside(z, m, vehicle, f, out), false
}

func pendingCount(ps []Pending, id string) int {
	for _, p := range ps {
		if p.ZoneID == id {
			return p.Count
		}
	}
	return 0
}

func indexOf(ms []Membership, hashes []uint64, z *Zone) int {
	for i, h := range hashes {
		if h == z.idHash && ms[i].ZoneID == z.ID {
			return i
		}
	}
	return -1
}

func normDelta(d float64) float64 {
	for d > 180 {
		d -= 360
	}
	for d < -180 {
		d += 360
	}
	return d
}

// inside applies the rules for a vehicle that is (still) in z: dwell and overspeed.
func (r *Rules) inside(z *Zone, m *Membership, vehicle string, f Fix, out []Event) []Event {
	if z.alerts&alertDwell != 0 && !m.DwellFired && f.Time.Sub(m.Since) >= z.dwell {
		m.DwellFired = true
		if z.Active(f.Time) {
			out = append(out, r.event(Dwell, vehicle, z, f, f.Time))
		}
	}
	if z.limitKmh > 0 {
		switch {
		case f.SpeedKmh > z.limitKmh && !m.Overspeed:
			m.Overspeed = true
			if z.Active(f.Time) {
				e := r.event(Overspeed, vehicle, z, f, f.Time)
				e.SpeedLimitKmh = z.SpeedLimitKmh
				out = append(out, e)
			}
		case m.Overspeed && f.SpeedKmh <= z.limitKmh-r.OverspeedRearmKmh:
			m.Overspeed = false
		}
	}
	return out
}

func (r *Rules) event(kind EventKind, vehicle string, z *Zone, f Fix, at time.Time) Event {
	return Event{
		ID:      EventID(kind, vehicle, z.ID, at),
		Kind:    kind,
		Vehicle: vehicle, ZoneID: z.ID, ZoneName: z.Name,
		Time: at, Lat: f.Lat, Lon: f.Lon, SpeedKmh: f.SpeedKmh,
		MustStayInside: kind == Exit && z.Alert == AlertMustStayInside,
		RaiseAlert:     z.raises(kind),
	}
}

// EventID derives the event id from what caused it, so a replayed fix raises an event
// with the same id (and JetStream's duplicate window drops it).
func EventID(kind EventKind, vehicle, zone string, at time.Time) string {
	h := sha256.New()
	h.Write([]byte("geofence\x00" + string(kind) + "\x00" + vehicle + "\x00" + zone + "\x00" + strconv.FormatInt(at.UnixNano(), 10)))
	var sum [32]byte
	return "gf-" + hex.EncodeToString(h.Sum(sum[:0])[:16])
}
