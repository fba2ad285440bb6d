package tracking

import (
	"errors"
	"testing"
	"time"
)

func TestParseRules(t *testing.T) {
	t.Run("profiles start from the defaults", func(t *testing.T) {
		cfg, err := ParseRules([]byte(`{
			"filters": {"GT06N": {"min_satellites": 4, "max_hdop": 6, "speed_tolerance": 0, "speed_check_window": "90s"}},
			"group_trips": {"couriers": {"min_distance_m": 150, "min_duration": "30s"}}
		}`), DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		want := DefaultFilterConfig()
		want.MinSatellites, want.MaxHDOP, want.SpeedTolerance, want.SpeedCheckWindow = 4, 6, 0, 90*time.Second
		if got := cfg.ModelFilters["GT06N"]; got != want {
			t.Errorf("got GT06N profile %+v, want %+v", got, want)
		}
		wantTrips := DefaultTripConfig()
		wantTrips.MinDistanceM, wantTrips.MinDuration = 150, 30*time.Second
		if got := cfg.TripsFor([]string{"vans", "couriers"}); got != wantTrips {
			t.Errorf("got couriers' trips %+v, want %+v", got, wantTrips)
		}
		if got := cfg.TripsFor([]string{"vans"}); got != DefaultTripConfig() {
			t.Errorf("got trips %+v for a group without rules, want the defaults", got)
		}
		if tr := NewTracker(cfg); tr.ForModel("GT06N").f != want || tr.ForModel("FMB920").f != cfg.Filter {
			t.Error("got the wrong filter profile per model")
		}
	})
	for _, tc := range []struct{ name, doc string }{
		{"unknown key", `{"filters": {"X": {"max_hdopp": 3}}}`},
		{"unknown section", `{"filter": {}}`},
		{"bad duration", `{"group_trips": {"g": {"min_duration": "soon"}}}`},
		{"invalid threshold", `{"filters": {"X": {"teleport_confirm": 0}}}`},
		{"not json", `filters: {}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseRules([]byte(tc.doc), DefaultConfig()); !errors.Is(err, ErrBadConfig) {
				t.Errorf("got %v, want ErrBadConfig", err)
			}
		})
	}
}
