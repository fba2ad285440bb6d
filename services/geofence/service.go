// Package geofence is the geofence service: it keeps zones (distributed to every
// instance through a NATS key-value bucket), follows each vehicle's membership from its
// telemetry, publishes zone events to the event stream and answers the GeofenceService
// gRPC API. The engine itself (geometry, index, rules) is package fence.
//
// Files: service.go (configuration, the batch logic), bus.go (NATS: consumers, the zone
// bucket, event publishing), grpc.go (the gRPC edge), store.go (membership stores).
package geofence

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetwire/fleetwire/pkg/metrics"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/rejects"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/services/geofence/fence"
)

// Source is the service name in events, metrics and consumer names.
const Source = "geofence"

// DefaultZoneBucket is the NATS key-value bucket holding zone definitions.
const DefaultZoneBucket = "FLEET_ZONES"

// Config configures the service. Defaults are documented in docs/geofence.md.
type Config struct {
	// Partitions of the telemetry stream this instance consumes; nil means all.
	Partitions []int
	// Rebuild: membership lives in memory; re-read the retained stream at start.
	Rebuild bool
	// Rules are the membership rules (hysteresis, pass-through bounds, overspeed re-arm,
	// vehicle groups).
	Rules fence.Rules
	// ZoneBucket is the key-value bucket of zone definitions (default FLEET_ZONES).
	ZoneBucket string
	// Replicas is the zone bucket's replica count when this service creates it (default 1,
	// 3 in a NATS cluster).
	Replicas int
	// MaxBatch is the most messages handled at once per partition (default 512).
	MaxBatch int
	// MaxListEvents caps ListZoneEvents answers (default 10 000).
	MaxListEvents int
	// RecordTime bounds a record's device time against the time the stream stored it
	// (zero fields take telemetry's defaults, docs/protocol.md): a record outside them
	// cannot be placed in time and is refused, so one far-future record cannot make every
	// later one of its vehicle out of order.
	RecordTime telemetry.TimeBounds
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		Rules:         fence.DefaultRules(),
		ZoneBucket:    DefaultZoneBucket,
		MaxBatch:      512,
		MaxListEvents: 10_000,
	}
}

// Service is one geofence instance.
type Service struct {
	cfg     Config
	b       *bus.Bus
	st      Store
	log     *slog.Logger
	rej     *rejects.Counter
	started time.Time

	zones     atomic.Pointer[fence.Index]
	zonesMu   sync.Mutex    // guards zonesChg
	zonesChg  chan struct{} // closed and replaced whenever zones changes
	zonesOnce sync.Once
	ready     chan struct{} // closed once the bucket's zones are loaded

	kvMu sync.Mutex
	kv   zoneBucket

	events  *prometheus.CounterVec
	records prometheus.Counter
}

// New creates the service. It does not touch NATS until Run or a gRPC call.
func New(cfg Config, b *bus.Bus, st Store, log *slog.Logger, reg prometheus.Registerer) (*Service, error) {
	if b == nil || st == nil || log == nil {
		return nil, errors.New("geofence: bus, store and logger are required")
	}
	def := DefaultConfig()
	if cfg.ZoneBucket == "" {
		cfg.ZoneBucket = def.ZoneBucket
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = def.MaxBatch
	}
	if cfg.MaxListEvents <= 0 {
		cfg.MaxListEvents = def.MaxListEvents
	}
	if cfg.Rules.HysteresisM < 0 || cfg.Rules.ConfirmFixes < 0 {
		return nil, fmt.Errorf("geofence: negative hysteresis or confirm count")
	}
	if err := cfg.RecordTime.Validate(); err != nil {
		return nil, fmt.Errorf("geofence: %w", err)
	}
	cfg.RecordTime = cfg.RecordTime.WithDefaults()
	cfg.Rules = withRuleDefaults(cfg.Rules, def.Rules)
	s := &Service{
		cfg: cfg, b: b, st: st, log: log,
		rej:      rejects.New(Source, log, reg),
		started:  time.Now(),
		zonesChg: make(chan struct{}),
		ready:    make(chan struct{}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetwire_geofence_events_total", Help: "Zone events published, by kind.",
		}, []string{"kind"}),
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fleetwire_geofence_records_total", Help: "Position records evaluated against the zones.",
		}),
	}
	if err := metrics.Register(reg, s.events, s.records); err != nil {
		return nil, fmt.Errorf("geofence: %w", err)
	}
	s.zones.Store(fence.NewIndex(nil))
	return s, nil
}

// GroupDirectory is the vehicle registry's groups as geofence needs them. In a process it
// is pkg/auth's Groups, the JetStream key-value mirror tracking's registry writes.
type GroupDirectory interface {
	Of(vehicle string) []string
}

// UseGroups makes zones that apply to groups (group_ids) follow the registry's groups,
// so a zone for "vans" concerns the vehicles every other service calls vans; it replaces
// Config.Rules.Groups. Call before Run.
func (s *Service) UseGroups(d GroupDirectory) { s.cfg.Rules.GroupsOf = d.Of }

// Zones returns the current zone index (never nil).
func (s *Service) Zones() *fence.Index { return s.zones.Load() }

// setZones installs a new index and wakes whoever waits for a change.
func (s *Service) setZones(ix *fence.Index) {
	s.zones.Store(ix)
	s.zonesMu.Lock()
	close(s.zonesChg)
	s.zonesChg = make(chan struct{})
	s.zonesMu.Unlock()
}

func (s *Service) zonesChanged() <-chan struct{} {
	s.zonesMu.Lock()
	defer s.zonesMu.Unlock()
	return s.zonesChg
}

// withRuleDefaults fills the zero tunables of r from def (a zero ConfirmFixes means 1
// only when the hysteresis was set explicitly).
func withRuleDefaults(r, def fence.Rules) fence.Rules {
	if r.HysteresisM == 0 && r.ConfirmFixes == 0 {
		r.HysteresisM, r.ConfirmFixes = def.HysteresisM, def.ConfirmFixes
	}
	if r.ConfirmFixes <= 0 {
		r.ConfirmFixes = 1
	}
	if r.FarFactor <= 0 {
		r.FarFactor = def.FarFactor
	}
	if r.CrossMaxGap <= 0 {
		r.CrossMaxGap = def.CrossMaxGap
	}
	if r.CrossMaxDistM <= 0 {
		r.CrossMaxDistM = def.CrossMaxDistM
	}
	if r.OverspeedRearmKmh <= 0 {
		r.OverspeedRearmKmh = def.OverspeedRearmKmh
	}
	return r
}
