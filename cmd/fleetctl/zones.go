package main

// Zones (GeofenceService): list, show, create from a GeoJSON file or a circle, delete,
// who is inside, which zones hold a vehicle or a point, and zone events past and live.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

func init() {
	register(command{name: "zones", args: "[list] | show ID | create ... | delete ID | occupants ID | of VEHICLE | at LAT,LON | events ... | export",
		summary: "zones: list, show, create (GeoJSON file or circle), delete, occupants, events", run: runZones,
		stream: func(args []string) bool { return len(args) > 0 && args[0] == "events" && following(args) }})
}

func zoneAlertName(a fleetv1.ZoneAlert) string {
	if a == fleetv1.ZoneAlert_ZONE_ALERT_UNSPECIFIED {
		return "enter_exit"
	}
	return enumName(a.String(), "ZONE_ALERT_")
}

// appliesTo says which vehicles a zone is for.
func appliesTo(z *fleetv1.Zone) string {
	var parts []string
	for _, v := range z.GetVehicleIds() {
		parts = append(parts, v)
	}
	for _, g := range z.GetGroupIds() {
		parts = append(parts, "group:"+g)
	}
	if len(parts) == 0 {
		return "all"
	}
	return strings.Join(parts, ",")
}

func renderZones(e *env, zs []*fleetv1.Zone) error {
	if e.json() {
		for _, z := range zs {
			if err := e.emit(z); err != nil {
				return err
			}
		}
		return nil
	}
	t := e.table("ZONE", "NAME", "SHAPE", "ALERT", "SPEED LIMIT", "TAGS", "APPLIES TO", "UPDATED")
	for _, z := range zs {
		limit := "-"
		if z.GetSpeedLimitKmh() > 0 {
			limit = num(z.GetSpeedLimitKmh(), 0) + " km/h"
		}
		t.row(z.GetZoneId(), orDash(z.GetName()), z.GetShape(), zoneAlertName(z.GetAlert()), limit, joinOrDash(z.GetTags()), appliesTo(z), e.when(z.GetUpdateTime()))
	}
	return t.flush()
}

func renderZone(e *env, z *fleetv1.Zone) error {
	if e.json() {
		return e.emit(z)
	}
	pairs := [][2]string{
		{"zone", z.GetZoneId()}, {"name", orDash(z.GetName())}, {"shape", z.GetShape()},
		{"alert", zoneAlertName(z.GetAlert())}, {"tags", joinOrDash(z.GetTags())}, {"applies to", appliesTo(z)},
	}
	if z.GetRadiusM() > 0 {
		pairs = append(pairs, [2]string{"radius m", num(z.GetRadiusM(), 0)})
	}
	if z.GetBufferM() > 0 {
		pairs = append(pairs, [2]string{"buffer m", num(z.GetBufferM(), 0)})
	}
	if z.GetSpeedLimitKmh() > 0 {
		pairs = append(pairs, [2]string{"speed limit km/h", num(z.GetSpeedLimitKmh(), 0)})
	}
	if z.GetDwellMinutes() > 0 {
		pairs = append(pairs, [2]string{"dwell minutes", num(z.GetDwellMinutes(), 1)})
	}
	if s := z.GetSchedule(); s != nil {
		days := "every day"
		if len(s.GetDaysOfWeek()) > 0 {
			var ds []string
			for _, d := range s.GetDaysOfWeek() {
				ds = append(ds, time.Weekday(d).String()[:3])
			}
			days = strings.Join(ds, ",")
		}
		pairs = append(pairs, [2]string{"schedule", fmt.Sprintf("%s %s-%s %s", days, orDash(s.GetStartTime()), orDash(s.GetEndTime()), orDash(s.GetTimeZone()))})
	}
	geo := z.GetGeojson()
	if len(geo) > 200 && e.format == "table" {
		geo = geo[:197] + "..."
	}
	pairs = append(pairs, [2]string{"revision", strconv.FormatUint(z.GetRevision(), 10)}, [2]string{"updated", e.when(z.GetUpdateTime())}, [2]string{"geojson", geo})
	return e.fields(pairs)
}

