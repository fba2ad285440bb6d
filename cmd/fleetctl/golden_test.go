package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// golden compares what render prints (table mode, the clock at testNow, times in UTC)
// with testdata/NAME.golden.
func golden(t *testing.T, name, format string, render func(e *env) error) {
	t.Helper()
	var out, errOut bytes.Buffer
	e := &env{cli: cli{stdout: &out, stderr: &errOut, now: func() time.Time { return testNow }, loc: time.UTC}, name: name, format: format}
	if err := render(e); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run Golden -update to create it)", err)
	}
	if got := out.String(); got != string(want) {
		t.Errorf("%s output changed (go test -run Golden -update accepts it):\n--- got\n%s--- want\n%s", name, got, want)
	}
}

func ts(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(testNow.Add(d)) }

func ptr[T any](v T) *T { return &v }

var goldenVehicles = []*fleetv1.Vehicle{
	{VehicleId: "veh-00001", Name: "Van 1", Plate: "B-FW 101", Groups: []string{"vans", "north"}, Registered: true, Metadata: map[string]string{"depot": "spandau"},
		State: &fleetv1.VehicleState{Status: fleetv1.VehicleStatus_VEHICLE_STATUS_MOVING, PreviousStatus: fleetv1.VehicleStatus_VEHICLE_STATUS_IDLE,
			StatusTime: ts(-12 * time.Minute), LastSeenTime: ts(-3 * time.Second), Ignition: ptr(true), OdometerM: 123456.7, GpsOdometerM: 120000,
			EngineHours: 1502.25, FuelLevelL: ptr(41.25), FuelLevelPct: ptr(51.5), ExternalVoltageV: ptr(13.8), Records: 48211,
			OdometerSource: fleetv1.OdometerSource_ODOMETER_SOURCE_DEVICE,
			LastFix:        &fleetv1.Fix{Position: &fleetv1.LatLng{Latitude: 52.520008, Longitude: 13.404954}, SpeedKmh: 48.4, HeadingDeg: 271, AltitudeM: 34, DeviceTime: ts(-4 * time.Second)}}},
	{VehicleId: "veh-00002", Registered: false,
		State: &fleetv1.VehicleState{Status: fleetv1.VehicleStatus_VEHICLE_STATUS_OFFLINE, LastSeenTime: ts(-50 * time.Hour), OdometerM: 9000,
			LastFix: &fleetv1.Fix{Position: &fleetv1.LatLng{Latitude: 52.4, Longitude: 13.1}, DeviceTime: ts(-50 * time.Hour)}}},
	{VehicleId: "truck-long-identifier-01", Name: "Truck", Registered: true, State: &fleetv1.VehicleState{Status: fleetv1.VehicleStatus_VEHICLE_STATUS_NEVER_SEEN}},
}

var goldenAlerts = []*fleetv1.Alert{
	{AlertId: 12, VehicleId: "veh-00001", Kind: "tow", Severity: fleetv1.AlertSeverity_ALERT_SEVERITY_CRITICAL, State: fleetv1.AlertState_ALERT_STATE_OPEN,
		Occurrences: 1, Message: "moved 420 m with the ignition off", FirstTime: ts(-5 * time.Minute)},
	{AlertId: 9, VehicleId: "veh-00002", Kind: "offline", Severity: fleetv1.AlertSeverity_ALERT_SEVERITY_WARNING, State: fleetv1.AlertState_ALERT_STATE_ACKNOWLEDGED,
		Occurrences: 3, Message: "no data for 30 min", FirstTime: ts(-3 * time.Hour), AcknowledgedBy: "ann"},
}

