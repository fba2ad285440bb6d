package geofence

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/apierr"
	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/grpcserver"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
	"github.com/fleetwire/fleetwire/services/geofence/fence"
)

// This file is the gRPC edge: it converts between fleet.v1 messages and the service's
// types (zone lifecycle and queries live in zones.go) and maps errors to status codes
// through errTable.

type grpcServer struct {
	fleetv1.UnimplementedGeofenceServiceServer
	s *Service
}

var _ fleetv1.GeofenceServiceServer = (*grpcServer)(nil)

// Register registers fleet.v1.GeofenceService on gs.
func (s *Service) Register(gs *grpc.Server) {
	fleetv1.RegisterGeofenceServiceServer(gs, &grpcServer{s: s})
}

var alertToProto = map[fence.Alert]fleetv1.ZoneAlert{
	fence.AlertEnter:          fleetv1.ZoneAlert_ZONE_ALERT_ENTER,
	fence.AlertExit:           fleetv1.ZoneAlert_ZONE_ALERT_EXIT,
	fence.AlertBoth:           fleetv1.ZoneAlert_ZONE_ALERT_ENTER_EXIT,
	fence.AlertDwell:          fleetv1.ZoneAlert_ZONE_ALERT_DWELL,
	fence.AlertMustStayInside: fleetv1.ZoneAlert_ZONE_ALERT_MUST_STAY_INSIDE,
}

var eventKindToProto = map[fence.EventKind]fleetv1.ZoneEventKind{
	fence.Enter:     fleetv1.ZoneEventKind_ZONE_EVENT_KIND_ENTER,
	fence.Exit:      fleetv1.ZoneEventKind_ZONE_EVENT_KIND_EXIT,
	fence.Dwell:     fleetv1.ZoneEventKind_ZONE_EVENT_KIND_DWELL,
	fence.Crossed:   fleetv1.ZoneEventKind_ZONE_EVENT_KIND_CROSSED,
	fence.Overspeed: fleetv1.ZoneEventKind_ZONE_EVENT_KIND_OVERSPEED,
}

// specFromProto converts a request's zone; it validates only what the conversion needs
// (fence.Compile checks the rest).
func specFromProto(z *fleetv1.Zone) (fence.Spec, error) {
	if z == nil {
		return fence.Spec{}, fmt.Errorf("%w: zone is required", ErrInvalid)
	}
	spec := fence.Spec{
		ID: z.GetZoneId(), Name: z.GetName(), GeoJSON: z.GetGeojson(),
		RadiusM: z.GetRadiusM(), BufferM: z.GetBufferM(),
		Tags: z.GetTags(), Vehicles: z.GetVehicleIds(), Groups: z.GetGroupIds(),
		SpeedLimitKmh: z.GetSpeedLimitKmh(), DwellMinutes: z.GetDwellMinutes(),
	}
	switch z.GetAlert() {
	case fleetv1.ZoneAlert_ZONE_ALERT_UNSPECIFIED:
		spec.Alert = fence.AlertBoth
	default:
		for a, p := range alertToProto {
			if p == z.GetAlert() {
				spec.Alert = a
			}
		}
		if spec.Alert == "" {
			return spec, fmt.Errorf("%w: unknown alert %d", fence.ErrAlert, z.GetAlert())
		}
	}
	if p := z.GetAlertPolicy(); p != nil {
		spec.AlertPolicy = &fence.AlertPolicy{Raise: []fence.EventKind{}}
	raise:
		for _, pk := range p.GetRaise() {
			for k, v := range eventKindToProto {
				if v == pk {
					if !slices.Contains(spec.AlertPolicy.Raise, k) {
						spec.AlertPolicy.Raise = append(spec.AlertPolicy.Raise, k)
					}
					continue raise
				}
			}
			return spec, fmt.Errorf("%w: alert policy names unknown event kind %d", fence.ErrAlert, pk)
		}
	}
	if sc := z.GetSchedule(); sc != nil {
		s := &fence.Schedule{Start: sc.GetStartTime(), End: sc.GetEndTime(), TimeZone: sc.GetTimeZone()}
		for _, d := range sc.GetDaysOfWeek() {
			if d < 0 || d > 6 {
				return spec, fmt.Errorf("%w: day of week %d outside 0 (Sunday)..6 (Saturday)", fence.ErrSchedule, d)
			}
			s.Days = append(s.Days, time.Weekday(d))
		}
		spec.Schedule = s
	}
	return spec, nil
}

