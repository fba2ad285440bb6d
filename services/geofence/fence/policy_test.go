package fence

import (
	"errors"
	"testing"
)

// TestAlertPolicy: a zone without a policy asks for alerts only on broken rules
// (must-stay-inside exit, overspeed); a policy lists exactly the kinds that raise one.
func TestAlertPolicy(t *testing.T) {
	geom := square(centre.Lat, centre.Lon, 300)
	for _, tc := range []struct {
		name   string
		alert  Alert
		policy *AlertPolicy
		want   map[EventKind]bool // kind → RaiseAlert
	}{
		{"default, enter and exit", AlertBoth, nil, map[EventKind]bool{Enter: false, Exit: false, Overspeed: true}},
		{"default, must stay inside", AlertMustStayInside, nil, map[EventKind]bool{Exit: true, Overspeed: true}},
		{"enters wanted", AlertBoth, &AlertPolicy{Raise: []EventKind{Enter}}, map[EventKind]bool{Enter: true, Exit: false, Overspeed: false}},
		{"nothing wanted", AlertMustStayInside, &AlertPolicy{Raise: []EventKind{}}, map[EventKind]bool{Exit: false, Overspeed: false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			z := mustZone(t, Spec{ID: "z", GeoJSON: geom, Alert: tc.alert, AlertPolicy: tc.policy, SpeedLimitKmh: 30})
			ix := NewIndex([]*Zone{z})
			r := DefaultRules()
			st := &State{Vehicle: "v1"}
			var fixes []Fix
			for i := 0; i <= 20; i++ {
				fixes = append(fixes, at(90, float64(i*100-1000), i*10, 36))
			}
			got := map[EventKind]bool{}
			for _, e := range drive(t, &r, ix, st, fixes) {
				got[e.Kind] = e.RaiseAlert
			}
			if len(got) != len(tc.want) {
				t.Fatalf("events %v, want kinds %v", got, tc.want)
			}
			for k, want := range tc.want {
				if g, ok := got[k]; !ok || g != want {
					t.Errorf("%s: raise alert %v (seen %v), want %v", k, g, ok, want)
				}
			}
		})
	}
	if _, err := Compile(Spec{ID: "bad", Name: "bad", GeoJSON: geom, AlertPolicy: &AlertPolicy{Raise: []EventKind{"teleport"}}}); !errors.Is(err, ErrAlert) {
		t.Fatalf("policy naming an unknown kind: got %v, want ErrAlert", err)
	}
}