func TestGolden(t *testing.T) {
	t.Run("vehicles", func(t *testing.T) {
		golden(t, "vehicles", "table", func(e *env) error { return renderVehicles(e, goldenVehicles, 7) })
	})
	t.Run("vehicles csv", func(t *testing.T) {
		golden(t, "vehicles_csv", "csv", func(e *env) error { return renderVehicles(e, goldenVehicles, 7) })
	})
	t.Run("vehicle", func(t *testing.T) {
		golden(t, "vehicle", "table", func(e *env) error { return renderVehicle(e, goldenVehicles[0]) })
	})
	t.Run("watch", func(t *testing.T) {
		golden(t, "watch", "table", func(e *env) error {
			st := e.streamTable(vehicleHeader, watchWidths)
			for _, v := range goldenVehicles {
				if err := st.row(vehicleCells(v, e.when(v.GetState().GetLastSeenTime()))...); err != nil {
					return err
				}
			}
			return nil
		})
	})
	t.Run("groups", func(t *testing.T) {
		golden(t, "groups", "table", func(e *env) error { return renderGroups(e, map[string]int{"vans": 2, "north": 1}) })
	})
	t.Run("nearest", func(t *testing.T) {
		golden(t, "nearest", "table", func(e *env) error {
			return renderNearest(e, []*fleetv1.NearbyVehicle{{Vehicle: goldenVehicles[0], DistanceM: 12.4}, {Vehicle: goldenVehicles[1], DistanceM: 18004}})
		})
	})
	t.Run("trips", func(t *testing.T) {
		golden(t, "trips", "table", func(e *env) error {
			return renderTrips(e, []*fleetv1.Trip{{StartTime: ts(-3 * time.Hour), EndTime: ts(-2 * time.Hour), StartPosition: &fleetv1.LatLng{Latitude: 52.5, Longitude: 13.4},
				EndPosition: &fleetv1.LatLng{Latitude: 52.6, Longitude: 13.2}, DistanceM: 23456, Duration: durationpb.New(time.Hour), IdleDuration: durationpb.New(4 * time.Minute),
				MaxSpeedKmh: 87, AvgSpeedKmh: 23.5}})
		})
	})
	t.Run("stops", func(t *testing.T) {
		golden(t, "stops", "table", func(e *env) error {
			return renderStops(e, []*fleetv1.Stop{{StartTime: ts(-2 * time.Hour), EndTime: ts(-time.Hour), Position: &fleetv1.LatLng{Latitude: 52.6, Longitude: 13.2},
				Duration: durationpb.New(time.Hour)}, {StartTime: ts(-80 * time.Hour), EndTime: ts(-3 * time.Hour), Duration: durationpb.New(77 * time.Hour), DataGap: true}})
		})
	})
	t.Run("track", func(t *testing.T) {
		golden(t, "track", "table", func(e *env) error {
			return renderTrack(e, &fleetv1.GetTrackResponse{TotalFixes: 9, Fixes: []*fleetv1.Fix{goldenVehicles[0].GetState().GetLastFix(), goldenVehicles[1].GetState().GetLastFix()}})
		})
	})
	t.Run("alerts", func(t *testing.T) {
		golden(t, "alerts", "table", func(e *env) error {
			tb := e.table(alertHeader...)
			for _, a := range goldenAlerts {
				tb.row(alertCells(e, a)...)
			}
			return tb.flush()
		})
	})
	t.Run("commands", func(t *testing.T) {
		golden(t, "commands", "table", func(e *env) error {
			return renderCommands(e, []*fleetv1.Command{{CommandId: "c-7f3a", VehicleId: "veh-00001", Kind: fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE,
				State: fleetv1.CommandState_COMMAND_STATE_QUEUED, StateReason: "waiting for speed <= 5 km/h (now 48 km/h)", IssuedBy: "ann", IssueTime: ts(-time.Minute), UpdateTime: ts(-time.Minute)}})
		})
	})
	t.Run("zones", func(t *testing.T) {
		golden(t, "zones", "table", func(e *env) error {
			return renderZones(e, []*fleetv1.Zone{
				{ZoneId: "depot", Name: "Depot", Shape: "Circle", RadiusM: 500, SpeedLimitKmh: 30, Tags: []string{"base"}, UpdateTime: ts(-24 * time.Hour)},
				{ZoneId: "yard", Name: "Yard", Shape: "Polygon", Alert: fleetv1.ZoneAlert_ZONE_ALERT_MUST_STAY_INSIDE, GroupIds: []string{"vans"}, VehicleIds: []string{"veh-00009"}, UpdateTime: ts(-time.Hour)},
			})
		})
	})
	t.Run("zone events", func(t *testing.T) {
		golden(t, "zone_events", "table", func(e *env) error {
			return renderZoneEvents(e, []*fleetv1.Event{{VehicleId: "veh-00001", Kind: "enter", Time: ts(-time.Minute), SpeedKmh: 31,
				Attributes: map[string]string{"zone_id": "yard", "zone_name": "Yard"}}, {VehicleId: "veh-00001", Kind: "overspeed_in_zone", Time: ts(-30 * time.Second), SpeedKmh: 52,
				Attributes: map[string]string{"zone_id": "depot", "zone_name": "Depot", "limit_kmh": "30"}}})
		})
	})
	t.Run("due", func(t *testing.T) {
		golden(t, "due", "table", func(e *env) error {
			return renderDue(e, []*fleetv1.PlanStatus{{VehicleId: "veh-00001", PlanId: "oil", PlanName: "Oil and filter", State: fleetv1.PlanState_PLAN_STATE_OVERDUE,
				RemainingKm: ptr(-120.4), RemainingDays: ptr(12.25), DueTime: ts(294 * time.Hour), LastServiceTime: ts(-353 * 24 * time.Hour)}})
		})
	})
	t.Run("fuel", func(t *testing.T) {
		golden(t, "fuel", "table", func(e *env) error {
			return renderFuel(e, &fleetv1.GetFuelReportResponse{Reports: []*fleetv1.FuelReport{
				{VehicleId: "veh-00001", HasData: true, StartLevelL: 60, EndLevelL: 41.2, RefuelledL: 40, DrainedL: 25, ConsumedL: 33.8, DistanceKm: 310.5, LitresPer_100Km: 10.9, IdleLitres: 1.2, IdleHours: 0.8,
					Refuels: []*fleetv1.FuelEventLine{{Kind: fleetv1.FuelEventKind_FUEL_EVENT_KIND_REFUEL, StartTime: ts(-5 * time.Hour), EndTime: ts(-299 * time.Minute), Litres: 40, LevelBeforeL: 20, LevelAfterL: 60, Confidence: ptr(0.9), Position: &fleetv1.LatLng{Latitude: 52.5, Longitude: 13.4}}},
					Drains:  []*fleetv1.FuelEventLine{{Kind: fleetv1.FuelEventKind_FUEL_EVENT_KIND_DRAIN, StartTime: ts(-2 * time.Hour), EndTime: ts(-119 * time.Minute), Litres: 25, LevelBeforeL: 66.2, LevelAfterL: 41.2}}},
				{VehicleId: "veh-00002", DistanceKm: 0},
			}, Total: &fleetv1.FuelReport{HasData: true, StartLevelL: 60, EndLevelL: 41.2, RefuelledL: 40, DrainedL: 25, ConsumedL: 33.8, DistanceKm: 310.5, LitresPer_100Km: 10.9}})
		})
	})
	t.Run("audit", func(t *testing.T) {
		golden(t, "audit", "table", func(e *env) error {
			return renderAudit(e, &fleetv1.ListAuditRecordsResponse{LastSeq: 2, Records: []*fleetv1.AuditRecord{{Seq: 2, Time: ts(-time.Minute), Principal: "admin", Role: fleetv1.Role_ROLE_ADMIN,
				Peer: "127.0.0.1:51000", Method: "/fleet.v1.TokenService/CreateToken", Code: "OK", Request: `{"name":"vera","role":"ROLE_VIEWER"}`}}})
		})
	})
}