func zoneToProto(z *fence.Zone) *fleetv1.Zone {
	out := &fleetv1.Zone{
		ZoneId: z.ID, Name: z.Name, Geojson: z.GeoJSON, RadiusM: z.RadiusM, BufferM: z.BufferM,
		Tags: z.Tags, VehicleIds: z.Vehicles, GroupIds: z.Groups,
		SpeedLimitKmh: z.SpeedLimitKmh, Alert: alertToProto[z.Alert], DwellMinutes: z.DwellMinutes,
		Shape: z.Shape, Revision: z.Revision,
	}
	if !z.UpdateTime.IsZero() {
		out.UpdateTime = timestamppb.New(z.UpdateTime)
	}
	if p := z.AlertPolicy; p != nil {
		out.AlertPolicy = &fleetv1.ZoneAlertPolicy{}
		for _, k := range p.Raise {
			out.AlertPolicy.Raise = append(out.AlertPolicy.Raise, eventKindToProto[k])
		}
	}
	if sc := z.Schedule; sc != nil {
		ps := &fleetv1.ZoneSchedule{StartTime: sc.Start, EndTime: sc.End, TimeZone: sc.TimeZone}
		for _, d := range sc.Days {
			ps.DaysOfWeek = append(ps.DaysOfWeek, int32(d))
		}
		out.Schedule = ps
	}
	return out
}

// errTable is the edge's whole error mapping (pkg/grpcserver.ErrorTable's rule).
var errTable = grpcserver.ErrorTable{Service: Source, Rules: []grpcserver.ErrorRule{
	{Err: fence.ErrInvalidZone, Code: codes.InvalidArgument},
	{Err: ErrInvalid, Code: codes.InvalidArgument},
	{Err: ErrZoneNotFound, Code: codes.NotFound},
	{Err: ErrZoneExists, Code: codes.AlreadyExists},
	{Err: ErrZoneChanged, Code: codes.Aborted},
}}

// grpcError converts a domain error for the client.
func (s *Service) grpcError(err error) error { return errTable.Status(s.log, err) }

func (g *grpcServer) CreateZone(ctx context.Context, req *fleetv1.CreateZoneRequest) (*fleetv1.CreateZoneResponse, error) {
	spec, err := specFromProto(req.GetZone())
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	z, err := g.s.CreateZone(ctx, spec)
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	return &fleetv1.CreateZoneResponse{Zone: zoneToProto(z)}, nil
}

func (g *grpcServer) UpdateZone(ctx context.Context, req *fleetv1.UpdateZoneRequest) (*fleetv1.UpdateZoneResponse, error) {
	spec, err := specFromProto(req.GetZone())
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	z, err := g.s.UpdateZone(ctx, spec, req.GetExpectedRevision())
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	return &fleetv1.UpdateZoneResponse{Zone: zoneToProto(z)}, nil
}

func (g *grpcServer) DeleteZone(ctx context.Context, req *fleetv1.DeleteZoneRequest) (*fleetv1.DeleteZoneResponse, error) {
	if err := g.s.DeleteZone(ctx, req.GetZoneId()); err != nil {
		return nil, g.s.grpcError(err)
	}
	return &fleetv1.DeleteZoneResponse{}, nil
}

func (g *grpcServer) GetZone(_ context.Context, req *fleetv1.GetZoneRequest) (*fleetv1.GetZoneResponse, error) {
	z, err := g.s.Zone(req.GetZoneId())
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	return &fleetv1.GetZoneResponse{Zone: zoneToProto(z)}, nil
}

