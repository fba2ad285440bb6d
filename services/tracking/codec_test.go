package tracking

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

func sampleState() *State {
	st := stateAt("codec-1", -33.9, 151.2, StatusIdle)
	st.PrevStatus = StatusMoving
	st.StatusTime = st.Fix.Time
	st.Ignition, st.OdoFromDevice, st.Forgot = true, true, true
	st.Fields = 0x1f
	st.EngineHours, st.FuelLitres, st.FuelPercent, st.ExternalVoltage = 1234.5, 40.25, 61, 13.8
	st.OdometerM, st.DeviceOdometer, st.Records = 98765.4, 98765.4, 4242
	st.StillSince = st.Fix.Time.Add(-time.Minute)
	st.LastSentTime = st.Fix.Time.Add(time.Second)
	st.LastSequence = 77
	st.AwayStreak = 2
	st.Away = recent{T: 5, HasPos: true, Lat: 1, Lon: 2}
	st.Parked = true
	st.GPSOdometerM = 12345.6
	st.Backlog = [2]recent{{T: 7, Seq: 3, HasPos: true, Lat: 1.5, Lon: 2.5, Speed: 12.5}, {T: 9, Seq: 4, HasPos: true, Lat: 1.6, Lon: 2.6}}
	st.Recent = append(st.Recent, recent{T: st.Fix.Time.UnixNano() + 1e9, Seq: 2},
		recent{T: st.Fix.Time.UnixNano() + 2e9, Seq: 3, HasPos: true, Lat: -33.9000001, Lon: 151.2, Speed: 42.5})
	st.Pending = []Fix{{Time: st.Fix.Time.Add(3 * time.Second), Seq: 4, Lat: -33.95, Lon: 151.25, SpeedKmh: 50, Ignition: 1}}
	st.MarkApplied(10, st.Fix.Time)
	st.MarkApplied(12, st.Fix.Time.Add(time.Second))
	return st
}

func TestStateCodecRoundTrip(t *testing.T) {
	st := sampleState()
	got, err := decodeState(encodeState(nil, st))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, st) {
		t.Fatalf("got %+v\nwant %+v", got, st)
	}
	f := st.Fix
	f.Ignition = -1
	gf, err := decodeFix(encodeFix(nil, &f))
	if err != nil || gf != f {
		t.Fatalf("got fix %+v, %v; want %+v", gf, err, f)
	}
}

func TestStateCodecRejectsCorruption(t *testing.T) {
	blob := encodeState(nil, sampleState())
	for _, cut := range []int{0, 1, 5, len(blob) / 2, len(blob) - 1} {
		if _, err := decodeState(blob[:cut]); !errors.Is(err, ErrCorrupt) {
			t.Errorf("truncated to %d bytes: got %v, want ErrCorrupt", cut, err)
		}
	}
	bad := append([]byte{99}, blob[1:]...)
	if _, err := decodeState(bad); !errors.Is(err, ErrCorrupt) {
		t.Errorf("unknown version: got %v, want ErrCorrupt", err)
	}
}

func FuzzDecodeState(f *testing.F) {
	f.Add(encodeState(nil, sampleState()))
	f.Add(encodeState(nil, NewState("x")))
	fx := sampleState().Fix
	f.Add(encodeFix(nil, &fx))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		if st, err := decodeState(data); err == nil {
			// Whatever decodes must encode and decode to the same state.
			again, err := decodeState(encodeState(nil, st))
			if err != nil {
				t.Fatalf("re-decode: %v", err)
			}
			if !reflect.DeepEqual(again.Recent, st.Recent) || again.VehicleID != st.VehicleID || again.Records != st.Records {
				t.Fatalf("round trip changed the state")
			}
		}
		_, _ = decodeFix(data)
	})
}
