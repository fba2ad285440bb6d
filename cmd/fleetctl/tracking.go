package main

// The live fleet and the registry (TrackingService): vehicles, vehicle, groups, watch,
// nearest, track, trips and stops.

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/fleetwire/fleetwire/pkg/driving"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

func init() {
	register(
		command{name: "vehicles", args: "[--group G] [--status S[,S]] [--limit N]", summary: "list vehicles with their live state", run: runVehicles},
		command{name: "vehicle", args: "ID | show ID | add ID [flags] | update ID [flags] | delete ID --yes", summary: "one vehicle in detail; add (register) or update one in the registry", run: runVehicle},
		command{name: "groups", args: "", summary: "vehicle groups of the registry and how many vehicles each holds", run: runGroups},
		command{name: "watch", args: "[--vehicle ID]... [--group G]... [--bbox minLat,minLon,maxLat,maxLon]", summary: "stream live updates (Ctrl-C stops)", run: runWatch, stream: always},
		command{name: "nearest", args: "LAT,LON [--limit N] [--radius M] [--status S] [--group G]", summary: "the vehicles nearest to a point", run: runNearest},
		command{name: "track", args: "VEHICLE [--from T] [--to T] [--simplify M]", summary: "a vehicle's positions over a period", run: runTrack},
		command{name: "trips", args: "VEHICLE [--from T] [--to T] [--harsh [--harsh-accel A] [--harsh-brake B] [--harsh-corner C]]", summary: "a vehicle's trips over a period", run: runTrips},
		command{name: "stops", args: "VEHICLE [--from T] [--to T]", summary: "where and how long a vehicle stood over a period", run: runStops},
	)
}

func statusName(s fleetv1.VehicleStatus) string { return enumName(s.String(), "VEHICLE_STATUS_") }

// statuses reads "moving,idle".
func statuses(s string) ([]fleetv1.VehicleStatus, error) {
	if s == "" {
		return nil, nil
	}
	var out []fleetv1.VehicleStatus
	for _, n := range strings.Split(s, ",") {
		v, ok := enumValue(fleetv1.VehicleStatus_value, "VEHICLE_STATUS_", strings.TrimSpace(n))
		if !ok {
			return nil, usageErr("unknown status %q (%s)", n, enumNames(fleetv1.VehicleStatus_value, "VEHICLE_STATUS_"))
		}
		out = append(out, fleetv1.VehicleStatus(v))
	}
	return out, nil
}

var vehicleHeader = []string{"VEHICLE", "NAME", "STATUS", "POSITION", "KM/H", "IGN", "ODO KM", "FUEL", "LAST SEEN"}

// vehicleCells is a vehicle's row; seen renders the last-seen time.
func vehicleCells(v *fleetv1.Vehicle, seen string) []string {
	st := v.GetState()
	pos, speed := "-", "-"
	if f := st.GetLastFix(); f != nil {
		pos = fmt.Sprintf("%.5f,%.5f", f.GetPosition().GetLatitude(), f.GetPosition().GetLongitude())
		speed = num(f.GetSpeedKmh(), 0)
	}
	ign := "-"
	if st.Ignition != nil {
		ign = map[bool]string{true: "on", false: "off"}[st.GetIgnition()]
	}
	name := v.GetName()
	if !v.GetRegistered() {
		name = "(unregistered)"
	} else if name == "" {
		name = "-"
	}
	fuel := "-"
	if st.FuelLevelL != nil {
		fuel = num(st.GetFuelLevelL(), 1) + " L"
	}
	return []string{v.GetVehicleId(), name, statusName(st.GetStatus()), pos, speed, ign, num(st.GetOdometerM()/1000, 1), fuel, seen}
}

