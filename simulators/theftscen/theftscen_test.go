package theftscen

import (
	"reflect"
	"testing"

	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

func TestGenerateIsDeterministic(t *testing.T) {
	a, b := Generate("x", 7, 1), Generate("x", 7, 1)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("got different scenarios from the same seed, want identical ones")
	}
	if c := Generate("x", 8, 1); reflect.DeepEqual(a, c) {
		t.Fatal("got identical scenarios from different seeds")
	}
}

// TestScenariosAreWhatTheySay checks the signature each kind promises, so a change to the
// generator cannot quietly turn a look-alike into something easier.
func TestScenariosAreWhatTheySay(t *testing.T) {
	for _, sc := range Generate("t", 1, 2) {
		t.Run(sc.Vehicle, func(t *testing.T) {
			if len(sc.Records) < 10 {
				t.Fatalf("got %d records, want a scenario", len(sc.Records))
			}
			pos := FamilyOf(sc.Kind) != FamilyNone
			if pos != (!sc.Start.IsZero() && sc.End.After(sc.Start)) {
				t.Fatalf("positive %v, incident %s..%s", pos, sc.Start, sc.End)
			}
			var prev telemetry.Record
			var sats4, noFix, moveOffFix, alarms, silent int
			for i, r := range sc.Records {
				if i > 0 && (r.ReceivedTime.Before(prev.ReceivedTime) || !r.DeviceTime.After(prev.DeviceTime)) {
					t.Fatalf("record %d out of order", i)
				}
				if r.ReceivedTime.Before(r.DeviceTime) {
					t.Fatalf("record %d arrives before it was taken", i)
				}
				if r.FixValid && r.Satellites == 4 && r.HDOP == 4.5 {
					sats4++
				}
				if !r.FixValid {
					noFix++
				}
				if !r.Ignition && r.FixValid && r.SpeedKmh > 10 && !r.Movement {
					moveOffFix++
				}
				alarms += len(r.Alarms)
				prev = r
			}
			silent = sc.Dropped
			want := map[Kind]func() bool{
				Multipath:      func() bool { return sats4 >= 1 },
				Garage:         func() bool { return noFix > 0 },
				TunnelLong:     func() bool { return noFix > 0 },
				TowNoFix:       func() bool { return noFix > 0 },
				Ferry:          func() bool { return moveOffFix > 5 },
				Train:          func() bool { return moveOffFix > 5 },
				DeviceTowAlarm: func() bool { return alarms == 1 },
				DeviceJamAlarm: func() bool { return alarms == 1 },
				JammerStays:    func() bool { return silent > 0 },
			}
			if f := want[sc.Kind]; f != nil && !f() {
				t.Fatalf("kind %s without its signature (4-sat fixes %d, no-fix %d, ignition-off moving fixes %d, alarms %d, never sent %d)",
					sc.Kind, sats4, noFix, moveOffFix, alarms, silent)
			}
		})
	}
}