func renderZoneEvents(e *env, evs []*fleetv1.Event) error {
	if e.json() {
		for _, ev := range evs {
			if err := e.emit(ev); err != nil {
				return err
			}
		}
		return nil
	}
	t := e.table(zoneEventHeader...)
	for _, ev := range evs {
		t.row(zoneEventCells(e, ev)...)
	}
	return t.flush()
}

var zoneEventHeader = []string{"TIME", "VEHICLE", "EVENT", "ZONE", "KM/H", "DETAILS"}

func zoneEventCells(e *env, ev *fleetv1.Event) []string {
	attrs := map[string]string{}
	for k, v := range ev.GetAttributes() {
		if k != "zone_id" && k != "zone_name" {
			attrs[k] = v
		}
	}
	zone := ev.GetAttributes()["zone_id"]
	if n := ev.GetAttributes()["zone_name"]; n != "" && n != zone {
		zone += " (" + n + ")"
	}
	return []string{e.when(ev.GetTime()), ev.GetVehicleId(), ev.GetKind(), orDash(zone), num(ev.GetSpeedKmh(), 0), sortedMap(attrs)}
}

// zoneSettings are create's flags beyond the geometry.
type zoneSettings struct {
	name, alert, days, hours, tz *string
	speed, dwell                 *float64
	tags, vehicles, groups       multiFlag
}

func zoneFlags(fs *flag.FlagSet) *zoneSettings {
	z := &zoneSettings{
		name:  fs.String("name", "", "display name"),
		alert: fs.String("alert", "", "which events it raises: "+enumNames(fleetv1.ZoneAlert_value, "ZONE_ALERT_")+" (default enter_exit)"),
		speed: fs.Float64("speed-limit", 0, "speed limit inside in km/h (0 = none)"),
		dwell: fs.Float64("dwell-minutes", 0, "with --alert dwell: minutes inside before a dwell event"),
		days:  fs.String("days", "", "schedule: days the zone is active, e.g. mon-fri or mon,wed,sat (default every day)"),
		hours: fs.String("hours", "", "schedule: active hours HH:MM-HH:MM, local to --tz (default all day)"),
		tz:    fs.String("tz", "", "schedule: IANA time zone, e.g. Europe/Berlin (default UTC)"),
	}
	fs.Var(&z.tags, "tag", "tag (repeatable)")
	fs.Var(&z.vehicles, "vehicle", "only this vehicle (repeatable; default every vehicle)")
	fs.Var(&z.groups, "group", "only vehicles of this group (repeatable)")
	return z
}

var weekdays = map[string]int32{"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}

// parseDays reads "mon-fri", "sat,sun" or "mon,wed-fri".
func parseDays(s string) ([]int32, error) {
	var out []int32
	for _, part := range strings.Split(strings.ToLower(s), ",") {
		a, b, isRange := strings.Cut(strings.TrimSpace(part), "-")
		from, ok1 := weekdays[a]
		to, ok2 := from, true
		if isRange {
			to, ok2 = weekdays[b]
		}
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("--days %q: want days such as mon-fri or sat,sun", s)
		}
		for d := from; ; d = (d + 1) % 7 {
			out = append(out, d)
			if d == to {
				break
			}
		}
	}
	return out, nil
}

