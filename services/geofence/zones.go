package geofence

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetwire/fleetwire/pkg/apierr"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/services/geofence/fence"
)

// Zone lifecycle and queries: what every edge (gRPC today, a console tomorrow) asks of
// the service. Zones are written to the key-value bucket, whose watch (bus.go) installs
// them in every instance's index; a write returns once this instance's index has it.

// Errors the service returns; the edges map them to their codes. Invalid zone
// definitions wrap fence.ErrInvalidZone.
var (
	ErrInvalid      = errors.New("invalid argument")
	ErrZoneNotFound = errors.New("zone not found")
	ErrZoneExists   = errors.New("zone exists")
	// ErrZoneChanged: the zone is not at the revision the caller read; read it again.
	ErrZoneChanged = errors.New("zone changed")
)

func newZoneID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "z-" + hex.EncodeToString(b[:])
}

// compileForWrite validates spec and encodes it for the bucket.
func compileForWrite(spec fence.Spec) (*fence.Zone, []byte, error) {
	spec.UpdateTime = time.Now().UTC()
	z, err := fence.Compile(spec)
	if err != nil {
		return nil, nil, err
	}
	data, err := json.Marshal(z.Spec)
	if err != nil {
		return nil, nil, fmt.Errorf("encode zone %s: %w", z.ID, err)
	}
	return z, data, nil
}

// CreateZone stores a new zone; an empty ID gets a generated one.
func (s *Service) CreateZone(ctx context.Context, spec fence.Spec) (*fence.Zone, error) {
	if spec.ID == "" {
		spec.ID = newZoneID()
	}
	z, data, err := compileForWrite(spec)
	if err != nil {
		return nil, err
	}
	kv, err := s.bucket(ctx)
	if err != nil {
		return nil, apierr.Unavailable("nats", err)
	}
	rev, err := kv.Create(ctx, z.ID, data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil, fmt.Errorf("zone %s: %w", z.ID, ErrZoneExists)
	}
	if err != nil {
		return nil, fmt.Errorf("store zone %s: %w", z.ID, apierr.Unavailable("nats", err))
	}
	z.Revision = rev
	s.awaitZone(ctx, z.ID, rev, false)
	return z, nil
}

// UpdateZone replaces a zone's definition. A non-zero expectedRevision must be the
// zone's current revision (optimistic concurrency); ErrZoneChanged otherwise.
func (s *Service) UpdateZone(ctx context.Context, spec fence.Spec, expectedRevision uint64) (*fence.Zone, error) {
	if err := fence.ValidID(spec.ID); err != nil {
		return nil, err
	}
	z, data, err := compileForWrite(spec)
	if err != nil {
		return nil, err
	}
	kv, err := s.bucket(ctx)
	if err != nil {
		return nil, apierr.Unavailable("nats", err)
	}
	cur, err := kv.Get(ctx, z.ID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("zone %s: %w", z.ID, ErrZoneNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read zone %s: %w", z.ID, apierr.Unavailable("nats", err))
	}
	expect := cur.Revision()
	if expectedRevision != 0 && expectedRevision != expect {
		return nil, fmt.Errorf("zone %s is at revision %d, not %d: %w", z.ID, expect, expectedRevision, ErrZoneChanged)
	}
	rev, err := kv.Update(ctx, z.ID, data, expect)
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return nil, fmt.Errorf("zone %s changed concurrently; read it and retry: %w", z.ID, ErrZoneChanged)
		}
		return nil, fmt.Errorf("store zone %s: %w", z.ID, apierr.Unavailable("nats", err))
	}
	z.Revision = rev
	s.awaitZone(ctx, z.ID, rev, false)
	return z, nil
}

// DeleteZone removes a zone and the memberships in it.
func (s *Service) DeleteZone(ctx context.Context, id string) error {
	if err := fence.ValidID(id); err != nil {
		return err
	}
	kv, err := s.bucket(ctx)
	if err != nil {
		return apierr.Unavailable("nats", err)
	}
	if _, err := kv.Get(ctx, id); errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("zone %s: %w", id, ErrZoneNotFound)
	} else if err != nil {
		return fmt.Errorf("read zone %s: %w", id, apierr.Unavailable("nats", err))
	}
	if err := kv.Delete(ctx, id); err != nil {
		return fmt.Errorf("delete zone %s: %w", id, apierr.Unavailable("nats", err))
	}
	if err := s.st.ForgetZone(ctx, id); err != nil {
		return fmt.Errorf("forget zone %s: %w", id, err)
	}
	s.awaitZone(ctx, id, 0, true)
	return nil
}

// Zone returns the zone with id from this instance's index.
func (s *Service) Zone(id string) (*fence.Zone, error) {
	if err := fence.ValidID(id); err != nil {
		return nil, err
	}
	z, ok := s.Zones().Zone(id)
	if !ok {
		return nil, fmt.Errorf("zone %s: %w", id, ErrZoneNotFound)
	}
	return z, nil
}

// TaggedZones lists the zones carrying tag (every zone for "").
func (s *Service) TaggedZones(tag string) []*fence.Zone {
	zones := s.Zones().Zones()
	if tag == "" {
		return zones
	}
	var out []*fence.Zone
	for _, z := range zones {
		if slices.Contains(z.Tags, tag) {
			out = append(out, z)
		}
	}
	return out
}

// VehiclesInZone lists the vehicles inside zone id.
func (s *Service) VehiclesInZone(ctx context.Context, id string) ([]string, error) {
	z, err := s.Zone(id)
	if err != nil {
		return nil, err
	}
	return s.st.VehiclesInZone(ctx, z.ID)
}

// ZoneMembership is a vehicle's presence in a zone.
type ZoneMembership struct {
	Zone  *fence.Zone
	Since time.Time
}

// ZonesForVehicle lists the zones vehicle is in, skipping zones deleted since.
func (s *Service) ZonesForVehicle(ctx context.Context, vehicle string) ([]ZoneMembership, error) {
	if err := telemetry.ValidVehicleID(vehicle); err != nil {
		return nil, fmt.Errorf("%w: vehicle_id: %w", ErrInvalid, err)
	}
	states, err := s.st.Load(ctx, []string{vehicle})
	if err != nil {
		return nil, fmt.Errorf("load vehicle %s: %w", vehicle, err)
	}
	ix := s.Zones()
	var out []ZoneMembership
	for _, m := range states[vehicle].Zones {
		if z, ok := ix.Zone(m.ZoneID); ok {
			out = append(out, ZoneMembership{Zone: z, Since: m.Since})
		}
	}
	return out, nil
}

// ZonesAt lists the zones containing the point.
func (s *Service) ZonesAt(lat, lon float64) ([]*fence.Zone, error) {
	r := telemetry.Record{Lat: lat, Lon: lon, FixValid: true}
	if err := r.CheckPosition(); err != nil && !errors.Is(err, telemetry.ErrNullIsland) {
		return nil, fmt.Errorf("%w: point: %w", ErrInvalid, err)
	}
	return s.Zones().At(lat, lon), nil
}
