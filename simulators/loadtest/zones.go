package loadtest

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/fleetwire/fleetwire/pkg/geo"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
	"github.com/fleetwire/fleetwire/simulators/fleetsim"
)

// Zone events are measured the way vehicle updates are: from the sent_time of the packet
// whose record caused the event (the event quotes that record's device time) to the
// moment the event arrives on a gRPC WatchZoneEvents stream.

// zoneAreaM is the half-width of the square the zones tile: the simulated city's road
// grid spans about ±6 km around its centre.
const zoneAreaM = 6000

// zoneFill is the share of each tile's side a zone covers: the gaps between zones make a
// vehicle leave one zone before it enters the next, so both exits and enters occur.
const zoneFill = 0.9

// ZoneLayout returns n square zones tiling the simulated city around center, ids starting
// with prefix: a k×k grid (k = ⌈√n⌉) of tiles over ±6 km, the first n tiles in row order,
// each zone covering 90 % of its tile's side. Vehicles driving the grid's roads cross
// them all day.
func ZoneLayout(prefix string, n int, center geo.Point) []*fleetv1.Zone {
	if n <= 0 {
		return nil
	}
	if center == (geo.Point{}) {
		center = fleetsim.DefaultConfig().Center
	}
	k := int(math.Ceil(math.Sqrt(float64(n))))
	tile := 2 * zoneAreaM / float64(k)
	half := tile * zoneFill / 2
	mLat := 111_320.0
	mLon := 111_320.0 * math.Cos(center.Lat*math.Pi/180)
	zones := make([]*fleetv1.Zone, 0, n)
	for i := 0; i < n; i++ {
		row, col := i/k, i%k
		cx := -zoneAreaM + (float64(col)+0.5)*tile
		cy := -zoneAreaM + (float64(row)+0.5)*tile
		lon0, lon1 := center.Lon+(cx-half)/mLon, center.Lon+(cx+half)/mLon
		lat0, lat1 := center.Lat+(cy-half)/mLat, center.Lat+(cy+half)/mLat
		geojson := fmt.Sprintf(`{"type":"Polygon","coordinates":[[[%.7f,%.7f],[%.7f,%.7f],[%.7f,%.7f],[%.7f,%.7f],[%.7f,%.7f]]]}`,
			lon0, lat0, lon1, lat0, lon1, lat1, lon0, lat1, lon0, lat0)
		zones = append(zones, &fleetv1.Zone{
			ZoneId:  fmt.Sprintf("%sz%04d", prefix, i+1),
			Name:    fmt.Sprintf("load test zone %d", i+1),
			Geojson: geojson,
			Tags:    []string{"loadtest"},
			Alert:   fleetv1.ZoneAlert_ZONE_ALERT_ENTER_EXIT,
		})
	}
	return zones
}

// zonePrefix turns a vehicle prefix into a valid zone id prefix ([A-Za-z0-9_-]).
func zonePrefix(prefix string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, prefix)
}

// createZones creates the run's zones; the caller deletes them with deleteZones.
func (t *Tester) createZones(ctx context.Context) ([]string, error) {
	client := fleetv1.NewGeofenceServiceClient(t.grpc)
	var ids []string
	for _, z := range ZoneLayout(zonePrefix(t.cfg.Prefix), t.cfg.Zones, t.cfg.Center) {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := client.CreateZone(cctx, &fleetv1.CreateZoneRequest{Zone: z})
		cancel()
		if err != nil {
			return ids, fmt.Errorf("create zone %s: %w", z.GetZoneId(), err)
		}
		ids = append(ids, z.GetZoneId())
	}
	return ids, nil
}

// deleteZones removes what createZones made, even when the run was interrupted.
func (t *Tester) deleteZones(ctx context.Context, ids []string) {
	client := fleetv1.NewGeofenceServiceClient(t.grpc)
	ctx = context.WithoutCancel(ctx)
	for _, id := range ids {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if _, err := client.DeleteZone(dctx, &fleetv1.DeleteZoneRequest{ZoneId: id}); err != nil {
			t.log.Warn("delete load test zone", "zone", id, "err", err)
		}
		cancel()
	}
}

// watchZones follows WatchZoneEvents, reconnecting after errors, and feeds the current
// ledger.
func (t *Tester) watchZones(ctx context.Context) {
	client := fleetv1.NewGeofenceServiceClient(t.grpc)
	for ctx.Err() == nil {
		stream, err := client.WatchZoneEvents(ctx, &fleetv1.WatchZoneEventsRequest{})
		if err == nil {
			err = t.receiveZones(stream)
		}
		t.zoneWatching.Store(false)
		if ctx.Err() != nil {
			return
		}
		t.watchErrors.Add(1)
		t.log.Warn("WatchZoneEvents failed; reconnecting", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (t *Tester) receiveZones(stream grpc.ServerStreamingClient[fleetv1.WatchZoneEventsResponse]) error {
	// The server sends headers once its subscription is live: events after that reach us.
	if _, err := stream.Header(); err != nil {
		return err
	}
	t.zoneWatching.Store(true)
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		now := time.Now()
		l := t.current.Load()
		if l == nil {
			continue
		}
		ev := resp.GetEvent()
		var dev time.Time
		if ev.GetTime() != nil {
			dev = ev.GetTime().AsTime()
		}
		l.zoneEvent(ev.GetKind(), ev.GetVehicleId(), dev, now)
	}
}