func (z *zoneSettings) apply(zone *fleetv1.Zone) error {
	zone.Name, zone.SpeedLimitKmh, zone.DwellMinutes = *z.name, *z.speed, *z.dwell
	zone.Tags, zone.VehicleIds, zone.GroupIds = z.tags, z.vehicles, z.groups
	if *z.alert != "" {
		v, ok := enumValue(fleetv1.ZoneAlert_value, "ZONE_ALERT_", *z.alert)
		if !ok {
			return usageErr("unknown --alert %q (%s)", *z.alert, enumNames(fleetv1.ZoneAlert_value, "ZONE_ALERT_"))
		}
		zone.Alert = fleetv1.ZoneAlert(v)
	}
	if *z.days != "" || *z.hours != "" || *z.tz != "" {
		s := &fleetv1.ZoneSchedule{TimeZone: *z.tz}
		if *z.days != "" {
			d, err := parseDays(*z.days)
			if err != nil {
				return usageErr("%v", err)
			}
			s.DaysOfWeek = d
		}
		if *z.hours != "" {
			a, b, ok := strings.Cut(*z.hours, "-")
			if !ok {
				return usageErr("--hours %q: want HH:MM-HH:MM", *z.hours)
			}
			s.StartTime, s.EndTime = strings.TrimSpace(a), strings.TrimSpace(b)
		}
		zone.Schedule = s
	}
	return nil
}