func runVehicles(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet()
	group := fs.String("group", "", "only vehicles in this group")
	status := fs.String("status", "", "only vehicles with these statuses, comma-separated ("+enumNames(fleetv1.VehicleStatus_value, "VEHICLE_STATUS_")+")")
	limit := fs.Int("limit", 0, "show at most this many (0 = all)")
	if _, err := e.noPos(fs, args); err != nil {
		return err
	}
	st, err := statuses(*status)
	if err != nil {
		return err
	}
	req := &fleetv1.ListVehiclesRequest{Group: *group, PageSize: 1000, Statuses: st}
	client := fleetv1.NewTrackingServiceClient(e.conn)
	var all []*fleetv1.Vehicle
	total := int32(0)
	for {
		resp, err := client.ListVehicles(ctx, req)
		if err != nil {
			return err
		}
		total = resp.GetTotalSize()
		all = append(all, resp.GetVehicles()...)
		if *limit > 0 && len(all) >= *limit {
			all = all[:*limit]
			break
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	return renderVehicles(e, all, int(total))
}

func renderVehicles(e *env, vs []*fleetv1.Vehicle, total int) error {
	if e.json() {
		for _, v := range vs {
			if err := e.emit(v); err != nil {
				return err
			}
		}
		return nil
	}
	t := e.table(vehicleHeader...)
	for _, v := range vs {
		t.row(vehicleCells(v, e.ago(v.GetState().GetLastSeenTime()))...)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if e.format == "table" {
		fmt.Fprintf(e.out(), "%d of %d vehicles\n", len(vs), total)
	}
	return nil
}

func runVehicle(ctx context.Context, e *env, args []string) error {
	client := fleetv1.NewTrackingServiceClient(e.conn)
	show := func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
		pos, err := e.parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usageErr("one vehicle id")
		}
		resp, err := client.GetVehicle(ctx, &fleetv1.GetVehicleRequest{VehicleId: pos[0]})
		if err != nil {
			return err
		}
		return renderVehicle(e, resp.GetVehicle())
	}
	// registryFlags are add's and update's: what the registry holds about a vehicle.
	type registry struct {
		name, plate *string
		groups      multiFlag
		meta        kvFlag
	}
	registryFlags := func(fs *flag.FlagSet) *registry {
		r := &registry{meta: kvFlag{}}
		r.name = fs.String("name", "", "display name")
		r.plate = fs.String("plate", "", "licence plate")
		fs.Var(&r.groups, "group", "a group the vehicle belongs to (repeatable; update replaces the groups)")
		fs.Var(r.meta, "meta", "metadata key=value (repeatable; update replaces the map)")
		return r
	}
	return e.dispatch(ctx, args, []sub{
		{name: "show", args: "ID", summary: "one vehicle in detail (also: fleetctl vehicle ID)", run: show},
		{name: "add", args: "ID [--name N] [--plate P] [--group G]... [--meta K=V]...", summary: "register a vehicle (one that already sends data keeps its state)",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				r := registryFlags(fs)
				pos, err := e.parse(fs, args)
				if err != nil {
					return err
				}
				if len(pos) != 1 {
					return usageErr("one vehicle id")
				}
				resp, err := client.RegisterVehicle(ctx, &fleetv1.RegisterVehicleRequest{VehicleId: pos[0], Name: *r.name, Plate: *r.plate, Groups: r.groups, Metadata: r.meta})
				if err != nil {
					return err
				}
				return renderVehicle(e, resp.GetVehicle())
			}},
		{name: "update", args: "ID [--name N] [--plate P] [--group G]... [--meta K=V]...", summary: "change what the registry holds; only the flags given change",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				r := registryFlags(fs)
				pos, err := e.parse(fs, args)
				if err != nil {
					return err
				}
				if len(pos) != 1 {
					return usageErr("one vehicle id")
				}
				mask := &fieldmaskpb.FieldMask{}
				fs.Visit(func(f *flag.Flag) {
					path := map[string]string{"name": "name", "plate": "plate", "group": "groups", "meta": "metadata"}[f.Name]
					mask.Paths = append(mask.Paths, path)
				})
				if len(mask.Paths) == 0 {
					return usageErr("nothing to change: give --name, --plate, --group or --meta")
				}
				resp, err := client.UpdateVehicle(ctx, &fleetv1.UpdateVehicleRequest{VehicleId: pos[0], Name: *r.name, Plate: *r.plate, Groups: r.groups, Metadata: r.meta, UpdateMask: mask})
				if err != nil {
					return err
				}
				return renderVehicle(e, resp.GetVehicle())
			}},
		{name: "delete", args: "ID --yes", summary: "remove a vehicle with its live state and history (revoke its device first, or it comes back when it reports)",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				yes := fs.Bool("yes", false, "confirm: the history is erased, not only hidden")
				pos, err := e.parse(fs, args)
				if err != nil {
					return err
				}
				if len(pos) != 1 {
					return usageErr("one vehicle id")
				}
				if !*yes {
					return usageErr("deleting %s erases its track, trips and stops; add --yes to go ahead", pos[0])
				}
				if _, err := client.DeleteVehicle(ctx, &fleetv1.DeleteVehicleRequest{VehicleId: pos[0]}); err != nil {
					return err
				}
				fmt.Fprintf(e.stderr, "vehicle %s deleted\n", pos[0])
				return nil
			}},
	}, "show")
}

