package maintenance

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/grpcserver"
	"github.com/fleetwire/fleetwire/pkg/natstest"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// eventLog collects the events published on the bus.
type eventLog struct {
	mu  sync.Mutex
	evs []*fleetv1.Event
}

func (l *eventLog) add(m *nats.Msg) {
	var e fleetv1.Event
	if proto.Unmarshal(m.Data, &e) != nil {
		return
	}
	l.mu.Lock()
	l.evs = append(l.evs, &e)
	l.mu.Unlock()
}

func (l *eventLog) find(kind, vehicle string) *fleetv1.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.evs {
		if e.GetKind() == kind && e.GetVehicleId() == vehicle {
			return e
		}
	}
	return nil
}

func (l *eventLog) waitFor(t *testing.T, kind, vehicle string) *fleetv1.Event {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if e := l.find(kind, vehicle); e != nil {
			return e
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %s event for %s within 30 s", kind, vehicle)
	return nil
}

func publishRecords(t *testing.T, ctx context.Context, b *bus.Bus, kind string, recs []telemetry.Record) {
	t.Helper()
	for i := 0; i < len(recs); i += 10 {
		chunk := recs[i:min(i+10, len(recs))]
		data, err := wire.EncodeBatch(chunk[0].VehicleID, chunk[len(chunk)-1].DeviceTime, chunk)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Publish(ctx, bus.UpSubject(chunk[0].VehicleID, kind), data); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
}

// TestBusRecordsInEventsOut runs the service on an embedded NATS server with its gRPC
// API on a loopback port: records published as a tracker would turn into events on the
// event stream and into answers over gRPC; a restarted consumer resumes where it stopped.
func TestBusRecordsInEventsOut(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := testLogger()
	b := natstest.Open(t, natstest.Options{Log: log})
	var events eventLog
	sub, err := b.Conn().Subscribe(bus.EventSourceFilter(Source), events.add)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	s, err := New(DefaultConfig(), b, NewMemoryStore(), log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	gs := grpcserver.New(log, nil)
	s.Register(gs.GRPC)
	if err := gs.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ctx, time.Second)
	conn, err := grpc.NewClient(gs.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	api := fleetv1.NewMaintenanceServiceClient(conn)

	runCtx, stopRun := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- s.Run(runCtx) }()

	// Set up over gRPC: the tank and a plan due every 100 km.
	prof, err := api.SetFuelProfile(ctx, &fleetv1.SetFuelProfileRequest{Profile: &fleetv1.FuelProfile{VehicleId: "V1", TankCapacityL: 200, SensorStepL: 0.5, SensorLagS: 30}})
	if err != nil || prof.GetProfile().GetSensorStepL() != 0.5 || prof.GetProfile().GetSensorLagS() != 30 {
		t.Fatalf("SetFuelProfile: got %v, %v; want step 0.5 L and lag 30 s kept", prof, err)
	}
	plan, err := api.CreatePlan(ctx, &fleetv1.CreatePlanRequest{Plan: &fleetv1.MaintenancePlan{
		Name: "Oil", VehicleId: "V1", EveryKm: 100, CreateTime: timestamppb.New(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.CreatePlan(ctx, &fleetv1.CreatePlanRequest{Plan: &fleetv1.MaintenancePlan{Name: "nothing"}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("CreatePlan without target or interval: got %v, want InvalidArgument", err)
	}

	// A day of records in litres (the tracker calibrates), then diagnostics.
	day := fuelDay("V1")
	for i := range day {
		day[i].FuelLitres = tank.Litres(day[i].IO["fuel_raw"])
		day[i].Set(telemetry.HasFuelLitres)
		day[i].IO = nil
	}
	publishRecords(t, ctx, b, bus.KindTelemetry, day)
	last := day[len(day)-1].DeviceTime
	publishRecords(t, ctx, b, bus.KindDiag, []telemetry.Record{rec("V1", last.Add(time.Minute), dtcs("P0217"), mil(true))})

	refuel := events.waitFor(t, EventRefuel, "V1")
	drain := events.waitFor(t, EventFuelDrain, "V1")
	events.waitFor(t, EventPlanDueSoon, "V1")
	events.waitFor(t, EventDTCNew, "V1")
	events.waitFor(t, EventMILOn, "V1")
	for _, e := range []*fleetv1.Event{refuel, drain} {
		if e.GetSource() != Source || e.GetAttributes()["litres"] == "" || e.GetPosition() == nil || e.GetEventId() == "" {
			t.Fatalf("fuel event: got %v, want source, litres and position", e)
		}
	}

	// The answers over gRPC.
	hc := healthpb.NewHealthClient(conn)
	if r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "fleet.v1.MaintenanceService"}); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: got %v, %v", r, err)
	}
	h, err := api.GetVehicleHealth(ctx, &fleetv1.GetVehicleHealthRequest{VehicleId: "V1"})
	if err != nil {
		t.Fatal(err)
	}
	if got := h.GetHealth().GetActiveFaultCodes(); len(got) != 1 || got[0] != "P0217" || !h.GetHealth().GetMil() {
		t.Fatalf("health fault codes: got %v (mil %v), want [P0217] with MIL on", got, h.GetHealth().GetMil())
	}
	if f := h.GetHealth().GetFaults(); len(f) != 1 || f[0].GetSeverity() != fleetv1.FaultSeverity_FAULT_SEVERITY_CRITICAL {
		t.Fatalf("health fault detail: got %v", f)
	}
	if p := h.GetHealth().GetPlans(); len(p) != 1 || p[0].GetPlanId() != plan.GetPlan().GetPlanId() || p[0].GetState() == fleetv1.PlanState_PLAN_STATE_OK {
		t.Fatalf("health plans: got %v, want the oil plan due", p)
	}
	due, err := api.ListDue(ctx, &fleetv1.ListDueRequest{})
	if err != nil || len(due.GetItems()) != 1 {
		t.Fatalf("ListDue: got %v, %v", due, err)
	}
	rep, err := api.GetFuelReport(ctx, &fleetv1.GetFuelReportRequest{VehicleId: "V1", FromTime: timestamppb.New(day[0].DeviceTime.Add(-time.Minute)), ToTime: timestamppb.New(last.Add(time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	if r := rep.GetReports(); len(r) != 1 || len(r[0].GetRefuels()) != 1 || len(r[0].GetDrains()) != 1 || r[0].GetDistanceKm() < 80 {
		t.Fatalf("fuel report: got %v", rep)
	}
	if d := rep.GetReports()[0].GetDrains()[0]; d.Confidence == nil || d.GetConfidence() <= 0 || !strings.HasPrefix(d.GetEventId(), "maintenance.fuel_drain.V1.") {
		t.Fatalf("drain line: got confidence %v and id %q, want a confidence and the event's id", d.Confidence, d.GetEventId())
	}
	svc, err := api.RecordService(ctx, &fleetv1.RecordServiceRequest{Service: &fleetv1.ServiceRecord{
		VehicleId: "V1", PlanId: plan.GetPlan().GetPlanId(), Items: []*fleetv1.ServiceItem{{Name: "oil", Cost: 60}, {Name: "filter", Cost: 15}},
	}})
	if err != nil || svc.GetService().GetCost() != 75 || svc.GetStatus().GetState() != fleetv1.PlanState_PLAN_STATE_OK {
		t.Fatalf("RecordService: got %v, %v; want cost 75 and the plan ok", svc, err)
	}
	book, err := api.ListServiceLog(ctx, &fleetv1.ListServiceLogRequest{VehicleId: "V1"})
	if err != nil || len(book.GetServices()) != 1 || book.GetTotalCost() != 75 {
		t.Fatalf("ListServiceLog: got %v, %v", book, err)
	}
	if _, err := api.GetVehicleHealth(ctx, &fleetv1.GetVehicleHealthRequest{VehicleId: "NOPE"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown vehicle: got %v, want NotFound", err)
	}

	// Stop the consumer, publish while it is down, start it again: nothing is lost.
	stopRun()
	if err := <-runDone; err != nil {
		t.Fatalf("Run: %v", err)
	}
	// The stopped consumer's last pull request stays open on the server for up to its
	// 2 s wait; a message arriving meanwhile goes to it and is redelivered only after
	// AckWait (30 s). Publishing after it expired keeps this test short; the message
	// would not be lost either way.
	time.Sleep(2500 * time.Millisecond)
	publishRecords(t, ctx, b, bus.KindDiag, []telemetry.Record{rec("V1", last.Add(2*time.Minute), dtcs("P0217", "P0524"))})
	go func() { runDone <- s.Run(ctx) }()
	e := events.waitFor(t, EventDTCNew, "V1")
	deadline := time.Now().Add(30 * time.Second)
	for e.GetAttributes()["code"] != "P0524" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		events.mu.Lock()
		for _, x := range events.evs {
			if x.GetKind() == EventDTCNew && x.GetAttributes()["code"] == "P0524" {
				e = x
			}
		}
		events.mu.Unlock()
	}
	if e.GetAttributes()["code"] != "P0524" {
		t.Fatalf("record published while the consumer was down: no dtc_new for P0524")
	}
	// Every event id was delivered once (a redelivered batch would be deduplicated).
	events.mu.Lock()
	seen := map[string]bool{}
	for _, x := range events.evs {
		if seen[x.GetEventId()] {
			t.Errorf("event %s delivered twice", x.GetEventId())
		}
		seen[x.GetEventId()] = true
	}
	events.mu.Unlock()
	cancel()
	<-runDone
}

// TestGRPCPlansGroupsFaults covers the RPCs the bus test does not, over a loopback
// listener with the generated client.
func TestGRPCPlansGroupsFaults(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := testLogger()
	s, err := New(DefaultConfig(), nil, NewMemoryStore(), log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	gs := grpcserver.New(log, nil)
	s.Register(gs.GRPC)
	if err := gs.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ctx, time.Second)
	conn, err := grpc.NewClient(gs.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	api := fleetv1.NewMaintenanceServiceClient(conn)

	g, err := api.SetGroup(ctx, &fleetv1.SetGroupRequest{GroupId: "trucks", VehicleIds: []string{"T2", "T1", "T2"}})
	if err != nil || g.GetMembers() != 2 {
		t.Fatalf("SetGroup: got %v, %v; want 2 members (duplicate dropped)", g, err)
	}
	if _, err := api.SetGroup(ctx, &fleetv1.SetGroupRequest{GroupId: "bad id"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("SetGroup with a bad id: got %v, want InvalidArgument", err)
	}
	for _, p := range []*fleetv1.MaintenancePlan{
		{PlanId: "tacho", Name: "Tachograph", GroupId: "trucks", EveryDays: 730},
		{PlanId: "oil-t1", Name: "Oil", VehicleId: "T1", EveryEngineHours: 500, DueSoonEngineHours: 25},
		{PlanId: "oil-v9", Name: "Oil", VehicleId: "V9", EveryKm: 20000},
	} {
		if _, err := api.CreatePlan(ctx, &fleetv1.CreatePlanRequest{Plan: p}); err != nil {
			t.Fatal(err)
		}
	}
	lp, err := api.ListPlans(ctx, &fleetv1.ListPlansRequest{VehicleId: "T1"})
	if err != nil || len(lp.GetPlans()) != 2 || lp.GetPlans()[0].GetPlanId() != "oil-t1" || lp.GetPlans()[1].GetPlanId() != "tacho" {
		t.Fatalf("ListPlans for T1: got %v, %v; want oil-t1 and tacho", lp, err)
	}
	if lp.GetPlans()[1].GetCreateTime() == nil {
		t.Fatalf("ListPlans: creation time not set")
	}
	if _, err := api.DeletePlan(ctx, &fleetv1.DeletePlanRequest{PlanId: "oil-v9"}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.DeletePlan(ctx, &fleetv1.DeletePlanRequest{PlanId: "oil-v9"}); status.Code(err) != codes.NotFound {
		t.Fatalf("DeletePlan twice: got %v, want NotFound", err)
	}
	if lp, _ := api.ListPlans(ctx, &fleetv1.ListPlansRequest{}); len(lp.GetPlans()) != 2 {
		t.Fatalf("ListPlans after delete: got %d plans, want 2", len(lp.GetPlans()))
	}

	if _, err := api.ListFaultCodes(ctx, &fleetv1.ListFaultCodesRequest{VehicleId: "T1"}); status.Code(err) != codes.NotFound {
		t.Fatalf("ListFaultCodes before any record: got %v, want NotFound", err)
	}
	feedKind(t, s, true, rec("T1", t0, dtcs("P0524", "B0001")))
	feedKind(t, s, true, rec("T1", t0.Add(time.Minute), dtcs("P0524")))
	fc, err := api.ListFaultCodes(ctx, &fleetv1.ListFaultCodesRequest{VehicleId: "T1"})
	if err != nil || len(fc.GetFaults()) != 2 {
		t.Fatalf("ListFaultCodes: got %v, %v", fc, err)
	}
	if f := fc.GetFaults()[0]; f.GetCode() != "P0524" || !f.GetActive() || f.GetSeverity() != fleetv1.FaultSeverity_FAULT_SEVERITY_CRITICAL {
		t.Fatalf("first fault: got %v, want P0524 active critical", f)
	}
	if f := fc.GetFaults()[1]; f.GetCode() != "B0001" || f.GetActive() || f.GetClearedTime() == nil {
		t.Fatalf("second fault: got %v, want B0001 cleared", f)
	}
	if fc, _ := api.ListFaultCodes(ctx, &fleetv1.ListFaultCodesRequest{VehicleId: "T1", ActiveOnly: true}); len(fc.GetFaults()) != 1 {
		t.Fatalf("ListFaultCodes active only: got %d, want 1", len(fc.GetFaults()))
	}

	bad := []struct {
		name string
		call func() error
	}{
		{"fuel report without a period", func() error {
			_, err := api.GetFuelReport(ctx, &fleetv1.GetFuelReportRequest{VehicleId: "T1"})
			return err
		}},
		{"fuel report for a vehicle and a group", func() error {
			_, err := api.GetFuelReport(ctx, &fleetv1.GetFuelReportRequest{VehicleId: "T1", GroupId: "trucks", FromTime: timestamppb.New(t0)})
			return err
		}},
		{"fuel profile with a falling table", func() error {
			_, err := api.SetFuelProfile(ctx, &fleetv1.SetFuelProfileRequest{Profile: &fleetv1.FuelProfile{VehicleId: "T1", TankCapacityL: 100,
				Calibration: []*fleetv1.CalibrationPoint{{Raw: 0, Litres: 50}, {Raw: 10, Litres: 10}}}})
			return err
		}},
		{"fuel profile with a negative lag", func() error {
			_, err := api.SetFuelProfile(ctx, &fleetv1.SetFuelProfileRequest{Profile: &fleetv1.FuelProfile{VehicleId: "T1", TankCapacityL: 100, SensorLagS: -1}})
			return err
		}},
		{"service with a negative cost", func() error {
			_, err := api.RecordService(ctx, &fleetv1.RecordServiceRequest{Service: &fleetv1.ServiceRecord{VehicleId: "T1", Cost: -1}})
			return err
		}},
		{"health without a vehicle", func() error {
			_, err := api.GetVehicleHealth(ctx, &fleetv1.GetVehicleHealthRequest{})
			return err
		}},
	}
	for _, tc := range bad {
		if err := tc.call(); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: got %v, want InvalidArgument", tc.name, err)
		}
	}
	if _, err := api.RecordService(ctx, &fleetv1.RecordServiceRequest{Service: &fleetv1.ServiceRecord{VehicleId: "T1", PlanId: "nope"}}); status.Code(err) != codes.NotFound {
		t.Fatalf("service under an unknown plan: got %v, want NotFound", err)
	}
}

// registryGroups is a vehicle registry's groups as UseGroups reads them.
type registryGroups map[string][]string

func (r registryGroups) Of(v string) []string { return r[v] }

func (r registryGroups) Members(g string) []string {
	var out []string
	for v, gs := range r {
		if slices.Contains(gs, g) {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}

// With the registry's groups, plans and fuel reports by group resolve them, and the
// service's own groups are refused rather than kept as a second model.
func TestGRPCRegistryGroups(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := testLogger()
	s, err := New(DefaultConfig(), nil, NewMemoryStore(), log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s.UseGroups(registryGroups{"V1": {"vans"}, "V2": {"red", "vans"}, "T1": {"trucks"}})
	gs := grpcserver.New(log, nil)
	s.Register(gs.GRPC)
	if err := gs.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ctx, time.Second)
	conn, err := grpc.NewClient(gs.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	api := fleetv1.NewMaintenanceServiceClient(conn)

	if _, err := api.SetGroup(ctx, &fleetv1.SetGroupRequest{GroupId: "vans", VehicleIds: []string{"T1"}}); status.Code(err) != codes.FailedPrecondition ||
		!strings.Contains(err.Error(), "UpdateVehicle") {
		t.Fatalf("SetGroup with the registry: got %v, want FailedPrecondition naming UpdateVehicle", err)
	}
	if _, err := api.CreatePlan(ctx, &fleetv1.CreatePlanRequest{Plan: &fleetv1.MaintenancePlan{PlanId: "oil", Name: "Oil", GroupId: "vans", EveryKm: 15000}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		vehicle string
		plans   int
	}{{"V1", 1}, {"V2", 1}, {"T1", 0}} {
		lp, err := api.ListPlans(ctx, &fleetv1.ListPlansRequest{VehicleId: tc.vehicle})
		if err != nil || len(lp.GetPlans()) != tc.plans {
			t.Errorf("ListPlans for %s: got %v, %v; want %d plans", tc.vehicle, lp, err, tc.plans)
		}
	}
	feedKind(t, s, true, rec("V1", t0))
	feedKind(t, s, true, rec("V2", t0))
	fr, err := api.GetFuelReport(ctx, &fleetv1.GetFuelReportRequest{GroupId: "vans", FromTime: timestamppb.New(t0.Add(-time.Hour)), ToTime: timestamppb.New(t0.Add(time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range fr.GetReports() {
		got = append(got, r.GetVehicleId())
	}
	if !slices.Equal(got, []string{"V1", "V2"}) {
		t.Errorf("fuel report of vans: got %v, want V1 and V2 (the registry's vans)", got)
	}
	if _, err := api.GetFuelReport(ctx, &fleetv1.GetFuelReportRequest{GroupId: "nobody", FromTime: timestamppb.New(t0)}); status.Code(err) != codes.NotFound {
		t.Errorf("fuel report of an empty group: got %v, want NotFound", err)
	}
}
