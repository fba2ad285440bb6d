package main

// Exports and reports: a vehicle's track as GPX, GeoJSON or CSV, and the daily summary per
// vehicle. The track is tracking's ExportTrack: the server formats it (pkg/export) and
// streams it a page at a time, and each chunk is written as it arrives. The daily summary
// is composed from the existing APIs (tracking, geofence, maintenance, dispatch) and
// written as each row is computed, the track read a chunk at a time, so a month of a large
// fleet never sits in memory at once. Trips, stops, zone visits, fuel events and alerts
// export as CSV through their own commands with -o csv.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/driving"
	"github.com/fleetwire/fleetwire/pkg/export"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

func init() {
	register(
		command{name: "export", args: "track VEHICLE --format gpx|geojson|csv [--from T] [--to T]",
			summary: "a vehicle's track as GPX 1.1, GeoJSON or CSV, streamed by the server (other lists: their command with -o csv)",
			run:     runExport, stream: always},
		command{name: "report", args: "daily [--date D] [--days N] [--vehicle V]... [--group G] [--harsh-accel A] [--harsh-brake B] [--harsh-corner C]",
			summary: "daily summary per vehicle: distance, driving, idle and stopped time, stops, max speed, fuel, zone visits, overspeed, harsh driving, alerts",
			run:     runReport, stream: always},
	)
}

func runExport(ctx context.Context, e *env, args []string) error {
	return e.dispatch(ctx, args, []sub{
		{name: "track", args: "VEHICLE --format gpx|geojson|csv [--from T] [--to T]", summary: "a vehicle's fixes over a period",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				format := fs.String("format", "gpx", "gpx (GPX 1.1), geojson (a FeatureCollection of Point features) or csv")
				v, from, to, err := e.vehicleAndPeriod(fs, args)
				if err != nil {
					return err
				}
				f, err := export.ParseFormat(*format)
				if err != nil {
					return usageErr("--format %q: want gpx, geojson or csv", *format)
				}
				if !to.t.After(*from.t) {
					return usageErr("the period is empty: --from %s is not before --to %s", from.t.Format(time.RFC3339), to.t.Format(time.RFC3339))
				}
				stream, err := fleetv1.NewTrackingServiceClient(e.conn).ExportTrack(ctx, &fleetv1.ExportTrackRequest{
					VehicleId: v, StartTime: from.ts(), EndTime: to.ts(), Format: exportFormats[f]})
				if err != nil {
					return err
				}
				// The server formats the document; each chunk is written as it arrives.
				n := 0
				for {
					chunk, err := stream.Recv()
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						return err
					}
					if _, err := e.out().Write(chunk.GetData()); err != nil {
						return err
					}
					n += int(chunk.GetFixes())
				}
				fmt.Fprintf(e.stderr, "%d fixes of %s exported\n", n, v)
				return nil
			}},
	}, "")
}

// exportFormats maps pkg/export's formats to the API's.
var exportFormats = map[export.Format]fleetv1.ExportFormat{
	export.GPX:     fleetv1.ExportFormat_EXPORT_FORMAT_GPX,
	export.GeoJSON: fleetv1.ExportFormat_EXPORT_FORMAT_GEOJSON,
	export.CSV:     fleetv1.ExportFormat_EXPORT_FORMAT_CSV,
}