// renderVehicle prints one vehicle field by field.
func renderVehicle(e *env, v *fleetv1.Vehicle) error {
	if e.json() {
		return e.emit(v)
	}
	st := v.GetState()
	f := st.GetLastFix()
	pairs := [][2]string{
		{"vehicle", v.GetVehicleId()},
		{"name", orDash(v.GetName())},
		{"plate", orDash(v.GetPlate())},
		{"registered", strconv.FormatBool(v.GetRegistered())},
		{"groups", joinOrDash(v.GetGroups())},
		{"metadata", sortedMap(v.GetMetadata())},
		{"status", statusName(st.GetStatus())},
		{"status since", e.when(st.GetStatusTime())},
		{"previous status", statusName(st.GetPreviousStatus())},
	}
	if f != nil {
		pairs = append(pairs,
			[2]string{"position", fmt.Sprintf("%.6f,%.6f", f.GetPosition().GetLatitude(), f.GetPosition().GetLongitude())},
			[2]string{"speed km/h", num(f.GetSpeedKmh(), 1)},
			[2]string{"heading", num(f.GetHeadingDeg(), 0) + "°"},
			[2]string{"altitude m", num(f.GetAltitudeM(), 0)},
			[2]string{"fix time", e.when(f.GetDeviceTime())},
		)
	} else {
		pairs = append(pairs, [2]string{"position", "-"})
	}
	seen := e.when(st.GetLastSeenTime())
	if st.GetLastSeenTime() != nil {
		seen += " (" + e.ago(st.GetLastSeenTime()) + ")"
	}
	ign := "-"
	if st.Ignition != nil {
		ign = map[bool]string{true: "on", false: "off"}[st.GetIgnition()]
	}
	pairs = append(pairs,
		[2]string{"last seen", seen},
		[2]string{"ignition", ign},
		[2]string{"odometer km", num(st.GetOdometerM()/1000, 1) + " (" + enumName(st.GetOdometerSource().String(), "ODOMETER_SOURCE_") + ")"},
		[2]string{"gps odometer km", num(st.GetGpsOdometerM()/1000, 1)},
		[2]string{"engine hours", num(st.GetEngineHours(), 1)},
		[2]string{"fuel l", optNum(st.FuelLevelL, 1)},
		[2]string{"fuel %", optNum(st.FuelLevelPct, 0)},
		[2]string{"external voltage v", optNum(st.ExternalVoltageV, 1)},
		[2]string{"records", strconv.FormatUint(st.GetRecords(), 10)},
	)
	return e.fields(pairs)
}

