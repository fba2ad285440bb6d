package maintenance

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

func TestDTCTable(t *testing.T) {
	if err := loadDTCTable(); err != nil {
		t.Fatalf("shipped table: %v", err)
	}
	if len(dtcTable) < 50 {
		t.Fatalf("shipped table: got %d codes, want at least 50", len(dtcTable))
	}
	tests := []struct {
		code     string
		standard bool
		wantSev  Severity
		wantDesc string
	}{
		{"P0301", true, SeverityHigh, "Cylinder 1 misfire detected"},
		{"P0217", true, SeverityCritical, "Engine overheat condition"},
		{"P0420", true, SeverityMedium, "Catalyst system efficiency below threshold (bank 1)"},
		{"P1234", true, SeverityMedium, "Powertrain fault code (manufacturer-specific, not in the shipped table)"},
		{"B0001", true, SeverityLow, "Body fault code (generic, not in the shipped table)"},
		{"XYZ", false, SeverityUnknown, "Fault code in a non-standard format"},
	}
	for _, tc := range tests {
		desc, sev := DescribeDTC(tc.code, tc.standard)
		if desc != tc.wantDesc || sev != tc.wantSev {
			t.Errorf("%s: got %q/%v, want %q/%v", tc.code, desc, sev, tc.wantDesc, tc.wantSev)
		}
	}
	if _, err := parseDTCTable("code,severity,description\nP0301,dreadful,x\n"); err == nil {
		t.Error("table with an unknown severity: got no error")
	}
}

func TestParseDTC(t *testing.T) {
	tests := []struct {
		raw      string
		want     string
		standard bool
		err      error
	}{
		{"P0301", "P0301", true, nil},
		{" p0301 ", "P0301", true, nil},
		{"u0100", "U0100", true, nil},
		{"C1A2F", "C1A2F", true, nil},
		{"P4301", "P4301", false, nil}, // second character must be 0..3
		{"0301", "0301", false, nil},
		{"SPN110-FMI0", "SPN110-FMI0", false, nil},
		{"", "", false, ErrInvalidDTC},
		{"   ", "", false, ErrInvalidDTC},
		{"P03\x0001", "", false, ErrInvalidDTC},
		{"ΡΟΣΑ", "", false, ErrInvalidDTC},
		{strings.Repeat("A", 17), "", false, ErrInvalidDTC},
	}
	for _, tc := range tests {
		got, std, err := ParseDTC(tc.raw)
		if !errors.Is(err, tc.err) || got != tc.want || std != tc.standard {
			t.Errorf("ParseDTC(%q): got %q, %v, %v; want %q, %v, %v", tc.raw, got, std, err, tc.want, tc.standard, tc.err)
		}
	}
}

func FuzzParseDTC(f *testing.F) {
	for _, s := range []string{"P0301", " p0420", "SPN110", "", "\x00", "U0100 ", "Ω"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		code, standard, err := ParseDTC(raw)
		if err != nil {
			if code != "" {
				t.Fatalf("error with a code: %q", code)
			}
			return
		}
		if code == "" || len(code) > MaxDTCLen {
			t.Fatalf("kept code %q of length %d", code, len(code))
		}
		if again, std2, err := ParseDTC(code); err != nil || again != code || std2 != standard {
			t.Fatalf("not idempotent: %q → %q (%v) → %q (%v, %v)", raw, code, standard, again, std2, err)
		}
		if desc, _ := DescribeDTC(code, standard); desc == "" {
			t.Fatalf("no description for %q", code)
		}
	})
}

// TestFaultCodeLifecycle: a code appears, repeats, clears and reappears.
func TestFaultCodeLifecycle(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t, DefaultConfig())
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }

	evs := feedKind(t, s, true, rec("V1", at(0), dtcs("P0301", "p0420"), mil(true)))
	if got := kinds(evs); !reflect.DeepEqual(got, []string{EventMILOn, EventDTCNew, EventDTCNew}) {
		t.Fatalf("appear: got %v, want mil_on and two dtc_new", got)
	}
	if evs[1].Attrs["code"] != "P0301" || evs[1].Attrs["severity"] != "high" || evs[1].Attrs["description"] != "Cylinder 1 misfire detected" {
		t.Fatalf("dtc_new attributes: got %v", evs[1].Attrs)
	}
	// Repeat: no event, last seen moves.
	if evs := feedKind(t, s, true, rec("V1", at(5), dtcs("P0301", "P0420"), mil(true))); len(evs) != 0 {
		t.Fatalf("repeat: got %v, want no events", kinds(evs))
	}
	// A periodic record without codes says nothing about them.
	feed(t, s, rec("V1", at(6)))
	fcs, err := s.FaultCodes(ctx, "V1", true)
	if err != nil || len(fcs) != 2 || !fcs[0].LastSeen.Equal(at(5)) || !fcs[0].FirstSeen.Equal(at(0)) {
		t.Fatalf("after repeat: got %+v, %v; want both active, first seen %v, last seen %v", fcs, err, at(0), at(5))
	}
	// Clear: a diagnostics report without P0301.
	if evs := feedKind(t, s, true, rec("V1", at(10), dtcs("P0420"), mil(false))); len(evs) != 0 {
		t.Fatalf("clear: got %v, want no events", kinds(evs))
	}
	all, _ := s.FaultCodes(ctx, "V1", false)
	if len(all) != 2 || all[0].Code != "P0420" || !all[0].Active || all[1].Code != "P0301" || all[1].Active || !all[1].Cleared.Equal(at(10)) {
		t.Fatalf("after clear: got %+v; want P0420 active, P0301 cleared at %v", all, at(10))
	}
	// Reappear: a second occurrence, a new event with its own id; the MIL comes on again.
	evs = feedKind(t, s, true, rec("V1", at(20), dtcs("P0301", "P0420"), mil(true)))
	if got := kinds(evs); !reflect.DeepEqual(got, []string{EventMILOn, EventDTCNew}) {
		t.Fatalf("reappear: got %v, want mil_on and dtc_new", got)
	}
	if evs[1].ID != "maintenance.dtc_new.V1.P0301.2" || evs[1].Attrs["occurrence"] != "2" {
		t.Fatalf("reappear event: got id %s attrs %v, want occurrence 2", evs[1].ID, evs[1].Attrs)
	}
	fcs, _ = s.FaultCodes(ctx, "V1", true)
	if len(fcs) != 2 || fcs[0].Code != "P0301" || fcs[0].Occurrences != 2 || !fcs[0].FirstSeen.Equal(at(0)) || !fcs[0].Cleared.IsZero() {
		t.Fatalf("after reappear: got %+v; want P0301 first (high), 2 occurrences, first seen kept", fcs)
	}
	h, err := s.VehicleHealth(ctx, "V1")
	if err != nil || !h.State.MIL || len(h.Faults) != 2 {
		t.Fatalf("health: got %+v, %v; want MIL on and 2 active codes", h, err)
	}
}

