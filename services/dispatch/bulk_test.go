package dispatch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
)

func TestSetAlertsState(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, NewMemoryStore())
	// Five alerts: 1-3 zone exits of v1..v3, 4-5 offline of v1, v2.
	raise := func(vehicle, kind string) uint64 {
		a, _, err := h.st.RaiseAlert(ctx, Alert{Vehicle: vehicle, Kind: kind, State: AlertOpen, Severity: SeverityWarning, IncidentKey: kind + "/" + vehicle, FirstTime: t0, LastTime: t0, Occurrences: 1}, 0)
		if err != nil {
			t.Fatal(err)
		}
		return a.ID
	}
	for i := 1; i <= 3; i++ {
		raise(fmt.Sprintf("v%d", i), KindZoneExit)
	}
	raise("v1", KindOffline)
	raise("v2", KindOffline)
	if _, err := h.svc.SetAlertState(ctx, 2, AlertResolved, "ann", ""); err != nil {
		t.Fatal(err)
	}

	var audited []uint64
	each := func(id uint64, err error) { audited = append(audited, id) }
	for _, tc := range []struct {
		name          string
		ids           []uint64
		f             AlertFilter
		to            AlertState
		changed       []uint64
		failed        []uint64
		remaining     int
		wantErr       error
		wantAuditedTo int
	}{
		{name: "ack by kind skips the resolved one", f: AlertFilter{Kind: KindZoneExit}, to: AlertAcknowledged, changed: []uint64{1, 3}},
		{name: "ack again changes nothing", f: AlertFilter{Kind: KindZoneExit}, to: AlertAcknowledged},
		{name: "ids: unknown and already resolved fail, the rest change", ids: []uint64{4, 2, 99}, to: AlertResolved, changed: []uint64{4}, failed: []uint64{2, 99}},
		{name: "resolve acknowledged only", f: AlertFilter{State: AlertAcknowledged}, to: AlertResolved, changed: []uint64{1, 3}},
		{name: "resolving resolved alerts is nothing to do", f: AlertFilter{State: AlertResolved}, to: AlertResolved},
		{name: "resolve by vehicle", f: AlertFilter{Vehicle: "v2"}, to: AlertResolved, changed: []uint64{5}},
		{name: "who is required", ids: []uint64{1}, to: AlertResolved, wantErr: ErrInvalid},
		{name: "too many ids", ids: make([]uint64, MaxBulkAlerts+1), to: AlertResolved, wantErr: ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			audited = nil
			who := "ann"
			if errors.Is(tc.wantErr, ErrInvalid) && len(tc.ids) == 1 {
				who = ""
			}
			res, err := h.svc.SetAlertsState(ctx, tc.ids, tc.f, tc.to, who, "flood", each)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			var failed []uint64
			for _, f := range res.Failed {
				failed = append(failed, f.ID)
			}
			if !slices.Equal(res.Changed, tc.changed) || !slices.Equal(failed, tc.failed) || res.Remaining != tc.remaining {
				t.Fatalf("changed %v failed %v remaining %d; want %v %v %d", res.Changed, failed, res.Remaining, tc.changed, tc.failed, tc.remaining)
			}
			// Every alert attempted is handed to the audit callback, failures included.
			if len(audited) != len(tc.changed)+len(tc.failed) {
				t.Fatalf("audited %v, want every attempted alert", audited)
			}
		})
	}
	a, err := h.st.GetAlert(ctx, 1)
	if err != nil || a.State != AlertResolved || a.ResolvedBy != "ann" || a.ResolveNote != "flood" || a.AckBy != "ann" {
		t.Fatalf("alert 1 after the bulk changes: %+v, %v", a, err)
	}
}

func TestSetAlertsStateRemaining(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, NewMemoryStore())
	for i := range MaxBulkAlerts + 5 {
		v := fmt.Sprintf("v%d", i)
		if _, _, err := h.st.RaiseAlert(ctx, Alert{Vehicle: v, Kind: KindOffline, State: AlertOpen, Severity: SeverityWarning, IncidentKey: "offline/" + v, FirstTime: t0, LastTime: t0, Occurrences: 1}, 0); err != nil {
			t.Fatal(err)
		}
	}
	res, err := h.svc.SetAlertsState(ctx, nil, AlertFilter{Kind: KindOffline}, AlertResolved, "ann", "", nil)
	if err != nil || len(res.Changed) != MaxBulkAlerts || res.Remaining != 5 || res.Changed[0] != 1 {
		t.Fatalf("first call: %d changed (first %v), %d remaining, %v; want %d oldest first, 5 remaining", len(res.Changed), res.Changed[:1], res.Remaining, err, MaxBulkAlerts)
	}
	res, err = h.svc.SetAlertsState(ctx, nil, AlertFilter{Kind: KindOffline}, AlertResolved, "ann", "", nil)
	if err != nil || len(res.Changed) != 5 || res.Remaining != 0 {
		t.Fatalf("second call: %d changed, %d remaining, %v", len(res.Changed), res.Remaining, err)
	}
}