// runGroups counts the registry's vehicles per group.
func runGroups(ctx context.Context, e *env, args []string) error {
	if _, err := e.noFlags(args, 0, 0); err != nil {
		return err
	}
	client := fleetv1.NewTrackingServiceClient(e.conn)
	req := &fleetv1.ListVehiclesRequest{PageSize: 1000}
	counts := map[string]int{}
	for {
		resp, err := client.ListVehicles(ctx, req)
		if err != nil {
			return err
		}
		for _, v := range resp.GetVehicles() {
			for _, g := range v.GetGroups() {
				counts[g]++
			}
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	return renderGroups(e, counts)
}

// setGroupMembers makes vehicles exactly the members of group in the vehicle registry,
// the one group model every service reads: each listed vehicle gains the group (keeping
// its others; a vehicle that reports but was never registered is registered with it),
// every other vehicle of the group loses it. It returns the member count. An id the
// platform has never seen is NotFound: a typo must not create a vehicle.
func setGroupMembers(ctx context.Context, client fleetv1.TrackingServiceClient, group string, vehicles []string) (int, error) {
	want := map[string]bool{}
	for _, id := range vehicles {
		if want[id] {
			continue
		}
		want[id] = true
		resp, err := client.GetVehicle(ctx, &fleetv1.GetVehicleRequest{VehicleId: id})
		if err != nil {
			return 0, fmt.Errorf("vehicle %s: %w", id, err)
		}
		v := resp.GetVehicle()
		if slices.Contains(v.GetGroups(), group) {
			continue
		}
		groups := append(slices.Clone(v.GetGroups()), group)
		if !v.GetRegistered() {
			_, err = client.RegisterVehicle(ctx, &fleetv1.RegisterVehicleRequest{VehicleId: id, Groups: groups})
		} else {
			_, err = client.UpdateVehicle(ctx, &fleetv1.UpdateVehicleRequest{VehicleId: id, Groups: groups,
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"groups"}}})
		}
		if err != nil {
			return 0, fmt.Errorf("vehicle %s: %w", id, err)
		}
	}
	req := &fleetv1.ListVehiclesRequest{PageSize: 1000, Group: group}
	var leave []*fleetv1.Vehicle
	for {
		resp, err := client.ListVehicles(ctx, req)
		if err != nil {
			return 0, err
		}
		for _, v := range resp.GetVehicles() {
			if !want[v.GetVehicleId()] {
				leave = append(leave, v)
			}
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	for _, v := range leave {
		groups := slices.DeleteFunc(slices.Clone(v.GetGroups()), func(g string) bool { return g == group })
		if _, err := client.UpdateVehicle(ctx, &fleetv1.UpdateVehicleRequest{VehicleId: v.GetVehicleId(), Groups: groups,
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"groups"}}}); err != nil {
			return 0, fmt.Errorf("vehicle %s: %w", v.GetVehicleId(), err)
		}
	}
	return len(want), nil
}

func renderGroups(e *env, counts map[string]int) error {
	names := make([]string, 0, len(counts))
	for g := range counts {
		names = append(names, g)
	}
	sort.Strings(names)
	if e.json() {
		for _, g := range names {
			fmt.Fprintf(e.out(), "{\"group\":%q,\"vehicles\":%d}\n", g, counts[g])
		}
		return nil
	}
	t := e.table("GROUP", "VEHICLES")
	for _, g := range names {
		t.row(g, strconv.Itoa(counts[g]))
	}
	return t.flush()
}

// watchWidths fit the usual values of each column of vehicleHeader.
var watchWidths = []int{12, 16, 10, 20, 4, 3, 8, 8}

func runWatch(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet()
	var vehicles, groups multiFlag
	fs.Var(&vehicles, "vehicle", "only this vehicle (repeatable)")
	fs.Var(&groups, "group", "only this group (repeatable)")
	bbox := fs.String("bbox", "", "only vehicles inside minLat,minLon,maxLat,maxLon")
	if _, err := e.noPos(fs, args); err != nil {
		return err
	}
	req := &fleetv1.WatchVehiclesRequest{VehicleIds: vehicles, Groups: groups}
	if *bbox != "" {
		var b [4]float64
		parts := strings.Split(*bbox, ",")
		if len(parts) != 4 {
			return usageErr("--bbox wants minLat,minLon,maxLat,maxLon")
		}
		for i, p := range parts {
			f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
			if err != nil {
				return usageErr("--bbox: %v", err)
			}
			b[i] = f
		}
		req.Bounds = &fleetv1.BoundingBox{MinLatitude: b[0], MinLongitude: b[1], MaxLatitude: b[2], MaxLongitude: b[3]}
	}
	stream, err := fleetv1.NewTrackingServiceClient(e.conn).WatchVehicles(ctx, req)
	if err != nil {
		return err
	}
	var st *streamTable
	for {
		msg, err := stream.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if e.json() {
			if err := e.emit(msg); err != nil {
				return err
			}
			continue
		}
		if st == nil { // after the first update: a header above nothing looks like a quiet fleet
			st = e.streamTable(vehicleHeader, watchWidths)
		}
		if err := st.row(vehicleCells(msg.GetVehicle(), e.when(msg.GetVehicle().GetState().GetLastSeenTime()))...); err != nil {
			return err
		}
	}
}

