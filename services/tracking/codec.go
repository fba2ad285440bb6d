package tracking

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

// The Redis store keeps a vehicle's state as one binary blob (one SET per update is about
// twice as fast as a many-field HSET) and each history fix as a sorted-set member. The
// encodings are versioned so a newer service can read what an older one wrote.

const (
	// stateVersion 2 added the GPS odometer, the parked hold, pending suspect fixes and
	// the reported speed of remembered fixes; version 1 blobs still decode.
	stateVersion = 2
	fixVersion   = 1
)

// ErrCorrupt is returned for a stored value that cannot be decoded.
var ErrCorrupt = errors.New("corrupt stored value")

type encoder struct{ b []byte }

func (e *encoder) u8(v uint8)    { e.b = append(e.b, v) }
func (e *encoder) uv(v uint64)   { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) iv(v int64)    { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) f64(v float64) { e.b = binary.LittleEndian.AppendUint64(e.b, math.Float64bits(v)) }
func (e *encoder) str(s string)  { e.uv(uint64(len(s))); e.b = append(e.b, s...) }
func (e *encoder) tm(t time.Time) {
	if t.IsZero() {
		e.iv(0)
		return
	}
	e.iv(t.UnixNano())
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = ErrCorrupt
	}
}

func (d *decoder) u8() uint8 {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uv() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) iv() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) f64() float64 {
	if len(d.b) < 8 {
		d.fail()
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(d.b))
	d.b = d.b[8:]
	return v
}

