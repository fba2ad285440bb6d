// Package maintenance keeps vehicles serviced and their fuel accounted for: maintenance
// plans with due-soon and overdue events, the service book, OBD-II fault codes and
// diagnostic threshold alerts, and fuel analytics (refuels, suspected drains, reports)
// built on package fuel.
//
// The domain (plan.go, dtc.go, alerts.go, vehicle.go, report.go) knows nothing of NATS or
// protobuf; bus.go and grpc.go are the edges.
package maintenance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetwire/fleetwire/pkg/metrics"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/rejects"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/services/maintenance/fuel"
)

// Source is the service's name on the bus: consumers "maintenance-pNN", events on
// fleet.evt.maintenance.<kind>.<vehicle>.
const Source = "maintenance"

// Config holds the service's settings. DefaultConfig documents the defaults.
type Config struct {
	// Partitions this instance consumes; empty means every partition of the stream.
	Partitions []int
	// Rebuild re-reads the retained stream at start (for a memory store).
	Rebuild bool
	// MaxBatch is the most messages handled at once per partition (256).
	MaxBatch int
	// Fuel holds the fuel detector's thresholds (fuel.DefaultConfig).
	Fuel fuel.Config
	// Alerts are the diagnostic threshold rules (DefaultAlertRules).
	Alerts []AlertRule
	// SampleEvery is how often (device time) a fuel history sample is stored for
	// reports (5 min).
	SampleEvery time.Duration
	// PlanCacheTTL is how long plans and groups read from the store are reused before
	// being read again (5 s); changes made through this instance apply at once.
	PlanCacheTTL time.Duration
	// PublishTimeout bounds the wait for the bus to acknowledge a batch's events (10 s).
	PublishTimeout time.Duration
	// CalendarCheck is how often the calendar intervals of vehicles that have gone quiet
	// are checked against the clock (1 h); negative disables it. Records check them too.
	CalendarCheck time.Duration
	// RecordTime bounds a record's device time against the time the stream stored it
	// (zero fields take telemetry's defaults, docs/protocol.md): a record outside them
	// cannot be placed in time and is refused, so one far-future record cannot make every
	// later one of its vehicle look already applied.
	RecordTime telemetry.TimeBounds
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		MaxBatch:       256,
		Fuel:           fuel.DefaultConfig(),
		Alerts:         DefaultAlertRules(),
		SampleEvery:    5 * time.Minute,
		PlanCacheTTL:   5 * time.Second,
		PublishTimeout: 10 * time.Second,
		CalendarCheck:  time.Hour,
	}
}

// Service is the maintenance service.
type Service struct {
	cfg   Config
	b     *bus.Bus
	st    Store
	log   *slog.Logger
	rej   *rejects.Counter
	proc  *processor
	now   func() time.Time
	stats serviceMetrics

	partMu sync.Map // partition → *sync.Mutex

	cacheMu   sync.Mutex
	cacheTime time.Time
	plans     []Plan
	groupsOf  func(vehicle string) []string

	// groups is the fleet's one group model (nil: the service's own groups, SetGroup).
	groups GroupDirectory
}

// GroupDirectory is the vehicle registry's groups as maintenance needs them. In a process
// it is pkg/auth's Groups, the JetStream key-value mirror tracking's registry writes, so a
// plan or a fuel report for "vans" covers the vehicles every other service calls vans.
type GroupDirectory interface {
	Of(vehicle string) []string
	Members(group string) []string
}

// UseGroups makes the registry's groups the ones plans, due lists and fuel reports
// resolve, in place of the groups SetGroup stores; SetGroup is then refused
// (ErrGroupsFromRegistry). Call before Run.
func (s *Service) UseGroups(d GroupDirectory) { s.groups = d }

type serviceMetrics struct {
	records *prometheus.CounterVec
	events  *prometheus.CounterVec
}