func (g *grpcServer) ListZones(_ context.Context, req *fleetv1.ListZonesRequest) (*fleetv1.ListZonesResponse, error) {
	resp := &fleetv1.ListZonesResponse{}
	for _, z := range g.s.TaggedZones(req.GetTag()) {
		resp.Zones = append(resp.Zones, zoneToProto(z))
	}
	return resp, nil
}

func (g *grpcServer) ExportZones(_ context.Context, req *fleetv1.ExportZonesRequest) (*fleetv1.ExportZonesResponse, error) {
	b, err := fence.ExportFeatureCollection(g.s.TaggedZones(req.GetTag()))
	if err != nil {
		return nil, g.s.grpcError(fmt.Errorf("export: %w", err))
	}
	return &fleetv1.ExportZonesResponse{Geojson: string(b)}, nil
}

func (g *grpcServer) VehiclesInZone(ctx context.Context, req *fleetv1.VehiclesInZoneRequest) (*fleetv1.VehiclesInZoneResponse, error) {
	vs, err := g.s.VehiclesInZone(ctx, req.GetZoneId())
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	return &fleetv1.VehiclesInZoneResponse{VehicleIds: vs}, nil
}

func (g *grpcServer) ZonesForVehicle(ctx context.Context, req *fleetv1.ZonesForVehicleRequest) (*fleetv1.ZonesForVehicleResponse, error) {
	ms, err := g.s.ZonesForVehicle(ctx, req.GetVehicleId())
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	resp := &fleetv1.ZonesForVehicleResponse{}
	for _, m := range ms {
		resp.Zones = append(resp.Zones, &fleetv1.ZoneMembership{ZoneId: m.Zone.ID, ZoneName: m.Zone.Name, Since: timestamppb.New(m.Since)})
	}
	return resp, nil
}

func (g *grpcServer) ZonesAtPoint(_ context.Context, req *fleetv1.ZonesAtPointRequest) (*fleetv1.ZonesAtPointResponse, error) {
	p := req.GetPoint()
	if p == nil {
		return nil, g.s.grpcError(fmt.Errorf("%w: point is required", ErrInvalid))
	}
	zones, err := g.s.ZonesAt(p.GetLatitude(), p.GetLongitude())
	if err != nil {
		return nil, g.s.grpcError(err)
	}
	resp := &fleetv1.ZonesAtPointResponse{}
	for _, z := range zones {
		resp.Zones = append(resp.Zones, zoneToProto(z))
	}
	return resp, nil
}

// eventFilter returns the event-stream subject for the request's vehicle (or all).
func eventFilter(vehicle string) string {
	if vehicle == "" {
		return bus.EventSourceFilter(Source)
	}
	return bus.EventFilter(Source, "*", vehicle)
}

func checkFilters(zone, vehicle string, needOne bool) error {
	if needOne && zone == "" && vehicle == "" {
		return fmt.Errorf("%w: zone_id or vehicle_id is required", ErrInvalid)
	}
	if zone != "" {
		if err := fence.ValidID(zone); err != nil {
			return err
		}
	}
	if vehicle != "" {
		if err := telemetry.ValidVehicleID(vehicle); err != nil {
			return fmt.Errorf("%w: vehicle_id: %w", ErrInvalid, err)
		}
	}
	return nil
}