func runNearest(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet()
	limit := fs.Int("limit", 10, "how many vehicles (at most 1000)")
	radius := fs.Float64("radius", 0, "only vehicles within this many metres (0 = any distance)")
	status := fs.String("status", "", "only these statuses, comma-separated")
	group := fs.String("group", "", "only this group")
	pos, err := e.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr("one point LAT,LON")
	}
	lat, lon, err := latLng(pos[0])
	if err != nil {
		return usageErr("%v", err)
	}
	st, err := statuses(*status)
	if err != nil {
		return err
	}
	resp, err := fleetv1.NewTrackingServiceClient(e.conn).SearchNearestVehicles(ctx, &fleetv1.SearchNearestVehiclesRequest{
		Point: &fleetv1.LatLng{Latitude: lat, Longitude: lon}, Limit: int32(*limit), MaxRadiusM: *radius, Statuses: st, Group: *group})
	if err != nil {
		return err
	}
	return renderNearest(e, resp.GetVehicles())
}

func renderNearest(e *env, vs []*fleetv1.NearbyVehicle) error {
	if e.json() {
		for _, v := range vs {
			if err := e.emit(v); err != nil {
				return err
			}
		}
		return nil
	}
	t := e.table(append([]string{"DIST M"}, vehicleHeader...)...)
	for _, v := range vs {
		t.row(append([]string{num(v.GetDistanceM(), 0)}, vehicleCells(v.GetVehicle(), e.ago(v.GetVehicle().GetState().GetLastSeenTime()))...)...)
	}
	return t.flush()
}

// period registers --from and --to (the last 24 hours by default).
func (e *env) period(fs *flag.FlagSet) (from, to *timeFlag) {
	now := e.now()
	return e.timeVar(fs, "from", now.Add(-24*time.Hour), "start of the period (default 24h ago)"),
		e.timeVar(fs, "to", now, "end of the period (default now)")
}

// vehicleAndPeriod parses VEHICLE [--from T] [--to T] and the command's other flags.
func (e *env) vehicleAndPeriod(fs *flag.FlagSet, args []string) (string, *timeFlag, *timeFlag, error) {
	from, to := e.period(fs)
	pos, err := e.parse(fs, args)
	if err != nil {
		return "", nil, nil, err
	}
	if len(pos) != 1 {
		return "", nil, nil, usageErr("one vehicle id")
	}
	return pos[0], from, to, nil
}

func runTrack(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet()
	simplify := fs.Float64("simplify", 0, "Douglas-Peucker tolerance in metres (0 = every fix)")
	v, from, to, err := e.vehicleAndPeriod(fs, args)
	if err != nil {
		return err
	}
	resp, err := fleetv1.NewTrackingServiceClient(e.conn).GetTrack(ctx, &fleetv1.GetTrackRequest{VehicleId: v, StartTime: from.ts(), EndTime: to.ts(), SimplifyToleranceM: *simplify})
	if err != nil {
		return err
	}
	return renderTrack(e, resp)
}

func renderTrack(e *env, resp *fleetv1.GetTrackResponse) error {
	if e.json() {
		for _, f := range resp.GetFixes() {
			if err := e.emit(f); err != nil {
				return err
			}
		}
		return nil
	}
	t := e.table("TIME", "LAT", "LON", "KM/H", "HEADING", "ALT M")
	for _, f := range resp.GetFixes() {
		t.row(e.when(f.GetDeviceTime()), num(f.GetPosition().GetLatitude(), 6), num(f.GetPosition().GetLongitude(), 6),
			num(f.GetSpeedKmh(), 0), num(f.GetHeadingDeg(), 0), num(f.GetAltitudeM(), 0))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if e.format == "table" {
		fmt.Fprintf(e.out(), "%d fixes shown of %d in the period\n", len(resp.GetFixes()), resp.GetTotalFixes())
	}
	return nil
}

func runTrips(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet()
	harsh := fs.Bool("harsh", false, "count harsh acceleration, braking and cornering per trip (reads each trip's track)")
	th := harshFlags(fs)
	v, from, to, err := e.vehicleAndPeriod(fs, args)
	if err != nil {
		return err
	}
	if err := th.Validate(); err != nil {
		return usageErr("%v", err)
	}
	client := fleetv1.NewTrackingServiceClient(e.conn)
	resp, err := client.ListTrips(ctx, &fleetv1.ListTripsRequest{VehicleId: v, StartTime: from.ts(), EndTime: to.ts()})
	if err != nil {
		return err
	}
	if !*harsh {
		return renderTrips(e, resp.GetTrips())
	}
	counts := make([]driving.Counts, len(resp.GetTrips()))
	for i, tr := range resp.GetTrips() {
		j := driving.NewJudge(*th)
		// The trip's own end is inclusive; eachFix's period is not.
		if _, err := eachFix(ctx, client, v, tr.GetStartTime().AsTime(), tr.GetEndTime().AsTime().Add(time.Nanosecond), 6*time.Hour, func(f *fleetv1.Fix) error {
			j.Add(driving.Point{Time: f.GetDeviceTime().AsTime(), SpeedKmh: f.GetSpeedKmh(), HeadingDeg: f.GetHeadingDeg()})
			return nil
		}); err != nil {
			return err
		}
		counts[i] = j.Counts()
	}
	return renderTripsHarsh(e, resp.GetTrips(), counts)
}

func pos(p *fleetv1.LatLng) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf("%.5f,%.5f", p.GetLatitude(), p.GetLongitude())
}

