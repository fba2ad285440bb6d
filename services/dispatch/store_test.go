package dispatch

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fleetwire/fleetwire/pkg/redistest"
	"github.com/fleetwire/fleetwire/pkg/storeguard"
)

func TestMemoryStore(t *testing.T) {
	runStoreConformance(t, func(t *testing.T) Store { return NewMemoryStore() })
}

func TestRedisStore(t *testing.T) {
	runStoreConformance(t, func(t *testing.T) Store {
		c := redistest.Client(t)
		p := redistest.Prefix(t, c)
		st := NewRedisStore(c, p)
		t.Cleanup(func() { redistest.KeysUnder(t, c, p, st.KeyPrefix()) })
		return st
	})
}

// The contract holds with the generation check armed (as in the binaries), and a store
// whose marker is gone refuses the batch's vehicle reads and writes.
func TestFencedRedisStore(t *testing.T) {
	ctx := context.Background()
	fenced := func(t *testing.T) (*RedisStore, *redis.Client) {
		c := redistest.Client(t)
		p := redistest.Prefix(t, c)
		st := NewRedisStore(c, p)
		t.Cleanup(func() { redistest.KeysUnder(t, c, p, st.KeyPrefix()) })
		f := storeguard.NewFence(st.KeyPrefix()+"epoch", nil)
		if err := c.Set(ctx, f.Key(), "e1", 0).Err(); err != nil {
			t.Fatal(err)
		}
		f.SetEpoch("e1")
		return st.WithFence(f), c
	}
	runStoreConformance(t, func(t *testing.T) Store {
		st, _ := fenced(t)
		return st
	})
	t.Run("emptied store refuses", func(t *testing.T) {
		st, c := fenced(t)
		if err := c.Del(ctx, st.KeyPrefix()+"epoch").Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := st.GetVehicles(ctx, []string{"v1"}); !errors.Is(err, storeguard.ErrStoreLost) {
			t.Errorf("read from an emptied store: %v, want ErrStoreLost", err)
		}
		if err := st.PutVehicles(ctx, []VehicleState{{Vehicle: "v1"}}); !errors.Is(err, storeguard.ErrStoreLost) {
			t.Errorf("write into an emptied store: %v, want ErrStoreLost", err)
		}
		if keys, err := c.Keys(ctx, st.KeyPrefix()+"*").Result(); err != nil || len(keys) != 0 {
			t.Errorf("the refused write left keys %v (%v)", keys, err)
		}
	})
}

var t0 = time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)

func occurrence(vehicle, kind, cause string, at time.Time) Alert {
	return Alert{
		Vehicle: vehicle, Kind: kind, Severity: SeverityWarning, State: AlertOpen,
		IncidentKey: IncidentKey(kind, vehicle), CauseID: cause, Sources: []string{SourceDevice},
		FirstTime: at, LastTime: at, CreateTime: at, Occurrences: 1,
	}
}