// geojsonZones reads a GeoJSON file ("-" for stdin): a geometry or a Feature is one zone,
// a FeatureCollection one zone per feature (id from the feature's id or its properties'
// "id", name from properties.name).
func geojsonZones(path string, stdin io.Reader) ([]*fleetv1.Zone, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(io.LimitReader(stdin, 64<<20))
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	var doc struct {
		Type     string            `json:"type"`
		Features []json.RawMessage `json:"features"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: not JSON: %w", path, err)
	}
	if doc.Type != "FeatureCollection" {
		return []*fleetv1.Zone{{Geojson: string(data)}}, nil
	}
	var zones []*fleetv1.Zone
	for i, raw := range doc.Features {
		var f struct {
			ID         any            `json:"id"`
			Properties map[string]any `json:"properties"`
		}
		if err := json.Unmarshal(raw, &f); err != nil {
			return nil, fmt.Errorf("%s: feature %d: %w", path, i, err)
		}
		z := &fleetv1.Zone{Geojson: string(raw)}
		if f.ID != nil {
			z.ZoneId = fmt.Sprint(f.ID)
		} else if id, ok := f.Properties["id"].(string); ok {
			z.ZoneId = id
		}
		if n, ok := f.Properties["name"].(string); ok {
			z.Name = n
		}
		if r, ok := f.Properties["radius_m"].(float64); ok {
			z.RadiusM = r
		}
		if b, ok := f.Properties["buffer_m"].(float64); ok {
			z.BufferM = b
		}
		zones = append(zones, z)
	}
	if len(zones) == 0 {
		return nil, fmt.Errorf("%s: the FeatureCollection has no features", path)
	}
	return zones, nil
}

func runZones(ctx context.Context, e *env, args []string) error {
	client := fleetv1.NewGeofenceServiceClient(e.conn)
	oneID := func(fs *flag.FlagSet, args []string, what string) (string, error) {
		pos, err := e.parse(fs, args)
		if err != nil {
			return "", err
		}
		if len(pos) != 1 {
			return "", usageErr("one %s", what)
		}
		return pos[0], nil
	}
	return e.dispatch(ctx, args, []sub{
		{name: "list", args: "[--tag T]", summary: "every zone (also: fleetctl zones)",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				tag := fs.String("tag", "", "only zones with this tag")
				if _, err := e.noPos(fs, args); err != nil {
					return err
				}
				resp, err := client.ListZones(ctx, &fleetv1.ListZonesRequest{Tag: *tag})
				if err != nil {
					return err
				}
				return renderZones(e, resp.GetZones())
			}},
		{name: "show", args: "ID", summary: "one zone in detail",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				id, err := oneID(fs, args, "zone id")
				if err != nil {
					return err
				}
				resp, err := client.GetZone(ctx, &fleetv1.GetZoneRequest{ZoneId: id})
				if err != nil {
					return err
				}
				return renderZone(e, resp.GetZone())
			}},
		{name: "create", args: "[ID] (--geojson FILE | --circle LAT,LON --radius M) [--buffer M] [--name N] [--alert A] [--speed-limit K] [--tag T]... [--vehicle V]... [--group G]... [--days D --hours H --tz Z]",
			summary: "create zones: from a GeoJSON file (a geometry, a Feature, or a FeatureCollection: one zone per feature; - reads stdin) or a circle",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				file := fs.String("geojson", "", "GeoJSON file (- for stdin)")
				circle := fs.String("circle", "", "centre LAT,LON of a circular zone")
				radius := fs.Float64("radius", 0, "circle radius in metres")
				buffer := fs.Float64("buffer", 0, "corridor half-width in metres, for a LineString")
				settings := zoneFlags(fs)
				pos, err := e.parse(fs, args)
				if err != nil {
					return err
				}
				if len(pos) > 1 {
					return usageErr("at most one zone id")
				}
				var zones []*fleetv1.Zone
				switch {
				case (*file == "") == (*circle == ""):
					return usageErr("give --geojson FILE or --circle LAT,LON --radius M")
				case *circle != "":
					lat, lon, err := latLng(*circle)
					if err != nil {
						return usageErr("--circle %v", err)
					}
					if *radius <= 0 {
						return usageErr("--circle needs --radius in metres")
					}
					zones = []*fleetv1.Zone{{Geojson: fmt.Sprintf(`{"type":"Point","coordinates":[%s,%s]}`, num(lon, 7), num(lat, 7)), RadiusM: *radius}}
				default:
					if zones, err = geojsonZones(*file, os.Stdin); err != nil {
						return err
					}
				}
				if len(pos) == 1 {
					if len(zones) > 1 {
						return usageErr("a zone id names one zone; the file holds %d (they take their ids from the features)", len(zones))
					}
					zones[0].ZoneId = pos[0]
				}
				var created []*fleetv1.Zone
				for _, z := range zones {
					name := z.GetName()
					if err := settings.apply(z); err != nil {
						return err
					}
					if z.Name == "" {
						z.Name = name
					}
					if z.Name == "" {
						z.Name = z.GetZoneId() // the API wants a name; the id is the best one at hand
					}
					if *buffer > 0 {
						z.BufferM = *buffer
					}
					resp, err := client.CreateZone(ctx, &fleetv1.CreateZoneRequest{Zone: z})
					if err != nil {
						if len(zones) > 1 {
							fmt.Fprintf(e.stderr, "zone %q failed; %d of %d zones created before it\n", z.GetZoneId(), len(created), len(zones))
							_ = renderZones(e, created)
						}
						return err
					}
					created = append(created, resp.GetZone())
				}
				return renderZones(e, created)
			}},
		{name: "delete", args: "ID", summary: "delete a zone (vehicles inside are forgotten without an exit event)",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				id, err := oneID(fs, args, "zone id")
				if err != nil {
					return err
				}
				if _, err := client.DeleteZone(ctx, &fleetv1.DeleteZoneRequest{ZoneId: id}); err != nil {
					return err
				}
				fmt.Fprintf(e.stderr, "zone %s deleted\n", id)
				return nil
			}},
		{name: "occupants", args: "ID", summary: "the vehicles inside a zone now",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				id, err := oneID(fs, args, "zone id")
				if err != nil {
					return err
				}
				resp, err := client.VehiclesInZone(ctx, &fleetv1.VehiclesInZoneRequest{ZoneId: id})
				if err != nil {
					return err
				}
				if e.json() {
					return e.emit(resp)
				}
				t := e.table("VEHICLE")
				for _, v := range resp.GetVehicleIds() {
					t.row(v)
				}
				if err := t.flush(); err != nil {
					return err
				}
				if e.format == "table" {
					fmt.Fprintf(e.out(), "%d vehicles in %s\n", len(resp.GetVehicleIds()), id)
				}
				return nil
			}},
		{name: "of", args: "VEHICLE", summary: "the zones a vehicle is inside now",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				id, err := oneID(fs, args, "vehicle id")
				if err != nil {
					return err
				}
				resp, err := client.ZonesForVehicle(ctx, &fleetv1.ZonesForVehicleRequest{VehicleId: id})
				if err != nil {
					return err
				}
				if e.json() {
					for _, m := range resp.GetZones() {
						if err := e.emit(m); err != nil {
							return err
						}
					}
					return nil
				}
				t := e.table("ZONE", "NAME", "INSIDE SINCE")
				for _, m := range resp.GetZones() {
					t.row(m.GetZoneId(), orDash(m.GetZoneName()), e.when(m.GetSince()))
				}
				return t.flush()
			}},
		{name: "at", args: "LAT,LON", summary: "the zones containing a point",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				p, err := oneID(fs, args, "point LAT,LON")
				if err != nil {
					return err
				}
				lat, lon, err := latLng(p)
				if err != nil {
					return usageErr("%v", err)
				}
				resp, err := client.ZonesAtPoint(ctx, &fleetv1.ZonesAtPointRequest{Point: &fleetv1.LatLng{Latitude: lat, Longitude: lon}})
				if err != nil {
					return err
				}
				return renderZones(e, resp.GetZones())
			}},
		{name: "events", args: "[--zone Z] [--vehicle V] [--from T] [--to T] [--limit N] [--follow]", summary: "zone events (enter, exit, dwell, crossed, overspeed) of a zone or a vehicle; --follow streams them",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				zone := fs.String("zone", "", "only this zone")
				vehicle := fs.String("vehicle", "", "only this vehicle")
				from, to := e.period(fs)
				limit := fs.Int("limit", 1000, "most events (at most 10000)")
				follow := fs.Bool("follow", false, "stream events as they happen (every zone and vehicle unless filtered)")
				if _, err := e.noPos(fs, args); err != nil {
					return err
				}
				if *follow {
					stream, err := client.WatchZoneEvents(ctx, &fleetv1.WatchZoneEventsRequest{ZoneId: *zone, VehicleId: *vehicle})
					if err != nil {
						return err
					}
					var st *streamTable
					for {
						m, err := stream.Recv()
						if err != nil {
							if ctx.Err() != nil {
								return nil
							}
							return err
						}
						if e.json() {
							if err := e.emit(m.GetEvent()); err != nil {
								return err
							}
							continue
						}
						if st == nil {
							st = e.streamTable(zoneEventHeader, []int{23, 12, 17, 20, 4})
						}
						if err := st.row(zoneEventCells(e, m.GetEvent())...); err != nil {
							return err
						}
					}
				}
				if *zone == "" && *vehicle == "" {
					return usageErr("--zone or --vehicle (or both), or --follow")
				}
				resp, err := client.ListZoneEvents(ctx, &fleetv1.ListZoneEventsRequest{ZoneId: *zone, VehicleId: *vehicle, From: from.ts(), To: to.ts(), Limit: int32(*limit)})
				if err != nil {
					return err
				}
				if err := renderZoneEvents(e, resp.GetEvents()); err != nil {
					return err
				}
				if resp.GetTruncated() {
					fmt.Fprintf(e.stderr, "more events matched than --limit %d; narrow --from/--to\n", *limit)
				}
				return nil
			}},
		{name: "export", args: "[--tag T]", summary: "every zone as one GeoJSON FeatureCollection",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				tag := fs.String("tag", "", "only zones with this tag")
				if _, err := e.noPos(fs, args); err != nil {
					return err
				}
				resp, err := client.ExportZones(ctx, &fleetv1.ExportZonesRequest{Tag: *tag})
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(e.out(), resp.GetGeojson())
				return err
			}},
	}, "list")
}