// eachFix calls fn with every fix of vehicle in [from, to], in time order, asking
// tracking for chunk at a time. It returns how many there were.
func eachFix(ctx context.Context, client fleetv1.TrackingServiceClient, vehicle string, from, to time.Time, chunk time.Duration, fn func(*fleetv1.Fix) error) (int, error) {
	if !to.After(from) {
		return 0, usageErr("the period is empty: --from %s is not before --to %s", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	n := 0
	for start := from; start.Before(to); start = start.Add(chunk) {
		// GetTrack's range is inclusive at both ends: a chunk stops just before the next.
		end := start.Add(chunk - time.Nanosecond)
		if !end.Before(to) {
			end = to
		}
		resp, err := client.GetTrack(ctx, &fleetv1.GetTrackRequest{VehicleId: vehicle, StartTime: timestamppb.New(start), EndTime: timestamppb.New(end)})
		if err != nil {
			return n, err
		}
		for _, f := range resp.GetFixes() {
			if err := fn(f); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// daily is one vehicle's day.
type daily struct {
	vehicle                string
	day                    time.Time
	distanceKm             float64
	driving, idle, stopped time.Duration
	trips, stops           int
	maxKmh                 float64
	fuelUsedL, refuelL     float64
	refuels, drains        int
	drainedL               float64
	zoneVisits, overspeeds int
	harsh                  driving.Counts
	alerts, criticalAlerts int
}

var dailyHeader = []string{"DATE", "VEHICLE", "KM", "DRIVING", "IDLE", "STOPPED", "TRIPS", "STOPS", "MAX KM/H",
	"FUEL L", "REFUELS", "REFUEL L", "DRAINS", "DRAIN L", "ZONE VISITS", "OVERSPEED", "HARSH ACCEL", "HARSH BRAKE", "HARSH CORNER", "ALERTS", "CRITICAL"}

func runReport(ctx context.Context, e *env, args []string) error {
	return e.dispatch(ctx, args, []sub{
		{name: "daily", args: "[--date D] [--days N] [--vehicle V]... [--group G]", summary: "one row per vehicle and day",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				yesterday := e.now().In(e.loc).AddDate(0, 0, -1)
				date := fs.String("date", yesterday.Format("2006-01-02"), "the first day (local date, YYYY-MM-DD)")
				days := fs.Int("days", 1, "how many days from --date")
				var vehicles multiFlag
				fs.Var(&vehicles, "vehicle", "a vehicle (repeatable; default every vehicle, or --group's)")
				group := fs.String("group", "", "the vehicles of a registry group")
				thp := harshFlags(fs)
				if _, err := e.noPos(fs, args); err != nil {
					return err
				}
				th := *thp
				if err := th.Validate(); err != nil {
					return usageErr("%v", err)
				}
				first, err := time.ParseInLocation("2006-01-02", *date, e.loc)
				if err != nil {
					return usageErr("--date %q: want YYYY-MM-DD", *date)
				}
				if *days < 1 || *days > 92 {
					return usageErr("--days must be 1..92")
				}
				ids := []string(vehicles)
				if len(ids) == 0 {
					if ids, err = listVehicleIDs(ctx, fleetv1.NewTrackingServiceClient(e.conn), *group); err != nil {
						return err
					}
				} else if *group != "" {
					return usageErr("give --vehicle or --group, not both")
				}
				var t *streamTable
				if !e.json() {
					t = e.streamTable(dailyHeader, []int{10, 12, 7, 8, 8, 8, 5, 5, 8, 7, 7, 8, 6, 6, 11, 9, 11, 11, 12, 6})
				}
				for d := 0; d < *days; d++ {
					// Calendar days in the local zone: a DST day is 23 or 25 hours long.
					day := first.AddDate(0, 0, d)
					for _, v := range ids {
						r, err := dailySummary(ctx, e, v, day, day.AddDate(0, 0, 1), th)
						if err != nil {
							return fmt.Errorf("%s on %s: %w", v, day.Format("2006-01-02"), err)
						}
						if err := emitDaily(e, t, r); err != nil {
							return err
						}
					}
				}
				return nil
			}},
	}, "")
}

// harshFlags adds the driver-behaviour thresholds (docs/tracking.md) to fs.
func harshFlags(fs *flag.FlagSet) *driving.Thresholds {
	th := driving.DefaultThresholds()
	fs.Float64Var(&th.AccelMps2, "harsh-accel", th.AccelMps2, "harsh acceleration above this, m/s²")
	fs.Float64Var(&th.BrakeMps2, "harsh-brake", th.BrakeMps2, "harsh braking above this deceleration, m/s²")
	fs.Float64Var(&th.CornerMps2, "harsh-corner", th.CornerMps2, "harsh cornering above this lateral acceleration, m/s²")
	fs.Float64Var(&th.CornerMinKmh, "corner-min-kmh", th.CornerMinKmh, "turns below this speed are not judged")
	fs.DurationVar(&th.MaxGap, "harsh-max-gap", th.MaxGap, "fixes further apart are not compared")
	return &th
}

func emitDaily(e *env, t *streamTable, r daily) error {
	if e.json() {
		b, err := json.Marshal(map[string]any{
			"date": r.day.Format("2006-01-02"), "vehicle_id": r.vehicle, "distance_km": round(r.distanceKm, 3),
			"driving_s": r.driving.Seconds(), "idle_s": r.idle.Seconds(), "stopped_s": r.stopped.Seconds(),
			"trips": r.trips, "stops": r.stops, "max_speed_kmh": r.maxKmh,
			"fuel_used_l": round(r.fuelUsedL, 2), "refuels": r.refuels, "refuelled_l": round(r.refuelL, 2), "drains": r.drains, "drained_l": round(r.drainedL, 2),
			"zone_visits": r.zoneVisits, "overspeed": r.overspeeds,
			"harsh_accel": r.harsh.HarshAccel, "harsh_brake": r.harsh.HarshBrake, "harsh_corner": r.harsh.HarshCorner,
			"alerts": r.alerts, "critical_alerts": r.criticalAlerts,
		})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(e.out(), string(b))
		return err
	}
	d := func(x time.Duration) string {
		if e.format == "csv" {
			return strconv.FormatInt(int64(x.Seconds()), 10)
		}
		return hm(x)
	}
	i := strconv.Itoa
	return t.row(r.day.Format("2006-01-02"), r.vehicle, num(r.distanceKm, 1), d(r.driving), d(r.idle), d(r.stopped),
		i(r.trips), i(r.stops), num(r.maxKmh, 0), num(r.fuelUsedL, 1), i(r.refuels), num(r.refuelL, 1), i(r.drains), num(r.drainedL, 1),
		i(r.zoneVisits), i(r.overspeeds), i(r.harsh.HarshAccel), i(r.harsh.HarshBrake), i(r.harsh.HarshCorner), i(r.alerts), i(r.criticalAlerts))
}

func round(f float64, dec int) float64 {
	p := math.Pow(10, float64(dec))
	return math.Round(f*p) / p
}

// hm prints a duration as 3h05 (the table's columns), 0:00 for none.
func hm(d time.Duration) string {
	m := int(d.Round(time.Minute).Minutes())
	return fmt.Sprintf("%d:%02d", m/60, m%60)
}

// listVehicleIDs returns every vehicle (of group, when set), by id.
func listVehicleIDs(ctx context.Context, client fleetv1.TrackingServiceClient, group string) ([]string, error) {
	req := &fleetv1.ListVehiclesRequest{PageSize: 1000, Group: group}
	var ids []string
	for {
		resp, err := client.ListVehicles(ctx, req)
		if err != nil {
			return nil, err
		}
		for _, v := range resp.GetVehicles() {
			ids = append(ids, v.GetVehicleId())
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	sort.Strings(ids)
	return ids, nil
}

// dailySummary composes one vehicle's [from, to) from the services' APIs. Trips and stops
// are segmented inside the day (one that spans midnight counts in both days, each its
// own part); fuel is maintenance's report for the day; zone visits and overspeed are
// geofence's enter and overspeed_in_zone events; alerts are those first raised that day.
func dailySummary(ctx context.Context, e *env, vehicle string, from, to time.Time, th driving.Thresholds) (daily, error) {
	r := daily{vehicle: vehicle, day: from}
	end := to.Add(-time.Nanosecond)
	tracking := fleetv1.NewTrackingServiceClient(e.conn)
	trips, err := tracking.ListTrips(ctx, &fleetv1.ListTripsRequest{VehicleId: vehicle, StartTime: timestamppb.New(from), EndTime: timestamppb.New(end)})
	if err != nil {
		return r, fmt.Errorf("trips: %w", err)
	}
	for _, tr := range trips.GetTrips() {
		r.trips++
		r.distanceKm += tr.GetDistanceM() / 1000
		r.idle += tr.GetIdleDuration().AsDuration()
		r.driving += tr.GetDuration().AsDuration() - tr.GetIdleDuration().AsDuration()
		r.maxKmh = math.Max(r.maxKmh, tr.GetMaxSpeedKmh())
	}
	stops, err := tracking.ListStops(ctx, &fleetv1.ListStopsRequest{VehicleId: vehicle, StartTime: timestamppb.New(from), EndTime: timestamppb.New(end)})
	if err != nil {
		return r, fmt.Errorf("stops: %w", err)
	}
	for _, s := range stops.GetStops() {
		r.stops++
		r.stopped += s.GetDuration().AsDuration()
	}
	judge := driving.NewJudge(th)
	if _, err := eachFix(ctx, tracking, vehicle, from, to, 6*time.Hour, func(f *fleetv1.Fix) error {
		judge.Add(driving.Point{Time: f.GetDeviceTime().AsTime(), SpeedKmh: f.GetSpeedKmh(), HeadingDeg: f.GetHeadingDeg()})
		return nil
	}); err != nil {
		return r, fmt.Errorf("track: %w", err)
	}
	r.harsh = judge.Counts()

	fuel, err := fleetv1.NewMaintenanceServiceClient(e.conn).GetFuelReport(ctx, &fleetv1.GetFuelReportRequest{VehicleId: vehicle, FromTime: timestamppb.New(from), ToTime: timestamppb.New(to)})
	switch {
	case err == nil:
		for _, fr := range fuel.GetReports() {
			r.fuelUsedL += fr.GetConsumedL()
			r.refuelL += fr.GetRefuelledL()
			r.drainedL += fr.GetDrainedL()
			r.refuels += len(fr.GetRefuels())
			r.drains += len(fr.GetDrains())
		}
	case status.Code(err) == codes.NotFound: // no fuel data for the vehicle
	default:
		return r, fmt.Errorf("fuel: %w", err)
	}

	zev, err := fleetv1.NewGeofenceServiceClient(e.conn).ListZoneEvents(ctx, &fleetv1.ListZoneEventsRequest{VehicleId: vehicle, From: timestamppb.New(from), To: timestamppb.New(end)})
	if err != nil {
		return r, fmt.Errorf("zone events: %w", err)
	}
	for _, ev := range zev.GetEvents() {
		switch ev.GetKind() {
		case "enter":
			r.zoneVisits++
		case "overspeed_in_zone":
			r.overspeeds++
		}
	}

	alerts := fleetv1.NewAlertServiceClient(e.conn)
	req := &fleetv1.ListAlertsRequest{VehicleId: vehicle, StartTime: timestamppb.New(from), EndTime: timestamppb.New(to), PageSize: 1000}
	for {
		resp, err := alerts.ListAlerts(ctx, req)
		if err != nil {
			return r, fmt.Errorf("alerts: %w", err)
		}
		for _, a := range resp.GetAlerts() {
			r.alerts++
			if a.GetSeverity() == fleetv1.AlertSeverity_ALERT_SEVERITY_CRITICAL {
				r.criticalAlerts++
			}
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	return r, nil
}