// New creates the service. b may be nil for a service that only answers gRPC (tests).
func New(cfg Config, b *bus.Bus, st Store, log *slog.Logger, reg prometheus.Registerer) (*Service, error) {
	if st == nil {
		return nil, errors.New("maintenance: nil store")
	}
	if err := loadDTCTable(); err != nil {
		return nil, fmt.Errorf("maintenance: %w", err)
	}
	for _, r := range cfg.Alerts {
		if err := r.validate(); err != nil {
			return nil, fmt.Errorf("maintenance: %w", err)
		}
	}
	if err := cfg.RecordTime.Validate(); err != nil {
		return nil, fmt.Errorf("maintenance: %w", err)
	}
	cfg.RecordTime = cfg.RecordTime.WithDefaults()
	d := DefaultConfig()
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = d.MaxBatch
	}
	if cfg.Fuel == (fuel.Config{}) {
		cfg.Fuel = d.Fuel
	}
	if cfg.SampleEvery <= 0 {
		cfg.SampleEvery = d.SampleEvery
	}
	if cfg.PlanCacheTTL <= 0 {
		cfg.PlanCacheTTL = d.PlanCacheTTL
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = d.PublishTimeout
	}
	if cfg.CalendarCheck == 0 {
		cfg.CalendarCheck = d.CalendarCheck
	}
	s := &Service{
		cfg: cfg, b: b, st: st, log: log,
		rej:  rejects.New(Source, log, reg),
		proc: &processor{cfg: cfg},
		now:  time.Now,
		stats: serviceMetrics{
			records: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetwire_maintenance_records_total", Help: "Records decoded and processed (batch committed), by kind."}, []string{"kind"}),
			events:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fleetwire_maintenance_events_total", Help: "Events published, by kind."}, []string{"kind"}),
		},
	}
	if err := metrics.Register(reg, s.stats.records, s.stats.events); err != nil {
		return nil, fmt.Errorf("maintenance: %w", err)
	}
	return s, nil
}

func (s *Service) partitionLock(p int) *sync.Mutex {
	mu, _ := s.partMu.LoadOrStore(p, &sync.Mutex{})
	return mu.(*sync.Mutex)
}

// Rejects exposes the rejection counter (tests and status pages read it).
func (s *Service) Rejects() *rejects.Counter { return s.rej }

// planView returns the plans and a vehicle's groups, from the cache when it is fresh.
// With a registry (UseGroups) the groups are read from it live, not cached.
func (s *Service) planView(ctx context.Context) ([]Plan, func(string) []string, error) {
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	if !s.cacheTime.IsZero() && time.Since(s.cacheTime) < s.cfg.PlanCacheTTL {
		return s.plans, s.groupsOf, nil
	}
	plans, err := s.st.ListPlans(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("load plans: %w", err)
	}
	groupsOf := func(string) []string { return nil }
	if s.groups != nil {
		groupsOf = s.groups.Of
	} else {
		groups, err := s.st.ListGroups(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("load groups: %w", err)
		}
		of := map[string][]string{}
		for _, g := range groups {
			for _, v := range g.Vehicles {
				of[v] = append(of[v], g.ID)
			}
		}
		groupsOf = func(v string) []string { return of[v] }
	}
	s.plans, s.groupsOf, s.cacheTime = plans, groupsOf, time.Now()
	return plans, groupsOf, nil
}

// groupMembers returns group's vehicles: the registry's when there is one, else the
// group SetGroup stored. A group without members is ErrNotFound.
func (s *Service) groupMembers(ctx context.Context, group string) ([]string, error) {
	if s.groups != nil {
		m := s.groups.Members(group)
		if len(m) == 0 {
			return nil, fmt.Errorf("group %s has no registered vehicle: %w", group, ErrNotFound)
		}
		return m, nil
	}
	g, err := s.st.GetGroup(ctx, group)
	if err != nil {
		return nil, fmt.Errorf("group %s: %w", group, err)
	}
	return g.Vehicles, nil
}

// invalidatePlans makes the next planView read the store.
func (s *Service) invalidatePlans() {
	s.cacheMu.Lock()
	s.cacheTime = time.Time{}
	s.cacheMu.Unlock()
}

// plansFor returns the plans that apply to vehicle.
func plansFor(plans []Plan, groupsOf func(string) []string, vehicle string) []Plan {
	var out []Plan
	groups := groupsOf(vehicle)
	for _, p := range plans {
		if p.AppliesTo(vehicle, groups) {
			out = append(out, p)
		}
	}
	return out
}