func TestDiagThresholdAlerts(t *testing.T) {
	s := newTestService(t, DefaultConfig())
	at := func(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }
	steps := []struct {
		r    func() []Event
		want int
	}{
		{func() []Event { return feed(t, s, rec("V1", at(0), coolant(100), ign(true))) }, 0},
		{func() []Event { return feed(t, s, rec("V1", at(10), coolant(108), ign(true))) }, 0},
		{func() []Event { return feed(t, s, rec("V1", at(40), coolant(110), ign(true))) }, 0},  // 30 s: too short
		{func() []Event { return feed(t, s, rec("V1", at(70), coolant(111), ign(true))) }, 1},  // 60 s above 105
		{func() []Event { return feed(t, s, rec("V1", at(100), coolant(112), ign(true))) }, 0}, // same episode
		{func() []Event { return feed(t, s, rec("V1", at(130), coolant(95), ign(true))) }, 0},  // episode ends
		{func() []Event { return feed(t, s, rec("V1", at(140), coolant(107), ign(true))) }, 0},
		{func() []Event { return feed(t, s, rec("V1", at(200), coolant(107), ign(true))) }, 1}, // a new episode
	}
	var ids []string
	for i, st := range steps {
		evs := st.r()
		if len(evs) != st.want {
			t.Fatalf("step %d: got %v, want %d events", i, kinds(evs), st.want)
		}
		for _, e := range evs {
			if e.Kind != EventDiagThreshold || e.Attrs["rule"] != "coolant_high" {
				t.Fatalf("step %d: got %s %v, want diag_threshold coolant_high", i, e.Kind, e.Attrs)
			}
			ids = append(ids, e.ID)
		}
	}
	if len(ids) != 2 || ids[0] == ids[1] {
		t.Fatalf("episode ids: got %v, want two distinct", ids)
	}
	// Low voltage counts only with the ignition off.
	v := func(sec int, volts float64, on bool) []Event {
		return feed(t, s, rec("V2", t0.Add(time.Duration(sec)*time.Second), extV(volts), ign(on)))
	}
	if n := len(v(0, 11.2, true)) + len(v(900, 11.0, true)); n != 0 {
		t.Fatalf("low voltage with ignition on: got %d events, want 0", n)
	}
	if n := len(v(1000, 11.5, false)) + len(v(1300, 11.4, false)); n != 0 {
		t.Fatalf("low voltage parked for 5 minutes: got %d events, want 0", n)
	}
	evs := v(1600, 11.3, false)
	if len(evs) != 1 || evs[0].Attrs["rule"] != "low_voltage_parked" || evs[0].Attrs["duration_s"] != "600" {
		t.Fatalf("low voltage parked for 10 minutes: got %+v, want one low_voltage_parked after 600 s", evs)
	}
}

// TestSideRecordsRunOnTheirOwnClock: trackers send alarms and diagnostics at once but
// buffer telemetry, so a diagnostics record can arrive before older telemetry. Neither
// makes the other late, and older news never overwrites newer.
func TestSideRecordsRunOnTheirOwnClock(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t, DefaultConfig())
	sec := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }
	feedKind(t, s, true, rec("V1", sec(30), dtcs("P0301"), coolant(90)))
	var tele []telemetry.Record
	for i := 0; i <= 6; i++ {
		r := rec("V1", sec(i*10), odo(100+float64(i)*0.1), coolant(80))
		if i == 1 {
			r.FaultCodes = []string{"P0420"} // older than the diagnostics record: stale news
		}
		tele = append(tele, r)
	}
	feed(t, s, tele...)
	if n := s.Rejects().Count(RejectLateRecord); n != 0 {
		t.Fatalf("late records: got %v, want 0 (telemetry older than a diagnostics record is not late)", n)
	}
	h, err := s.VehicleHealth(ctx, "V1")
	if err != nil {
		t.Fatal(err)
	}
	if h.State.OdometerM != 100600 || h.State.CoolantC != 80 {
		t.Fatalf("state: got odometer %v coolant %v, want 100600 and 80 (the telemetry at 60 s is the newest)", h.State.OdometerM, h.State.CoolantC)
	}
	if len(h.Faults) != 1 || h.Faults[0].Code != "P0301" {
		t.Fatalf("faults: got %+v, want only P0301 (P0420 came in a record older than the last diagnostics)", h.Faults)
	}
	feedKind(t, s, true, rec("V1", sec(20), dtcs()))
	if n := s.Rejects().Count(RejectLateRecord); n != 1 {
		t.Fatalf("a diagnostics record older than the last one: got %v late, want 1", n)
	}
}