func (g *grpcServer) ListZoneEvents(ctx context.Context, req *fleetv1.ListZoneEventsRequest) (*fleetv1.ListZoneEventsResponse, error) {
	zone, vehicle := req.GetZoneId(), req.GetVehicleId()
	if err := checkFilters(zone, vehicle, true); err != nil {
		return nil, g.s.grpcError(err)
	}
	to := time.Now()
	if req.GetTo() != nil {
		to = req.GetTo().AsTime()
	}
	limit := int(req.GetLimit())
	if limit <= 0 || limit > g.s.cfg.MaxListEvents {
		limit = g.s.cfg.MaxListEvents
	}
	cc := jetstream.OrderedConsumerConfig{FilterSubjects: []string{eventFilter(vehicle)}, DeliverPolicy: jetstream.DeliverAllPolicy}
	if req.GetFrom() != nil {
		from := req.GetFrom().AsTime()
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &from
	}
	cons, err := g.s.b.OrderedConsumer(ctx, bus.EventStream, cc)
	if err != nil {
		return nil, g.s.grpcError(fmt.Errorf("read events: %w", apierr.Unavailable("nats", err)))
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, g.s.grpcError(fmt.Errorf("read events: %w", apierr.Unavailable("nats", err)))
	}
	resp := &fleetv1.ListZoneEventsResponse{}
	pending := info.NumPending
	for pending > 0 {
		// Ask for no more than is known to be there: a fetch for more than the stream holds
		// waits out its whole timeout for messages that will never come (every call took
		// at least a second). The timeout only bounds a server that does not answer.
		mb, err := cons.Fetch(int(min(pending, 256)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, g.s.grpcError(fmt.Errorf("read events: %w", apierr.Unavailable("nats", err)))
		}
		got := 0
		for m := range mb.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			pending = md.NumPending
			if !md.Timestamp.Before(to) {
				pending = 0
				break
			}
			var e fleetv1.Event
			if err := proto.Unmarshal(m.Data(), &e); err != nil {
				continue
			}
			if zone != "" && e.GetAttributes()["zone_id"] != zone {
				continue
			}
			if len(resp.Events) == limit {
				resp.Truncated = true
				pending = 0
				break
			}
			resp.Events = append(resp.Events, &e)
		}
		if got == 0 {
			break
		}
	}
	return resp, nil
}

// watchBuffer is how many events a WatchZoneEvents stream holds for a slow reader.
const watchBuffer = 1024

func (g *grpcServer) WatchZoneEvents(req *fleetv1.WatchZoneEventsRequest, stream grpc.ServerStreamingServer[fleetv1.WatchZoneEventsResponse]) error {
	zone, vehicle := req.GetZoneId(), req.GetVehicleId()
	if err := checkFilters(zone, vehicle, false); err != nil {
		return g.s.grpcError(err)
	}
	// A plain subscription sees every instance's events as they are stored. They wait for
	// the client in a buffer of watchBuffer events; a client further behind than that is
	// told it lagged (with the time of the last event it received, to resume from with
	// ListZoneEvents) instead of the server holding ever more for it.
	ch := make(chan *nats.Msg, watchBuffer)
	lagged := make(chan struct{})
	var once sync.Once
	var self atomic.Pointer[nats.Subscription]
	sub, err := g.s.b.Subscribe(eventFilter(vehicle), func(m *nats.Msg) {
		select {
		case ch <- m:
		default:
			once.Do(func() {
				close(lagged)
				if s := self.Load(); s != nil {
					_ = s.Unsubscribe() // nothing more is delivered for this reader
				}
			})
		}
	})
	if err != nil {
		return g.s.grpcError(fmt.Errorf("watch: %w", apierr.Unavailable("nats", err)))
	}
	self.Store(sub)
	defer func() { _ = sub.Unsubscribe() }()
	if err := g.s.b.Flush(5 * time.Second); err != nil {
		return g.s.grpcError(fmt.Errorf("watch: %w", apierr.Unavailable("nats", err)))
	}
	// Tell the client the subscription is live (headers), so it knows later events reach it.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	resume := time.Now()
	for {
		select {
		case <-lagged: // before anything still buffered: the reader is told at once
			_ = sub.Unsubscribe()
			cursor := resume.UTC().Format(time.RFC3339Nano)
			return grpcserver.Lagged(stream.Context(), cursor,
				"the reader fell more than "+strconv.Itoa(watchBuffer)+" events behind; call ListZoneEvents with from = the trailer's "+grpcserver.ResumeCursorKey+" ("+cursor+"), then watch again")
		default:
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-lagged:
			continue
		case m := <-ch:
			var e fleetv1.Event
			if err := proto.Unmarshal(m.Data, &e); err != nil {
				continue
			}
			if zone != "" && e.GetAttributes()["zone_id"] != zone {
				continue
			}
			if err := stream.Send(&fleetv1.WatchZoneEventsResponse{Event: &e}); err != nil {
				return err
			}
			if e.GetPublishTime() != nil {
				resume = e.GetPublishTime().AsTime()
			}
		}
	}
}