func (d *decoder) str() string {
	n := d.uv()
	if d.err != nil || n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) tm() time.Time {
	ns := d.iv()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

func (e *encoder) fix(f *Fix) {
	e.tm(f.Time)
	e.uv(f.Seq)
	e.f64(f.Lat)
	e.f64(f.Lon)
	e.f64(f.AltitudeM)
	e.f64(f.SpeedKmh)
	e.f64(f.HeadingDeg)
	e.u8(uint8(f.Ignition + 1))
}

func (d *decoder) fix(f *Fix) {
	f.Time = d.tm()
	f.Seq = d.uv()
	f.Lat = d.f64()
	f.Lon = d.f64()
	f.AltitudeM = d.f64()
	f.SpeedKmh = d.f64()
	f.HeadingDeg = d.f64()
	f.Ignition = int8(d.u8()) - 1
	if f.Ignition < -1 || f.Ignition > 1 {
		d.fail()
	}
}

// encodeState appends st's binary form to dst.
func encodeState(dst []byte, st *State) []byte {
	e := encoder{b: dst}
	e.u8(stateVersion)
	e.str(st.VehicleID)
	e.u8(uint8(st.Status))
	e.u8(uint8(st.PrevStatus))
	e.tm(st.StatusTime)
	var flags uint8
	if st.HasFix {
		flags |= 1
	}
	if st.Ignition {
		flags |= 2
	}
	if st.OdoFromDevice {
		flags |= 4
	}
	if st.Forgot {
		flags |= 8
	}
	if st.Parked {
		flags |= 16
	}
	e.u8(flags)
	e.fix(&st.Fix)
	e.tm(st.LastSeen)
	e.tm(st.LastDeviceTime)
	e.uv(st.LastSequence)
	e.tm(st.LastSentTime)
	e.uv(uint64(st.Fields))
	e.f64(st.EngineHours)
	e.f64(st.FuelLitres)
	e.f64(st.FuelPercent)
	e.f64(st.ExternalVoltage)
	e.f64(st.OdometerM)
	e.f64(st.DeviceOdometer)
	e.uv(st.Records)
	e.tm(st.StillSince)
	e.u8(st.AwayStreak)
	e.iv(st.Away.T)
	e.f64(st.Away.Lat)
	e.f64(st.Away.Lon)
	e.uv(uint64(len(st.Applied)))
	var prevSeq uint64
	var prevAT int64
	for _, m := range st.Applied {
		e.uv(m.Seq - prevSeq) // ascending
		e.iv(m.T - prevAT)
		prevSeq, prevAT = m.Seq, m.T
	}
	e.uv(uint64(len(st.Recent)))
	// Consecutive records are close in time and space: deltas keep the blob small. Times
	// are usually whole milliseconds; positions are stored to 1e-7° (about 1 cm), which
	// is how remember() rounds them.
	var prevT, prevLat, prevLon int64
	for _, r := range st.Recent {
		dt := r.T - prevT
		if dt%1e6 == 0 {
			e.iv(dt/1e6<<1 | 1)
		} else {
			e.iv(dt << 1)
		}
		prevT = r.T
		e.uv(r.Seq)
		if r.HasPos {
			e.u8(1)
			lat, lon := fixed7(r.Lat), fixed7(r.Lon)
			e.iv(lat - prevLat)
			e.iv(lon - prevLon)
			prevLat, prevLon = lat, lon
			e.uv(uint64(math.Round(float64(r.Speed) * 10)))
		} else {
			e.u8(0)
		}
	}
	e.f64(st.GPSOdometerM)
	for i := range st.Backlog {
		b := &st.Backlog[i]
		if !b.HasPos {
			e.u8(0)
			continue
		}
		e.u8(1)
		e.iv(b.T)
		e.uv(b.Seq)
		e.f64(b.Lat)
		e.f64(b.Lon)
		e.uv(uint64(math.Round(float64(b.Speed) * 10)))
	}
	e.uv(uint64(len(st.Pending)))
	for i := range st.Pending {
		e.fix(&st.Pending[i])
	}
	return e.b
}

// fixed7 is a coordinate in units of 1e-7°.
func fixed7(deg float64) int64 { return int64(math.Round(deg * 1e7)) }

// round7 rounds a coordinate to what the state blob keeps of it.
func round7(deg float64) float64 { return float64(fixed7(deg)) / 1e7 }

// maxRecent bounds the remembered records a stored state may claim, so a corrupt length
// cannot make the decoder allocate without limit.
const maxRecent = 4096

// decodeState parses a blob written by encodeState.
func decodeState(b []byte) (*State, error) {
	d := decoder{b: b}
	version := d.u8()
	if d.err == nil && version != 1 && version != stateVersion {
		return nil, fmt.Errorf("%w: state version %d", ErrCorrupt, version)
	}
	st := &State{}
	st.VehicleID = d.str()
	st.Status = Status(d.u8())
	st.PrevStatus = Status(d.u8())
	st.StatusTime = d.tm()
	flags := d.u8()
	st.HasFix, st.Ignition, st.OdoFromDevice, st.Forgot = flags&1 != 0, flags&2 != 0, flags&4 != 0, flags&8 != 0
	st.Parked = flags&16 != 0
	d.fix(&st.Fix)
	st.LastSeen = d.tm()
	st.LastDeviceTime = d.tm()
	st.LastSequence = d.uv()
	st.LastSentTime = d.tm()
	st.Fields = telemetry.Field(d.uv())
	st.EngineHours = d.f64()
	st.FuelLitres = d.f64()
	st.FuelPercent = d.f64()
	st.ExternalVoltage = d.f64()
	st.OdometerM = d.f64()
	st.DeviceOdometer = d.f64()
	st.Records = d.uv()
	st.StillSince = d.tm()
	st.AwayStreak = d.u8()
	st.Away.T = d.iv()
	st.Away.Lat = d.f64()
	st.Away.Lon = d.f64()
	if version == 1 {
		st.AwayStreak = 0 // was the old teleport streak
	}
	st.Away.HasPos = st.AwayStreak > 0
	na := d.uv()
	if d.err != nil || na > maxRecent || na > uint64(len(d.b)) {
		return nil, fmt.Errorf("%w: state of %q", ErrCorrupt, st.VehicleID)
	}
	if na > 0 {
		st.Applied = make([]msgRef, na)
	}
	var prevSeq uint64
	var prevAT int64
	for i := range st.Applied {
		prevSeq += d.uv()
		prevAT += d.iv()
		st.Applied[i] = msgRef{Seq: prevSeq, T: prevAT}
	}
	n := d.uv()
	if d.err != nil || n > maxRecent || n > uint64(len(d.b)) {
		return nil, fmt.Errorf("%w: state of %q", ErrCorrupt, st.VehicleID)
	}
	if n > 0 {
		st.Recent = make([]recent, n)
	}
	var prevT, prevLat, prevLon int64
	for i := range st.Recent {
		r := &st.Recent[i]
		dt := d.iv()
		if dt&1 != 0 {
			dt = dt >> 1 * 1e6
		} else {
			dt >>= 1
		}
		r.T = prevT + dt
		prevT = r.T
		r.Seq = d.uv()
		if d.u8() == 1 {
			r.HasPos = true
			prevLat += d.iv()
			prevLon += d.iv()
			r.Lat, r.Lon = float64(prevLat)/1e7, float64(prevLon)/1e7
			if version >= 2 {
				r.Speed = float32(float64(d.uv()) / 10)
			}
		}
	}
	if version >= 2 {
		st.GPSOdometerM = d.f64()
		for i := range st.Backlog {
			if d.u8() == 1 {
				b := &st.Backlog[i]
				b.HasPos = true
				b.T = d.iv()
				b.Seq = d.uv()
				b.Lat = d.f64()
				b.Lon = d.f64()
				b.Speed = float32(float64(d.uv()) / 10)
			}
		}
		np := d.uv()
		if d.err != nil || np > maxPending {
			return nil, fmt.Errorf("%w: state of %q", ErrCorrupt, st.VehicleID)
		}
		if np > 0 {
			st.Pending = make([]Fix, np)
		}
		for i := range st.Pending {
			d.fix(&st.Pending[i])
		}
	} else if !st.OdoFromDevice {
		st.GPSOdometerM = st.OdometerM
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: state of %q", ErrCorrupt, st.VehicleID)
	}
	if st.Status > StatusOffline || st.PrevStatus > StatusOffline {
		return nil, fmt.Errorf("%w: status %d", ErrCorrupt, st.Status)
	}
	return st, nil
}

// encodeFix is a history member: deterministic for a given fix, so re-adding a redelivered
// fix to a sorted set changes nothing.
func encodeFix(dst []byte, f *Fix) []byte {
	e := encoder{b: dst}
	e.u8(fixVersion)
	e.fix(f)
	return e.b
}

func decodeFix(b []byte) (Fix, error) {
	d := decoder{b: b}
	var f Fix
	if v := d.u8(); d.err == nil && v != fixVersion {
		return f, fmt.Errorf("%w: fix version %d", ErrCorrupt, v)
	}
	d.fix(&f)
	if d.err != nil {
		return f, d.err
	}
	return f, nil
}
