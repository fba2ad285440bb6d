package tracking

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetwire/fleetwire/pkg/metrics"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/rejects"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

// Service is the tracking service: it consumes device records from the bus, keeps the live
// state in a Store and answers the TrackingService gRPC API.
type Service struct {
	cfg     Config
	bus     *bus.Bus
	store   Store
	log     *slog.Logger
	tracker *Tracker
	rej     *rejects.Counter
	hub     *hub
	now     func() time.Time
	// groupDir learns registry group changes (PublishGroupsTo); nil: nobody.
	groupDir GroupDirectory

	records  prometheus.Counter
	statuses *prometheus.CounterVec
	drift    prometheus.Counter

	// The live states of the vehicles in this instance's partitions. The partition lock
	// serialises a partition's consumer and the offline sweep, so neither overwrites the
	// other's update of a vehicle.
	mu     sync.RWMutex
	cache  map[string]*entry
	partMu []sync.Mutex
	nParts int
	// owned[p]: this instance applies partition p. Fixed at start with a static partition
	// set; with leases (dynamic) it follows the partitions held.
	owned      []atomic.Bool
	ownedCount int // partitions owned at start (static)
	dynamic    bool
	// applied[p]: the stream time (Unix ns) of the last message applied in partition p,
	// the offline sweep's clock while the partition's consumer is behind.
	applied []atomic.Int64
}

// owns reports whether this instance applies partition p now.
func (s *Service) owns(p int) bool { return p >= 0 && p < len(s.owned) && s.owned[p].Load() }

type entry struct {
	part  int
	state *State
	info  Info
}

// New creates the service. b may be nil for a query-only instance (Run then fails).
func New(cfg Config, b *bus.Bus, st Store, log *slog.Logger, reg prometheus.Registerer) (*Service, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if st == nil {
		return nil, fmt.Errorf("%w: nil store", ErrBadConfig)
	}
	s := &Service{
		cfg:     cfg,
		bus:     b,
		store:   st,
		log:     log,
		tracker: NewTracker(cfg),
		rej:     rejects.New("tracking", log, reg),
		hub:     newHub(),
		now:     time.Now,
		cache:   make(map[string]*entry),
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fleetwire_tracking_records_total", Help: "Device records applied to the live state.",
		}),
		statuses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetwire_tracking_status_changes_total", Help: "Vehicle status changes, by new status.",
		}, []string{"status"}),
		drift: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fleetwire_tracking_parked_drift_total", Help: "Fixes of parked vehicles held at the parked position (GPS drift).",
		}),
	}
	if err := metrics.Register(reg, s.records, s.statuses, s.drift); err != nil {
		return nil, fmt.Errorf("tracking: %w", err)
	}
	return s, nil
}

// Rejected returns how many inputs were rejected or repaired for reason (tests, status).
func (s *Service) Rejected(reason string) float64 { return s.rej.Count(reason) }

// count accounts for the filter rules that fired on a record. Parked drift and the static
// hold are routine (every parked tracker wanders a few metres), so they are only counted,
// not logged.
func (s *Service) count(reasons Reason, vehicle string, r *telemetry.Record) {
	reasons.Each(func(reason Reason) {
		if reason == ReasonParkedDrift || reason == ReasonStatic {
			s.drift.Inc()
			return
		}
		s.rej.Add(reason.String(), vehicle, errors.New(reason.String()), "device_time", r.DeviceTime, "sequence", r.Sequence)
	})
}

