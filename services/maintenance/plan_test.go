package maintenance

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestEvaluate(t *testing.T) {
	base := Baseline{OdometerKm: 10000, HasOdometer: true, EngineHours: 500, HasHours: true, Time: t0}
	day := 24 * time.Hour
	u := func(km, h float64, at time.Time) Usage {
		return Usage{OdometerKm: km, HasOdometer: true, EngineHours: h, HasHours: true, Time: at}
	}
	tests := []struct {
		name  string
		plan  Plan
		base  Baseline
		use   Usage
		want  PlanState
		check func(t *testing.T, s Status)
	}{
		{name: "distance ok", plan: Plan{EveryKm: 15000}, use: u(20000, 500, t0), want: StateOK,
			check: func(t *testing.T, s Status) {
				if s.RemainingKm != 5000 || s.DueKm != 25000 {
					t.Errorf("remaining/due km: got %v/%v, want 5000/25000", s.RemainingKm, s.DueKm)
				}
			}},
		{name: "distance due soon at the default 10% margin", plan: Plan{EveryKm: 15000}, use: u(23500, 500, t0), want: StateDueSoon},
		{name: "distance just outside the margin", plan: Plan{EveryKm: 15000}, use: u(23499, 500, t0), want: StateOK},
		{name: "distance overdue", plan: Plan{EveryKm: 15000}, use: u(25000, 500, t0), want: StateOverdue},
		{name: "explicit distance margin", plan: Plan{EveryKm: 15000, SoonKm: 3000}, use: u(22500, 500, t0), want: StateDueSoon},
		{name: "hours ok", plan: Plan{EveryHours: 250}, use: u(10000, 700, t0), want: StateOK},
		{name: "hours due soon", plan: Plan{EveryHours: 250}, use: u(10000, 726, t0), want: StateDueSoon},
		{name: "hours overdue", plan: Plan{EveryHours: 250}, use: u(10000, 751, t0), want: StateOverdue},
		{name: "calendar ok", plan: Plan{EveryDays: 365}, use: u(10000, 500, t0.Add(300*day)), want: StateOK},
		{name: "calendar due soon", plan: Plan{EveryDays: 365}, use: u(10000, 500, t0.Add(330*day)), want: StateDueSoon},
		{name: "calendar overdue", plan: Plan{EveryDays: 365}, use: u(10000, 500, t0.Add(366*day)), want: StateOverdue,
			check: func(t *testing.T, s Status) {
				if !s.DueTime.Equal(t0.Add(365 * day)) {
					t.Errorf("due time: got %v, want %v", s.DueTime, t0.Add(365*day))
				}
			}},
		{name: "whichever first: km fine, calendar overdue", plan: Plan{EveryKm: 15000, EveryDays: 180}, use: u(11000, 500, t0.Add(200*day)), want: StateOverdue},
		{name: "whichever first: calendar fine, km due soon", plan: Plan{EveryKm: 15000, EveryDays: 180}, use: u(24000, 500, t0.Add(10*day)), want: StateDueSoon},
		{name: "whichever first: hours overdue", plan: Plan{EveryKm: 15000, EveryHours: 250, EveryDays: 365}, use: u(11000, 760, t0.Add(10*day)), want: StateOverdue},
		{name: "counter not reported is not judged", plan: Plan{EveryHours: 250}, use: Usage{OdometerKm: 99999, HasOdometer: true, Time: t0}, want: StateUnknown},
		{name: "hours baseline missing", plan: Plan{EveryHours: 250}, base: Baseline{OdometerKm: 1, HasOdometer: true, Time: t0}, use: u(10000, 9999, t0), want: StateUnknown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := base
			if tc.base != (Baseline{}) {
				b = tc.base
			}
			s := Evaluate(tc.plan, "V1", b, tc.use)
			if s.State != tc.want {
				t.Fatalf("state: got %v, want %v (%+v)", s.State, tc.want, s)
			}
			if tc.check != nil {
				tc.check(t, s)
			}
		})
	}
}