func renderTrips(e *env, trips []*fleetv1.Trip) error { return renderTripsHarsh(e, trips, nil) }

// renderTripsHarsh renders trips with their harsh-driving counts when harsh is not nil.
func renderTripsHarsh(e *env, trips []*fleetv1.Trip, harsh []driving.Counts) error {
	if e.json() {
		for i, tr := range trips {
			if harsh != nil {
				b, err := protojson.Marshal(tr)
				if err != nil {
					return err
				}
				h := harsh[i]
				fmt.Fprintf(e.out(), "{\"trip\":%s,\"harsh_accel\":%d,\"harsh_brake\":%d,\"harsh_corner\":%d}\n", b, h.HarshAccel, h.HarshBrake, h.HarshCorner)
				continue
			}
			if err := e.emit(tr); err != nil {
				return err
			}
		}
		return nil
	}
	header := []string{"START", "END", "FROM", "TO", "KM", "DURATION", "IDLE", "MAX KM/H", "AVG KM/H"}
	if harsh != nil {
		header = append(header, "HARSH ACCEL", "HARSH BRAKE", "HARSH CORNER")
	}
	t := e.table(header...)
	km := 0.0
	for i, tr := range trips {
		km += tr.GetDistanceM() / 1000
		cells := []string{e.when(tr.GetStartTime()), e.when(tr.GetEndTime()), pos(tr.GetStartPosition()), pos(tr.GetEndPosition()),
			num(tr.GetDistanceM()/1000, 1), dur(tr.GetDuration()), dur(tr.GetIdleDuration()), num(tr.GetMaxSpeedKmh(), 0), num(tr.GetAvgSpeedKmh(), 0)}
		if harsh != nil {
			h := harsh[i]
			cells = append(cells, strconv.Itoa(h.HarshAccel), strconv.Itoa(h.HarshBrake), strconv.Itoa(h.HarshCorner))
		}
		t.row(cells...)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if e.format == "table" {
		fmt.Fprintf(e.out(), "%d trips, %.1f km\n", len(trips), km)
	}
	return nil
}

func runStops(ctx context.Context, e *env, args []string) error {
	v, from, to, err := e.vehicleAndPeriod(e.flagSet(), args)
	if err != nil {
		return err
	}
	resp, err := fleetv1.NewTrackingServiceClient(e.conn).ListStops(ctx, &fleetv1.ListStopsRequest{VehicleId: v, StartTime: from.ts(), EndTime: to.ts()})
	if err != nil {
		return err
	}
	return renderStops(e, resp.GetStops())
}

func renderStops(e *env, stops []*fleetv1.Stop) error {
	if e.json() {
		for _, s := range stops {
			if err := e.emit(s); err != nil {
				return err
			}
		}
		return nil
	}
	t := e.table("START", "END", "POSITION", "DURATION", "DATA GAP")
	for _, s := range stops {
		gap := "-"
		if s.GetDataGap() {
			gap = "yes"
		}
		t.row(e.when(s.GetStartTime()), e.when(s.GetEndTime()), pos(s.GetPosition()), dur(s.GetDuration()), gap)
	}
	return t.flush()
}