// Run consumes the configured partitions until ctx ends and sweeps for vehicles that went
// offline. It returns nil on a clean stop.
func (s *Service) Run(ctx context.Context) error {
	if s.bus == nil {
		return fmt.Errorf("%w: no bus", ErrBadConfig)
	}
	n, err := s.bus.Partitions(ctx)
	if err != nil {
		return fmt.Errorf("tracking: %w", err)
	}
	parts := s.cfg.Partitions
	if len(parts) == 0 {
		parts, _ = bus.ParsePartitions("", n)
	}
	for _, p := range parts {
		if p < 0 || p >= n {
			return fmt.Errorf("%w: partition %d outside 0..%d", ErrBadConfig, p, n-1)
		}
	}
	s.mu.Lock()
	s.nParts = n
	s.partMu = make([]sync.Mutex, n)
	s.owned = make([]atomic.Bool, n)
	s.applied = make([]atomic.Int64, n)
	s.dynamic = s.bus.Leasing()
	if !s.dynamic {
		for _, p := range parts {
			s.owned[p].Store(true)
		}
		s.ownedCount = len(parts)
	}
	s.mu.Unlock()
	if err := s.preload(ctx, s.owns); err != nil {
		return err
	}
	s.log.Info("tracking consuming", "partitions", parts, "of", n)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	unfollow, err := s.followOthers()
	if err != nil {
		return err
	}
	defer unfollow()
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.sweepLoop(ctx)
	}()
	err = s.bus.ConsumePartitions(ctx, "tracking", parts, []string{"*"},
		bus.ConsumerConfig{Rebuild: s.cfg.Rebuild, AckWait: s.cfg.AckWait,
			Partition: bus.PartitionHooks{Acquired: s.acquired, Released: s.released}}, s.handle)
	cancel()
	wg.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("tracking consume: %w", err)
	}
	return nil
}

// acquired takes partition p over (leases): the previous owner's states are read from
// the store, never from what this instance may have cached when it last held p.
func (s *Service) acquired(ctx context.Context, p int) error {
	s.partMu[p].Lock()
	defer s.partMu[p].Unlock()
	s.forget(p)
	if err := s.preload(ctx, func(q int) bool { return q == p }); err != nil {
		return err
	}
	s.owned[p].Store(true)
	return nil
}

// released gives partition p up (leases): its vehicles are the next owner's.
func (s *Service) released(p int) {
	s.partMu[p].Lock()
	defer s.partMu[p].Unlock()
	s.owned[p].Store(false)
	s.forget(p)
}

// forget drops the cached states of partition p.
func (s *Service) forget(p int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, e := range s.cache {
		if e.part == p {
			delete(s.cache, id)
		}
	}
}

// preload fills the cache with the stored vehicles of the partitions mine selects, so the
// offline sweep also covers vehicles that never send again after a restart.
func (s *Service) preload(ctx context.Context, mine func(p int) bool) error {
	after := ""
	loaded := 0
	for {
		ids, err := s.store.IDs(ctx, after, 1000)
		if err != nil {
			return fmt.Errorf("tracking preload: %w", err)
		}
		if len(ids) == 0 {
			break
		}
		after = ids[len(ids)-1]
		sel := ids[:0]
		for _, id := range ids {
			if mine(bus.PartitionOf(id, s.nParts)) {
				sel = append(sel, id)
			}
		}
		if len(sel) == 0 {
			continue
		}
		vs, err := s.store.Vehicles(ctx, sel)
		if err != nil {
			return fmt.Errorf("tracking preload: %w", err)
		}
		s.mu.Lock()
		for _, v := range vs {
			if v.State == nil {
				continue
			}
			if _, ok := s.cache[v.Info.ID]; !ok {
				s.cache[v.Info.ID] = &entry{part: bus.PartitionOf(v.Info.ID, s.nParts), state: v.State, info: v.Info}
				loaded++
			}
		}
		s.mu.Unlock()
	}
	if loaded > 0 {
		s.log.Info("tracking state loaded", "vehicles", loaded)
	}
	return nil
}

func (s *Service) sweepLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.sweep(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("offline sweep failed; retrying next tick", "err", err)
			}
		}
	}
}

// sweep marks the vehicles that stopped sending offline, partition by partition.
func (s *Service) sweep(ctx context.Context) error {
	now := s.now()
	for p := range s.partMu {
		if !s.owns(p) {
			continue
		}
		if err := s.sweepPartition(ctx, p, now); err != nil {
			return err
		}
	}
	return nil
}