func TestPlanValidate(t *testing.T) {
	tests := []struct {
		name string
		plan Plan
		want error
	}{
		{"ok", Plan{VehicleID: "V1", EveryKm: 1}, nil},
		{"no target", Plan{EveryKm: 1}, ErrPlanTarget},
		{"two targets", Plan{VehicleID: "V1", GroupID: "G", EveryKm: 1}, ErrPlanTarget},
		{"no interval", Plan{VehicleID: "V1"}, ErrNoInterval},
		{"negative", Plan{VehicleID: "V1", EveryKm: -5}, ErrBadInterval},
		{"bad vehicle", Plan{VehicleID: "V.1", EveryKm: 1}, ErrBadID},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.plan.Validate(); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestPlanEventsOncePerThreshold drives a distance plan through due soon and overdue,
// services the vehicle, and drives it into the next interval: each threshold raises its
// event once per interval.
func TestPlanEventsOncePerThreshold(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t, DefaultConfig())
	if _, err := s.CreatePlan(ctx, Plan{ID: "oil", Name: "Oil", VehicleID: "V1", EveryKm: 1000, Created: t0}); err != nil {
		t.Fatal(err)
	}
	// Ten hours between records: the odometer rule refuses growth faster than a vehicle.
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * 10 * time.Hour) }
	steps := []struct {
		km   float64
		want []string
	}{
		{0, nil}, // baseline: the odometer when the vehicle is first seen under the plan
		{500, nil},
		{905, []string{EventPlanDueSoon}},
		{950, nil},
		{990, nil},
		{1001, []string{EventPlanOverdue}},
		{1100, nil},
		{1500, nil},
	}
	var ids []string
	for i, st := range steps {
		evs := feed(t, s, rec("V1", at(i), odo(st.km)))
		if got := kinds(evs); !reflect.DeepEqual(got, st.want) && !(len(got) == 0 && len(st.want) == 0) {
			t.Fatalf("at %v km: got events %v, want %v", st.km, got, st.want)
		}
		for _, e := range evs {
			ids = append(ids, e.ID)
		}
	}
	// The service resets the interval: 1500 km + 1000 km.
	e, status, err := s.RecordService(ctx, ServiceEntry{VehicleID: "V1", PlanID: "oil", Time: at(10), Cost: 90})
	if err != nil {
		t.Fatal(err)
	}
	if !e.HasOdometer || e.OdometerKm != 1500 {
		t.Fatalf("service odometer default: got %v (%v), want the last known 1500 km", e.OdometerKm, e.HasOdometer)
	}
	if status == nil || status.State != StateOK || status.RemainingKm != 1000 {
		t.Fatalf("status after service: got %+v, want ok with 1000 km left", status)
	}
	steps = []struct {
		km   float64
		want []string
	}{
		{1600, nil},
		{2390, nil},
		{2420, []string{EventPlanDueSoon}},
		{2430, nil},
		{2600, []string{EventPlanOverdue}},
		{2700, nil},
	}
	for i, st := range steps {
		evs := feed(t, s, rec("V1", at(20+i), odo(st.km)))
		if got := kinds(evs); !reflect.DeepEqual(got, st.want) && !(len(got) == 0 && len(st.want) == 0) {
			t.Fatalf("after service, at %v km: got events %v, want %v", st.km, got, st.want)
		}
		for _, e := range evs {
			ids = append(ids, e.ID)
		}
	}
	want := []string{
		"maintenance.plan_due_soon.V1.oil.0", "maintenance.plan_overdue.V1.oil.0",
		"maintenance.plan_due_soon.V1.oil.1", "maintenance.plan_overdue.V1.oil.1",
	}
	if !reflect.DeepEqual(ids, want) {
		t.Fatalf("event ids: got %v, want %v", ids, want)
	}
}

func TestPlanJumpStraightToOverdue(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t, DefaultConfig())
	if _, err := s.CreatePlan(ctx, Plan{ID: "svc", VehicleID: "V1", EveryHours: 100, Created: t0}); err != nil {
		t.Fatal(err)
	}
	feed(t, s, rec("V1", t0, hours(1000)))
	// A tracker back from a long outage: the counter passed both thresholds at once.
	evs := feed(t, s, rec("V1", t0.Add(200*time.Hour), hours(1150)))
	if got := kinds(evs); !reflect.DeepEqual(got, []string{EventPlanOverdue}) {
		t.Fatalf("got %v, want only plan_overdue", got)
	}
}

