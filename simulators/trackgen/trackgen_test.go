package trackgen

import (
	"math"
	"reflect"
	"testing"
	"time"
)

func TestGenerateIsDeterministic(t *testing.T) {
	a := Generate(Config{Seed: 7, Vehicles: 3})
	b := Generate(Config{Seed: 7, Vehicles: 3})
	if !reflect.DeepEqual(a, b) {
		t.Fatal("got different fleets for the same seed, want identical")
	}
	c := Generate(Config{Seed: 8, Vehicles: 3})
	if reflect.DeepEqual(a[0].Items, c[0].Items) {
		t.Fatal("got identical fleets for different seeds")
	}
}

// TestGenerateTruth checks the ground truth the accuracy test relies on.
func TestGenerateTruth(t *testing.T) {
	fleet := Generate(Config{Seed: DevSeeds[0], Vehicles: 20})
	var labels [labelCount]int
	var trips, late int
	var km float64
	for _, v := range fleet {
		tripSum := 0.0
		for _, tr := range v.Trips {
			tripSum += tr.DistanceM
			if !tr.End.After(tr.Start) {
				t.Errorf("%s: got trip ending %v before its start %v", v.ID, tr.End, tr.Start)
			}
		}
		if math.Abs(tripSum-v.DistanceM) > 1 {
			t.Errorf("%s: got trips summing to %.0f m, want the day's %.0f m", v.ID, tripSum, v.DistanceM)
		}
		trips += len(v.Trips)
		km += v.DistanceM / 1000
		var prevDeliver time.Time
		for i, it := range v.Items {
			labels[it.Label]++
			if it.Late {
				late++
			}
			if it.Deliver.Before(prevDeliver) {
				t.Fatalf("%s item %d: got delivery %v before the previous %v", v.ID, i, it.Deliver, prevDeliver)
			}
			prevDeliver = it.Deliver
			if it.Label.GoodFix() || it.Label == DrivingSpike || it.Label == ParkedSpike {
				if !it.Record.DeviceTime.Equal(it.TrueTime) {
					t.Fatalf("%s item %d: got device time %v, want the true time %v", v.ID, i, it.Record.DeviceTime, it.TrueTime)
				}
			}
			if it.Label.GoodFix() {
				if d := flatDist(it.TrueLat, it.TrueLon, it.Record.Lat, it.Record.Lon); d > 150 {
					t.Errorf("%s item %d: got a %s fix %.0f m from the truth", v.ID, i, it.Label, d)
				}
			}
			if it.Label == LowQuality && (it.Record.Satellites > 2 || it.Record.HDOP < 15) {
				t.Errorf("%s item %d: got low-quality fix with %d satellites, HDOP %.1f", v.ID, i, it.Record.Satellites, it.Record.HDOP)
			}
		}
	}
	for _, l := range Labels() {
		if labels[l] == 0 {
			t.Errorf("got no %s records in 20 vehicles, want some", l)
		}
	}
	if late == 0 {
		t.Error("got no late records, want a late batch in some vehicles")
	}
	t.Logf("20 vehicles: %d trips, %.0f km, %d late records, labels %v", trips, km, late, labels)
}

func flatDist(lat1, lon1, lat2, lon2 float64) float64 {
	n := (lat2 - lat1) / deg * earthR
	e := (lon2 - lon1) / deg * earthR * math.Cos(lat1/deg)
	return math.Hypot(n, e)
}