// sweepClock is the time partition p is swept at. A vehicle is offline when the stream
// holds nothing from it for OfflineAfter, so the wall clock counts only when the server
// says the partition's consumer has nothing undelivered or unacknowledged: every record
// stored before wall has then been applied. Otherwise (catching up, rebuilding, or NATS
// unreachable, when the consumer's own last word may be stale) the stream time of the
// last message applied does. By the wall clock, a rebuild would report offline every
// vehicle whose newer records are still to be replayed, and a consumer reconnecting
// after a NATS restart every vehicle whose records wait for it. ok is false before
// anything is known.
func (s *Service) sweepClock(ctx context.Context, p int, wall time.Time) (now time.Time, ok bool) {
	if s.partitionCurrent(ctx, p) {
		return wall, true
	}
	if t := s.applied[p].Load(); t != 0 {
		return time.Unix(0, t), true
	}
	return time.Time{}, false
}

// partitionCurrent asks the server whether the durable delivering partition p (the
// service's own, or the shared one of the all-in-one) has applied everything stored.
func (s *Service) partitionCurrent(ctx context.Context, p int) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for _, d := range []string{fmt.Sprintf("tracking-p%02d", p), fmt.Sprintf("%s-p%02d", bus.SharedDurable, p)} {
		c, err := s.bus.Consumer(ctx, bus.TelemetryStream, d)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue
		}
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}
	return false
}

func (s *Service) sweepPartition(ctx context.Context, p int, wall time.Time) error {
	// Asked before taking the partition: records applied meanwhile only make the states
	// newer than the clock.
	now, ok := s.sweepClock(ctx, p, wall)
	if !ok {
		return nil
	}
	s.partMu[p].Lock()
	defer s.partMu[p].Unlock()
	var (
		changed []*entry
		gone    []string
	)
	s.mu.RLock()
	for id, e := range s.cache {
		if e.part != p {
			continue
		}
		st := e.state.Clone()
		if s.tracker.Sweep(st, now) {
			if telemetry.IsLoadTest(id) {
				// A load-test vehicle that stopped reporting is removed, not reported
				// offline: the test is over, and it never was the live fleet.
				gone = append(gone, id)
				continue
			}
			changed = append(changed, &entry{part: p, state: st, info: e.info})
		}
	}
	s.mu.RUnlock()
	if len(gone) > 0 {
		if err := s.store.Delete(ctx, gone, wall.Add(-s.cfg.HistoryRetention-24*time.Hour), wall.Add(48*time.Hour)); err != nil {
			return err
		}
		s.mu.Lock()
		for _, id := range gone {
			delete(s.cache, id)
		}
		s.mu.Unlock()
		s.log.Info("load-test vehicles removed", "count", len(gone), "partition", p)
	}
	if len(changed) == 0 {
		return nil
	}
	states := make([]*State, len(changed))
	evs := make([]statusEvent, 0, len(changed))
	for i, e := range changed {
		states[i] = e.state
		// Published even when the vehicle went offline before this process started: the
		// event's id is derived from the state, so one reported before is not stored again.
		evs = append(evs, statusEvent{state: e.state})
	}
	// Events before state, as in handle.
	if err := s.publishEvents(ctx, evs); err != nil {
		return err
	}
	if err := s.store.Write(ctx, Batch{States: states, Retention: s.cfg.HistoryRetention, Now: wall}); err != nil {
		return err
	}
	s.commit(changed)
	return nil
}

// commit makes processed states the live ones and tells the watchers.
func (s *Service) commit(es []*entry) {
	s.mu.Lock()
	for _, e := range es {
		s.cache[e.state.VehicleID] = e
	}
	s.mu.Unlock()
	var live []Vehicle
	if s.sharesFleet() {
		live = make([]Vehicle, 0, len(es))
	}
	for _, e := range es {
		v := Vehicle{Info: e.info, State: e.state}
		s.hub.publish(v)
		if live != nil {
			live = append(live, v)
		}
	}
	s.publishLive(live)
}

// registryChanged refreshes the cached registry entry of a vehicle and tells watchers.
func (s *Service) registryChanged(v Vehicle) {
	s.mu.Lock()
	if e, ok := s.cache[v.Info.ID]; ok {
		ne := *e
		ne.info = copyInfo(v.Info)
		s.cache[v.Info.ID] = &ne
		if v.State == nil {
			v.State = e.state
		}
	}
	s.mu.Unlock()
	s.hub.publish(v)
}