func TestPlanCalendarAndGroup(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t, DefaultConfig())
	if err := s.SetGroup(ctx, Group{ID: "vans", Vehicles: []string{"V2", "V1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreatePlan(ctx, Plan{ID: "inspection", GroupID: "vans", EveryDays: 30, Created: t0}); err != nil {
		t.Fatal(err)
	}
	day := 24 * time.Hour
	evs := feed(t, s, rec("V1", t0.Add(28*day)), rec("V2", t0.Add(10*day)), rec("V3", t0.Add(40*day)))
	if len(evs) != 1 || evs[0].Kind != EventPlanDueSoon || evs[0].VehicleID != "V1" {
		t.Fatalf("got %+v, want one plan_due_soon for V1 (V3 is not in the group)", evs)
	}
	evs = feed(t, s, rec("V1", t0.Add(31*day)), rec("V2", t0.Add(31*day)))
	if got := kinds(evs); !reflect.DeepEqual(got, []string{EventPlanOverdue, EventPlanOverdue}) {
		t.Fatalf("got %v, want overdue for V1 and V2", got)
	}
	plans, err := s.ListPlans(ctx, "V2", "")
	if err != nil || len(plans) != 1 || plans[0].ID != "inspection" {
		t.Fatalf("ListPlans for V2: got %+v, %v", plans, err)
	}
	if plans, _ := s.ListPlans(ctx, "V3", ""); len(plans) != 0 {
		t.Fatalf("ListPlans for V3: got %d plans, want 0", len(plans))
	}
}

func TestListDueAndHealth(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t, DefaultConfig())
	s.now = func() time.Time { return t0.Add(11 * time.Hour) }
	for _, p := range []Plan{
		{ID: "oil", VehicleID: "V1", EveryKm: 1000, Created: t0},
		{ID: "oil", VehicleID: "V1", EveryKm: 1000, Created: t0}, // replaced, not doubled
		{ID: "oil2", VehicleID: "V2", EveryKm: 1000, Created: t0},
		{ID: "oil3", VehicleID: "V3", EveryKm: 1000, Created: t0},
	} {
		if _, err := s.CreatePlan(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	feed(t, s, rec("V1", t0, odo(0)), rec("V2", t0, odo(0)), rec("V3", t0, odo(0)))
	feed(t, s, rec("V1", t0.Add(10*time.Hour), odo(950)), rec("V2", t0.Add(10*time.Hour), odo(1200)), rec("V3", t0.Add(10*time.Hour), odo(300)))
	due, err := s.ListDue(ctx, DueQuery{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range due {
		got = append(got, d.VehicleID+"/"+d.State.String())
	}
	if want := []string{"V2/overdue", "V1/due_soon"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("ListDue: got %v, want %v (most urgent first)", got, want)
	}
	due, _ = s.ListDue(ctx, DueQuery{HorizonKm: 800})
	if len(due) != 3 || due[2].VehicleID != "V3" {
		t.Fatalf("ListDue with a 800 km horizon: got %d entries, want V3 (700 km left) last", len(due))
	}
	due, _ = s.ListDue(ctx, DueQuery{States: []PlanState{StateOK}})
	if len(due) != 1 || due[0].VehicleID != "V3" {
		t.Fatalf("ListDue states=ok: got %+v, want V3", due)
	}
	h, err := s.VehicleHealth(ctx, "V2")
	if err != nil || len(h.Plans) != 1 || h.Plans[0].State != StateOverdue || h.State.OdometerM != 1200000 {
		t.Fatalf("VehicleHealth: got %+v, %v", h, err)
	}
	if _, err := s.VehicleHealth(ctx, "V9"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("VehicleHealth of an unknown vehicle: got %v, want ErrNotFound", err)
	}
}

// TestRedeliveryRaisesSameEvents applies a batch, "fails" before saving the states, and
// applies it again: the events repeat with the same ids, so the bus deduplicates them.
func TestRedeliveryRaisesSameEvents(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t, DefaultConfig())
	if _, err := s.CreatePlan(ctx, Plan{ID: "oil", VehicleID: "V1", EveryKm: 100, Created: t0}); err != nil {
		t.Fatal(err)
	}
	feed(t, s, rec("V1", t0, odo(0)))
	batch := map[string][]input{"V1": {{rec: rec("V1", t0.Add(time.Hour), odo(95), dtcs("P0301"))}}}
	first, _, err := s.apply(ctx, batch) // not committed: as if the process died
	if err != nil {
		t.Fatal(err)
	}
	batch = map[string][]input{"V1": {{rec: rec("V1", t0.Add(time.Hour), odo(95), dtcs("P0301"))}}}
	second, commit, err := s.apply(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	if err := commit(ctx); err != nil {
		t.Fatal(err)
	}
	if len(first) != 2 || !reflect.DeepEqual(eventIDs(first), eventIDs(second)) {
		t.Fatalf("redelivery: got %v then %v, want the same two ids", eventIDs(first), eventIDs(second))
	}
	// Delivered once more after the commit: the record is not newer, nothing happens.
	if again := feed(t, s, rec("V1", t0.Add(time.Hour), odo(95), dtcs("P0301"))); len(again) != 0 {
		t.Fatalf("replay after commit: got %v, want no events", kinds(again))
	}
	if n := s.Rejects().Count(RejectLateRecord); n != 1 {
		t.Fatalf("late records counted: got %v, want 1", n)
	}
}

func eventIDs(evs []Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.ID)
	}
	return out
}

func TestRecordServiceChecks(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t, DefaultConfig())
	if err := s.SetGroup(ctx, Group{ID: "vans", Vehicles: []string{"V1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreatePlan(ctx, Plan{ID: "vans-oil", GroupID: "vans", EveryKm: 1000}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		e    ServiceEntry
		want error
	}{
		{"group member", ServiceEntry{VehicleID: "V1", PlanID: "vans-oil"}, nil},
		{"not a member", ServiceEntry{VehicleID: "V2", PlanID: "vans-oil"}, ErrInvalid},
		{"unknown plan", ServiceEntry{VehicleID: "V1", PlanID: "nope"}, ErrNotFound},
		{"no plan", ServiceEntry{VehicleID: "V2", Notes: "wipers", Items: []ServiceItem{{Name: "wipers", Cost: 30}}}, nil},
		{"bad vehicle", ServiceEntry{VehicleID: "V 2"}, ErrInvalid},
		{"negative item cost", ServiceEntry{VehicleID: "V2", Items: []ServiceItem{{Name: "x", Cost: -3}}}, ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := s.RecordService(ctx, tc.e)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	book, err := s.ListServiceLog(ctx, "V2", "")
	if err != nil || len(book) != 1 || book[0].Cost != 30 {
		t.Fatalf("service book of V2: got %+v, %v; want one entry costing the sum of its items", book, err)
	}
}

// TestCalendarCheck: a vehicle that stops sending still gets its calendar events, once,
// from the periodic check; a record afterwards does not repeat them.
func TestCalendarCheck(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t, DefaultConfig())
	day := 24 * time.Hour
	if _, err := s.CreatePlan(ctx, Plan{ID: "insp", VehicleID: "V1", EveryDays: 30, Created: t0}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreatePlan(ctx, Plan{ID: "insp2", VehicleID: "V2", EveryDays: 30, Created: t0}); err != nil {
		t.Fatal(err)
	}
	by := map[string][]input{
		"V1": {{rec: rec("V1", t0.Add(day)), part: 3, hasPart: true}},
		"V2": {{rec: rec("V2", t0.Add(day)), part: 5, hasPart: true}},
	}
	if _, commit, err := s.apply(ctx, by); err != nil || commit(ctx) != nil {
		t.Fatalf("apply: %v", err)
	}
	s.now = func() time.Time { return t0.Add(28 * day) }
	evs, err := s.checkCalendars(ctx, []int{3})
	if err != nil || len(evs) != 1 || evs[0].Kind != EventPlanDueSoon || evs[0].VehicleID != "V1" {
		t.Fatalf("check at day 28 on partition 3: got %+v, %v; want one plan_due_soon for V1 (V2 is another partition's)", evs, err)
	}
	if evs, _ := s.checkCalendars(ctx, []int{3}); len(evs) != 0 {
		t.Fatalf("second check: got %v, want nothing (announced once)", kinds(evs))
	}
	s.now = func() time.Time { return t0.Add(31 * day) }
	evs, _ = s.checkCalendars(ctx, nil)
	if got := kinds(evs); !reflect.DeepEqual(got, []string{EventPlanOverdue, EventPlanOverdue}) {
		t.Fatalf("check at day 31: got %v, want overdue for V1 and V2", got)
	}
	if evs := feed(t, s, rec("V1", t0.Add(32*day))); len(evs) != 0 {
		t.Fatalf("record after the check: got %v, want no repeat", kinds(evs))
	}
}