// runStoreConformance is the one suite every Store implementation must pass.
func runStoreConformance(t *testing.T, newStore func(t *testing.T) Store) {
	ctx := context.Background()
	const cooldown = 30 * time.Minute

	t.Run("RaiseDedupMerge", func(t *testing.T) {
		st := newStore(t)
		a, created, err := st.RaiseAlert(ctx, occurrence("v1", KindTow, "c1", t0), cooldown)
		if err != nil || !created || a.ID != 1 {
			t.Fatalf("first raise: got id %d created %v err %v, want id 1 created", a.ID, created, err)
		}
		// The same cause again (a redelivery) changes nothing.
		again, created, err := st.RaiseAlert(ctx, occurrence("v1", KindTow, "c1", t0), cooldown)
		if err != nil || created || again.ID != 1 || again.Occurrences != 1 {
			t.Fatalf("repeat cause: got id %d created %v occ %d err %v, want id 1, not created, 1 occurrence", again.ID, created, again.Occurrences, err)
		}
		// Another source of the same incident within the cool-down merges.
		o := occurrence("v1", KindTow, "c2", t0.Add(time.Minute))
		o.Sources, o.Severity = []string{SourceDispatch}, SeverityCritical
		m, created, err := st.RaiseAlert(ctx, o, cooldown)
		if err != nil || created || m.ID != 1 {
			t.Fatalf("merge: got id %d created %v err %v, want merged into 1", m.ID, created, err)
		}
		if m.Occurrences != 2 || !slices.Equal(m.Sources, []string{SourceDevice, SourceDispatch}) ||
			m.Severity != SeverityCritical || !m.LastTime.Equal(t0.Add(time.Minute)) || !m.FirstTime.Equal(t0) {
			t.Fatalf("merged alert: got occ %d sources %v severity %v first %v last %v", m.Occurrences, m.Sources, m.Severity, m.FirstTime, m.LastTime)
		}
		got, err := st.GetAlert(ctx, 1)
		if err != nil || got.Occurrences != 2 {
			t.Fatalf("GetAlert after merge: got occ %d err %v, want 2", got.Occurrences, err)
		}
		// Past the cool-down: a new incident.
		n, created, err := st.RaiseAlert(ctx, occurrence("v1", KindTow, "c3", t0.Add(time.Minute+cooldown+time.Second)), cooldown)
		if err != nil || !created || n.ID != 2 {
			t.Fatalf("after cool-down: got id %d created %v err %v, want new alert 2", n.ID, created, err)
		}
		// Resolved: the next occurrence, even at once, is a new alert.
		if _, err := st.SetAlertState(ctx, 2, AlertResolved, "ann", "recovered", t0); err != nil {
			t.Fatal(err)
		}
		r, created, err := st.RaiseAlert(ctx, occurrence("v1", KindTow, "c4", n.LastTime), cooldown)
		if err != nil || !created || r.ID != 3 {
			t.Fatalf("after resolve: got id %d created %v err %v, want new alert 3", r.ID, created, err)
		}
		// A different vehicle is a different incident.
		o2, created, err := st.RaiseAlert(ctx, occurrence("v2", KindTow, "c5", t0), cooldown)
		if err != nil || !created || o2.ID != 4 {
			t.Fatalf("other vehicle: got id %d created %v err %v, want 4", o2.ID, created, err)
		}
		if last, err := st.LastAlertID(ctx); err != nil || last != 4 {
			t.Fatalf("LastAlertID: got %d, %v; want 4", last, err)
		}
	})

	t.Run("GetAlertNotFound", func(t *testing.T) {
		st := newStore(t)
		if _, err := st.GetAlert(ctx, 7); !errors.Is(err, ErrNotFound) {
			t.Fatalf("got %v, want ErrNotFound", err)
		}
		if last, err := st.LastAlertID(ctx); err != nil || last != 0 {
			t.Fatalf("LastAlertID on empty: got %d, %v; want 0", last, err)
		}
	})

	t.Run("ListAlertsFilters", func(t *testing.T) {
		st := newStore(t)
		kinds := []string{KindTow, "panic", KindOffline}
		for i := range 12 {
			o := occurrence("v"+strconv.Itoa(i%2), kinds[i%3], "c"+strconv.Itoa(i), t0.Add(time.Duration(i)*time.Hour))
			o.IncidentKey += ":" + strconv.Itoa(i) // all distinct incidents
			o.Severity = Severity(1 + i%3)
			if _, _, err := st.RaiseAlert(ctx, o, cooldown); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := st.SetAlertState(ctx, 5, AlertAcknowledged, "bob", "", t0); err != nil {
			t.Fatal(err)
		}
		ids := func(as []Alert) []uint64 {
			var out []uint64
			for _, a := range as {
				out = append(out, a.ID)
			}
			return out
		}
		for _, tc := range []struct {
			name string
			f    AlertFilter
			want []uint64
		}{
			{"newest first", AlertFilter{Limit: 3}, []uint64{12, 11, 10}},
			{"before id", AlertFilter{BeforeID: 4}, []uint64{3, 2, 1}},
			{"ascending after", AlertFilter{Ascending: true, AfterID: 9}, []uint64{10, 11, 12}},
			{"ascending limit", AlertFilter{Ascending: true, Limit: 2}, []uint64{1, 2}},
			{"vehicle", AlertFilter{Vehicle: "v1", Limit: 3}, []uint64{12, 10, 8}},
			{"kind", AlertFilter{Kind: "panic", Ascending: true}, []uint64{2, 5, 8, 11}},
			{"min severity", AlertFilter{MinSeverity: SeverityCritical, Ascending: true}, []uint64{3, 6, 9, 12}},
			{"state", AlertFilter{State: AlertAcknowledged}, []uint64{5}},
			{"time range", AlertFilter{From: t0.Add(2 * time.Hour), To: t0.Add(4 * time.Hour), Ascending: true}, []uint64{3, 4}},
			{"nothing", AlertFilter{Vehicle: "nope"}, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, err := st.ListAlerts(ctx, tc.f)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(ids(got), tc.want) {
					t.Fatalf("got ids %v, want %v", ids(got), tc.want)
				}
			})
		}
	})

	t.Run("AlertStates", func(t *testing.T) {
		st := newStore(t)
		if _, _, err := st.RaiseAlert(ctx, occurrence("v1", "panic", "c1", t0), cooldown); err != nil {
			t.Fatal(err)
		}
		a, err := st.SetAlertState(ctx, 1, AlertAcknowledged, "ann", "calling driver", t0.Add(time.Minute))
		if err != nil || a.State != AlertAcknowledged || a.AckBy != "ann" || a.AckNote != "calling driver" || !a.AckTime.Equal(t0.Add(time.Minute)) {
			t.Fatalf("acknowledge: got %+v, %v", a, err)
		}
		if _, err := st.SetAlertState(ctx, 1, AlertAcknowledged, "bob", "", t0); !errors.Is(err, ErrBadTransition) {
			t.Fatalf("acknowledge twice: got %v, want ErrBadTransition", err)
		}
		a, err = st.SetAlertState(ctx, 1, AlertResolved, "bob", "false alarm", t0.Add(2*time.Minute))
		if err != nil || a.State != AlertResolved || a.ResolvedBy != "bob" || a.ResolveNote != "false alarm" || a.AckBy != "ann" {
			t.Fatalf("resolve: got %+v, %v", a, err)
		}
		if _, err := st.SetAlertState(ctx, 1, AlertResolved, "bob", "", t0); !errors.Is(err, ErrBadTransition) {
			t.Fatalf("resolve twice: got %v, want ErrBadTransition", err)
		}
		if _, err := st.SetAlertState(ctx, 99, AlertResolved, "bob", "", t0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown alert: got %v, want ErrNotFound", err)
		}
		got, _ := st.GetAlert(ctx, 1)
		if got.State != AlertResolved {
			t.Fatalf("stored state: got %v, want resolved", got.State)
		}
	})

	t.Run("ResolveIncident", func(t *testing.T) {
		st := newStore(t)
		if _, found, err := st.ResolveIncident(ctx, IncidentKey(KindOffline, "v1"), "system", "", t0); err != nil || found {
			t.Fatalf("no incident: got found %v err %v, want not found", found, err)
		}
		if _, _, err := st.RaiseAlert(ctx, occurrence("v1", KindOffline, "c1", t0), cooldown); err != nil {
			t.Fatal(err)
		}
		a, found, err := st.ResolveIncident(ctx, IncidentKey(KindOffline, "v1"), "system", "back online", t0)
		if err != nil || !found || a.State != AlertResolved || a.ResolvedBy != "system" {
			t.Fatalf("resolve incident: got %+v found %v err %v", a, found, err)
		}
		if _, found, err := st.ResolveIncident(ctx, IncidentKey(KindOffline, "v1"), "system", "", t0); err != nil || found {
			t.Fatalf("resolve again: got found %v err %v, want not found", found, err)
		}
	})

	t.Run("ConcurrentRaisesDenseIDs", func(t *testing.T) {
		st := newStore(t)
		const n = 40
		var wg sync.WaitGroup
		errs := make(chan error, 2*n)
		for i := range n {
			wg.Add(2)
			go func() { // distinct incidents
				defer wg.Done()
				_, _, err := st.RaiseAlert(ctx, occurrence("v"+strconv.Itoa(i), "panic", "d"+strconv.Itoa(i), t0), cooldown)
				errs <- err
			}()
			go func() { // one shared incident
				defer wg.Done()
				_, _, err := st.RaiseAlert(ctx, occurrence("shared", KindTow, "s"+strconv.Itoa(i), t0), cooldown)
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		all, err := st.ListAlerts(ctx, AlertFilter{Ascending: true, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != n+1 {
			t.Fatalf("got %d alerts, want %d (%d distinct + 1 merged)", len(all), n+1, n)
		}
		for i, a := range all {
			if a.ID != uint64(i+1) {
				t.Fatalf("alert %d has id %d: ids not dense", i, a.ID)
			}
			if a.Vehicle == "shared" && a.Occurrences != n {
				t.Fatalf("shared incident: got %d occurrences, want %d", a.Occurrences, n)
			}
		}
	})

	t.Run("Vehicles", func(t *testing.T) {
		st := newStore(t)
		if _, ok, err := st.GetVehicle(ctx, "v1"); err != nil || ok {
			t.Fatalf("missing vehicle: got ok %v err %v", ok, err)
		}
		v := VehicleState{Vehicle: "v1", LastDeviceTime: t0, LastReceived: t0.Add(time.Second), SpeedKmh: 42,
			HasFix: true, FixLat: 52.5, FixLon: 13.4, FixTime: t0, IgnitionKnown: true, IgnitionOffSince: t0,
			ParkSet: true, ParkLat: 52.5, ParkLon: 13.4, ParkCells: []int64{5, 9}, LastGSM: 3,
			RecentFixes: []FixSample{{Time: t0, SpeedKmh: 3, Good: true}},
			Tow:         Incident{Open: true, Key: "tow:v1:x", Kind: KindTow, Start: t0, Opened: t0, Evidence: []string{EvFixes}}}
		if err := st.PutVehicle(ctx, v); err != nil {
			t.Fatal(err)
		}
		got, ok, err := st.GetVehicle(ctx, "v1")
		if err != nil || !ok || !reflect.DeepEqual(got, v) {
			t.Fatalf("round trip: got %+v ok %v err %v, want %+v", got, ok, err, v)
		}
		v2, v3 := v, v
		v2.Vehicle, v3.Vehicle, v3.SpeedKmh = "v2", "v3", 7
		if err := st.PutVehicles(ctx, []VehicleState{v2, v3}); err != nil {
			t.Fatal(err)
		}
		many, err := st.GetVehicles(ctx, []string{"v1", "v3", "nope", "v2"})
		if err != nil || len(many) != 3 || !reflect.DeepEqual(many["v3"], v3) || !reflect.DeepEqual(many["v1"], v) {
			t.Fatalf("GetVehicles: got %+v, %v; want v1, v2, v3", many, err)
		}
		if none, err := st.GetVehicles(ctx, nil); err != nil || len(none) != 0 {
			t.Fatalf("GetVehicles(nil): got %v, %v", none, err)
		}
	})

	t.Run("Commands", func(t *testing.T) {
		st := newStore(t)
		mk := func(v string, k CommandKind) Command {
			return Command{Vehicle: v, Kind: k, State: CommandQueued, IssuedBy: "ann", IssueTime: t0,
				ExpireTime: t0.Add(time.Hour), UpdateTime: t0, History: []Transition{{State: CommandQueued, Time: t0, Detail: "issued"}}}
		}
		a, err := st.CreateCommand(ctx, mk("v1", CommandImmobilize))
		if err != nil || a.ID == "" || a.Version != 1 {
			t.Fatalf("create: got %+v, %v", a, err)
		}
		b, _ := st.CreateCommand(ctx, mk("v1", CommandLocateNow))
		c, _ := st.CreateCommand(ctx, mk("v2", CommandResume))
		if a.ID == b.ID || b.ID == c.ID {
			t.Fatalf("ids not unique: %s %s %s", a.ID, b.ID, c.ID)
		}
		got, err := st.GetCommand(ctx, a.ID)
		if err != nil || !reflect.DeepEqual(got, a) {
			t.Fatalf("get: got %+v, %v; want %+v", got, err, a)
		}
		if _, err := st.GetCommand(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown: got %v, want ErrNotFound", err)
		}
		a.set(CommandSent, "", t0.Add(time.Second))
		a2, err := st.UpdateCommand(ctx, a)
		if err != nil || a2.Version != 2 || a2.State != CommandSent {
			t.Fatalf("update: got %+v, %v", a2, err)
		}
		if _, err := st.UpdateCommand(ctx, a); !errors.Is(err, ErrConflict) {
			t.Fatalf("stale update: got %v, want ErrConflict", err)
		}
		a2.set(CommandExecuted, "done", t0.Add(2*time.Second))
		if _, err := st.UpdateCommand(ctx, a2); err != nil {
			t.Fatal(err)
		}
		cids := func(cs []Command) []string {
			var out []string
			for _, c := range cs {
				out = append(out, c.ID)
			}
			return out
		}
		for _, tc := range []struct {
			name string
			f    CommandFilter
			want []string
		}{
			{"all newest first", CommandFilter{}, []string{c.ID, b.ID, a.ID}},
			{"vehicle", CommandFilter{Vehicle: "v1"}, []string{b.ID, a.ID}},
			{"open of vehicle", CommandFilter{Vehicle: "v1", OpenOnly: true}, []string{b.ID}},
			{"open", CommandFilter{OpenOnly: true}, []string{c.ID, b.ID}},
			{"state", CommandFilter{State: CommandExecuted}, []string{a.ID}},
			{"limit", CommandFilter{Limit: 1}, []string{c.ID}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, err := st.ListCommands(ctx, tc.f)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(cids(got), tc.want) {
					t.Fatalf("got %v, want %v", cids(got), tc.want)
				}
			})
		}
		open, err := st.WithOpenCommands(ctx, []string{"v1", "v2", "v3"})
		if err != nil || !reflect.DeepEqual(open, map[string]bool{"v1": true, "v2": true}) {
			t.Fatalf("WithOpenCommands: got %v, %v; want v1 and v2", open, err)
		}
		b.set(CommandExpired, "", t0)
		if _, err := st.UpdateCommand(ctx, b); err != nil {
			t.Fatal(err)
		}
		open, err = st.WithOpenCommands(ctx, []string{"v1", "v2", "v3"})
		if err != nil || !reflect.DeepEqual(open, map[string]bool{"v2": true}) {
			t.Fatalf("WithOpenCommands after v1's last one closed: got %v, %v; want v2", open, err)
		}
		final, _ := st.GetCommand(ctx, a.ID)
		if len(final.History) != 3 || final.History[2].State != CommandExecuted {
			t.Fatalf("history: got %+v, want queued, sent, executed", final.History)
		}
	})
}
