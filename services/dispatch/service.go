package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetwire/fleetwire/pkg/metrics"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/rejects"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

// Config holds the service's settings. DefaultConfig documents the defaults; the rules
// behind them are described in docs/dispatch.md.
type Config struct {
	// Partitions of the telemetry stream this instance reads (nil: all of them).
	Partitions []int
	// Rebuild re-reads the retained streams from the start (for a memory store).
	Rebuild bool

	// Detect holds the theft-detection thresholds.
	Detect DetectConfig
	// AlertCooldown: an occurrence merges into the unresolved alert of its incident when
	// it comes no more than this after the alert's latest occurrence.
	AlertCooldown time.Duration

	// ImmobilizeMaxKmh: IMMOBILIZE is held until ImmobilizeSlowFixes consecutive good
	// fixes over at least ImmobilizeSlowFor are at most this fast (see Gate); the device
	// receives the limit and checks its own speed too.
	ImmobilizeMaxKmh    float64
	ImmobilizeSlowFixes int
	ImmobilizeSlowFor   time.Duration
	// OfflineAfter: no record for this long means offline; commands wait for the next record.
	OfflineAfter time.Duration
	// CommandTTL is the default expiry of a command; MaxCommandTTL the longest allowed.
	CommandTTL, MaxCommandTTL time.Duration
	// ReplyTimeout: sent and no reply within it → failed. ExecuteTimeout: accepted and
	// not executed within it → failed.
	ReplyTimeout, ExecuteTimeout time.Duration
	// SweepEvery is how often queued commands are re-checked (expiry, online vehicles)
	// and delivered ones checked for their timeouts.
	SweepEvery time.Duration
	// WatchPoll is how often WatchAlerts looks for alerts raised by other instances
	// (alerts raised by this instance wake watchers at once).
	WatchPoll time.Duration
	// FuelMinConfidence: a fuel drain whose confidence (the maintenance event's
	// "confidence") is below it is raised as a warning marked unconfirmed instead of a
	// critical fuel-theft alarm (0.5, the fuel detector's default). 0 alerts every
	// drain as confirmed; 1 marks every drain judged around a stop unconfirmed.
	FuelMinConfidence float64
	// FuelMinConfidenceByGroup overrides it for the vehicles of a group (Detect.Groups):
	// a fleet whose sensors are poor may want fewer critical alarms, one with valuable
	// cargo more.
	FuelMinConfidenceByGroup map[string]float64
	// PublishAlertEvents publishes every alert as an Event (source "dispatch", kind
	// "alert") on the event stream, for integrations.
	PublishAlertEvents bool

	// Rules are the per-kind alert settings (which kinds raise alerts, webhook sinks);
	// ParseAlertRules reads them from the alert rules file.
	Rules AlertRules
	// AlertRetention: resolved alerts are removed this long after they were resolved
	// (0 keeps them for ever). Open and acknowledged alerts are never removed.
	AlertRetention time.Duration
	// RecordTime bounds a record's device time against the time the stream stored it
	// (zero fields take telemetry's defaults, docs/protocol.md). A record outside them
	// raises its device alarms as of the time it was stored and is kept from the
	// detection rules, so one far-future record cannot hide every later one.
	RecordTime telemetry.TimeBounds
	// HousekeepEvery is how often old resolved alerts are removed and the alert gauges
	// refreshed.
	HousekeepEvery time.Duration
}

// DefaultAlertRetention is how long resolved alerts are kept by default.
const DefaultAlertRetention = 30 * 24 * time.Hour

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		Detect:              DetectConfig{Thresholds: DefaultThresholds()},
		AlertCooldown:       30 * time.Minute,
		ImmobilizeMaxKmh:    5,
		ImmobilizeSlowFixes: 3,
		ImmobilizeSlowFor:   20 * time.Second,
		OfflineAfter:        10 * time.Minute,
		CommandTTL:          24 * time.Hour,
		MaxCommandTTL:       7 * 24 * time.Hour,
		ReplyTimeout:        60 * time.Second,
		ExecuteTimeout:      10 * time.Minute,
		SweepEvery:          5 * time.Second,
		WatchPoll:           time.Second,
		PublishAlertEvents:  true,
		FuelMinConfidence:   FuelMinConfidence,
		AlertRetention:      DefaultAlertRetention,
		HousekeepEvery:      30 * time.Second,
	}
}

// fuelThreshold is the confidence a vehicle's fuel drain needs for a critical alarm.
func (c *Config) fuelThreshold(vehicle string) float64 {
	has := func(g string) bool { _, ok := c.FuelMinConfidenceByGroup[g]; return ok }
	if g, ok := c.Detect.groupWith(vehicle, has); ok {
		if th, ok := c.FuelMinConfidenceByGroup[g]; ok {
			return th
		}
	}
	return c.FuelMinConfidence
}

// Service runs theft detection, the alert feed and the command queue.
type Service struct {
	cfg      Config
	b        *bus.Bus
	st       Store
	log      *slog.Logger
	det      *Detector
	gate     Gate
	timeouts Timeouts
	rej      *rejects.Counter
	raised   *prometheus.CounterVec
	cmds     *prometheus.CounterVec
	hooks    *prometheus.CounterVec
	pruned   prometheus.Counter
	open     *prometheus.GaugeVec
	queued   prometheus.Gauge
	wake     signal
	http     *http.Client
	// deliverWake tells the webhook loop a new alert has deliveries (buffered 1: a wake
	// already pending covers the next).
	deliverWake chan struct{}
	now         func() time.Time

	// silent holds the vehicles whose newest record showed GNSS lost while moving: the
	// silence rule (Detector.Silent) is checked on them by the sweep, because a jammer
	// that stays on sends no record to drive detection. In memory, per instance: each
	// instance watches the vehicles of its own partitions.
	silentMu sync.Mutex
	silent   map[string]VehicleState

	// registry tells which vehicles are registered (nil: only vehicles seen on the bus
	// are known).
	registry Registry
}

// Registry is the vehicle registry as dispatch needs it: whether a vehicle exists and its
// groups. In a process it is pkg/auth's Groups, the JetStream key-value mirror tracking's
// registry writes; dispatch never imports tracking.
type Registry interface {
	Known(vehicle string) bool
	Of(vehicle string) []string
}

// UseRegistry makes vehicles registered in r known to SendCommand before they report, and
// the registry's groups those the schedules file's group settings apply to
// (DetectConfig.GroupsOf). Call before Run.
func (s *Service) UseRegistry(r Registry) {
	s.registry = r
	s.cfg.Detect.GroupsOf = r.Of
	s.det.cfg.GroupsOf = r.Of
}

// New checks cfg and builds the service. reg may be nil.
func New(cfg Config, b *bus.Bus, st Store, log *slog.Logger, reg prometheus.Registerer) (*Service, error) {
	det, err := NewDetector(cfg.Detect)
	if err != nil {
		return nil, err
	}
	if cfg.ImmobilizeSlowFixes < 1 || cfg.ImmobilizeSlowFixes > recentFixes || cfg.ImmobilizeSlowFor < 0 {
		return nil, fmt.Errorf("%w: ImmobilizeSlowFixes must be 1..%d and ImmobilizeSlowFor >= 0", ErrInvalid, recentFixes)
	}
	if cfg.CommandTTL <= 0 || cfg.MaxCommandTTL < cfg.CommandTTL || cfg.ReplyTimeout <= 0 ||
		cfg.ExecuteTimeout <= 0 || cfg.SweepEvery <= 0 || cfg.WatchPoll <= 0 || cfg.OfflineAfter <= 0 {
		return nil, fmt.Errorf("%w: dispatch durations must be positive (and MaxCommandTTL >= CommandTTL)", ErrInvalid)
	}
	for g, th := range cfg.FuelMinConfidenceByGroup {
		if !(th >= 0 && th <= 1) {
			return nil, fmt.Errorf("%w: fuel confidence threshold %v of group %q outside 0..1", ErrInvalid, th, g)
		}
	}
	if cfg.AlertRetention < 0 || cfg.HousekeepEvery <= 0 {
		return nil, fmt.Errorf("%w: AlertRetention must not be negative and HousekeepEvery must be positive", ErrInvalid)
	}
	if err := cfg.Rules.check(); err != nil {
		return nil, err
	}
	if err := cfg.RecordTime.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	cfg.RecordTime = cfg.RecordTime.WithDefaults()
	if !(cfg.FuelMinConfidence >= 0 && cfg.FuelMinConfidence <= 1) {
		return nil, fmt.Errorf("%w: fuel confidence threshold %v outside 0..1", ErrInvalid, cfg.FuelMinConfidence)
	}
	s := &Service{
		cfg: cfg, b: b, st: st, log: log, det: det,
		gate: Gate{
			ImmobilizeMaxKmh: cfg.ImmobilizeMaxKmh, ImmobilizeSlowFixes: cfg.ImmobilizeSlowFixes,
			ImmobilizeSlowFor: cfg.ImmobilizeSlowFor, OfflineAfter: cfg.OfflineAfter,
		},
		timeouts: Timeouts{Reply: cfg.ReplyTimeout, Execute: cfg.ExecuteTimeout},
		rej:      rejects.New("dispatch", log, reg),
		raised: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetwire_dispatch_alerts_total", Help: "Alerts created, by kind.",
		}, []string{"kind"}),
		cmds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetwire_dispatch_command_transitions_total", Help: "Command state changes, by new state.",
		}, []string{"state"}),
		hooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetwire_dispatch_webhook_attempts_total", Help: "Webhook delivery attempts, by sink and result (delivered, retry, failed).",
		}, []string{"sink", "result"}),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fleetwire_dispatch_alerts_pruned_total", Help: "Resolved alerts removed after the retention time.",
		}),
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fleetwire_dispatch_open_alerts", Help: "Alerts nobody has acknowledged or resolved yet, by severity.",
		}, []string{"severity"}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fleetwire_dispatch_queued_commands", Help: "Commands waiting in the queue (vehicle offline or too fast).",
		}),
		http:        webhookClient(),
		deliverWake: make(chan struct{}, 1),
		now:         time.Now,
		silent:      map[string]VehicleState{},
	}
	s.wake.ch = make(chan struct{})
	if err := metrics.Register(reg, s.raised, s.cmds, s.hooks, s.pruned, s.open, s.queued); err != nil {
		return nil, fmt.Errorf("dispatch: %w", err)
	}
	return s, nil
}

// signal wakes every waiter when fired (a broadcast that can be waited on in a select).
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

func (s *signal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ch
}

func (s *signal) fire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.ch)
	s.ch = make(chan struct{})
}

// Run consumes the bus and sweeps commands until ctx ends. It returns nil on a clean stop.
func (s *Service) Run(ctx context.Context) error {
	parts := s.cfg.Partitions
	if len(parts) == 0 {
		n, err := s.b.Partitions(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil // stopped while starting
			}
			return err
		}
		if parts, err = bus.ParsePartitions("", n); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 5)
	go func() {
		errc <- s.b.ConsumePartitions(ctx, "dispatch", parts,
			[]string{bus.KindTelemetry, bus.KindAlarm, bus.KindReply},
			bus.ConsumerConfig{Rebuild: s.cfg.Rebuild}, s.handleDevice)
	}()
	go func() {
		errc <- s.b.Consume(ctx, bus.ConsumerConfig{
			Stream: bus.EventStream, Durable: "dispatch-events", Rebuild: s.cfg.Rebuild,
			// Its own alert events are not input; its own dead letters are.
			Filters: []string{bus.EventSourceFilter("tracking"), bus.EventSourceFilter("geofence"), bus.EventSourceFilter("maintenance"),
				bus.EventFilter(SourceDispatch, bus.EventKindDeadLetter, "*")},
		}, s.handleEvents)
	}()
	go func() { errc <- s.sweep(ctx) }()
	go func() { errc <- s.deliverLoop(ctx) }()
	go func() { errc <- s.housekeep(ctx) }()
	var first error
	for range 5 {
		// Errors caused by the stop itself (a consumer being created as ctx ends) are not
		// failures.
		if err := <-errc; err != nil && first == nil && ctx.Err() == nil {
			first = err
			cancel()
		}
	}
	return first
}

// raise stores alert occurrences, wakes watchers and publishes the alerts as events.
func (s *Service) raise(ctx context.Context, alerts []Alert) error {
	if len(alerts) == 0 {
		return nil
	}
	out := make([]Alert, 0, len(alerts))
	created, deliver := false, false
	for _, a := range alerts {
		if s.cfg.Rules.rule(a.Kind).Raise == RaiseNever || telemetry.IsLoadTest(a.Vehicle) {
			continue
		}
		a.CreateTime = s.now()
		a.Deliveries = s.cfg.Rules.deliveries(a.Kind)
		got, isNew, err := s.st.RaiseAlert(ctx, a, s.cfg.AlertCooldown)
		if err != nil {
			return err
		}
		if isNew {
			created = true
			deliver = deliver || got.pendingDelivery()
			s.raised.WithLabelValues(got.Kind).Inc()
			s.log.Info("alert raised", "alert_id", got.ID, "vehicle", got.Vehicle, "kind", got.Kind, "severity", got.Severity.String())
		}
		out = append(out, got)
	}
	if created {
		s.wake.fire()
	}
	if deliver {
		select {
		case s.deliverWake <- struct{}{}:
		default:
		}
	}
	if s.cfg.PublishAlertEvents {
		// Published for every occurrence, not only new alerts: the event id identifies the
		// alert, so JetStream drops the repeats, and an event whose publish failed before
		// a redelivery is published on the retry.
		return s.publishAlerts(ctx, out)
	}
	return nil
}

// vehicleWork is what one consumer batch holds for one vehicle.
type vehicleWork struct {
	recs    []telemetry.Record
	untimed []telemetry.Record // records outside the time bounds: device alarms only
	replies []Reply
	newest  time.Time // newest stream time of its records
}

// handleVehicles applies a batch's records and replies. Vehicle states are loaded and
// stored in one round trip each; queued commands are looked for only where there are some.
func (s *Service) handleVehicles(ctx context.Context, order []string, work map[string]*vehicleWork) error {
	var withRecs []string
	for _, v := range order {
		if len(work[v].recs) > 0 || len(work[v].untimed) > 0 {
			withRecs = append(withRecs, v)
		}
	}
	states, err := s.st.GetVehicles(ctx, withRecs)
	if err != nil {
		return err
	}
	var alerts []Alert
	updated := make([]VehicleState, 0, len(withRecs))
	for _, v := range withRecs {
		st := states[v]
		w := work[v]
		for i := range w.untimed {
			alerts = append(alerts, s.det.ApplyUntimed(&st, &w.untimed[i])...)
		}
		for i := range w.recs {
			alerts = append(alerts, s.det.Apply(&st, &w.recs[i])...)
		}
		states[v] = st
		updated = append(updated, st)
	}
	s.watchSilence(updated)
	// Alerts first, then the states: a crash in between re-raises on redelivery (the
	// store ignores the repeat) instead of losing the alert.
	if err := s.raise(ctx, alerts); err != nil {
		return err
	}
	if err := s.st.PutVehicles(ctx, updated); err != nil {
		return err
	}
	for _, v := range order {
		for i := range work[v].replies {
			if err := s.applyReply(ctx, &work[v].replies[i]); err != nil {
				return err
			}
		}
	}
	// A fresh record means the vehicle is online and its speed known: deliver what waits.
	// Records replayed from the stream after a restart are old and deliver nothing.
	var fresh []string
	for _, v := range withRecs {
		if s.now().Sub(work[v].newest) <= s.cfg.OfflineAfter {
			fresh = append(fresh, v)
		}
	}
	pending, err := s.st.WithOpenCommands(ctx, fresh)
	if err != nil {
		return err
	}
	for _, v := range fresh {
		if !pending[v] {
			continue
		}
		st := states[v]
		if err := s.deliverQueued(ctx, v, &st, true); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) deliverQueued(ctx context.Context, vehicle string, st *VehicleState, known bool) error {
	cmds, err := s.st.ListCommands(ctx, CommandFilter{Vehicle: vehicle, State: CommandQueued, OpenOnly: true, Limit: 1000})
	if err != nil {
		return err
	}
	// Oldest first: commands reach the vehicle in the order they were issued.
	for i := len(cmds) - 1; i >= 0; i-- {
		if err := s.advance(ctx, cmds[i], st, known); err != nil {
			return err
		}
	}
	return nil
}

// advance moves a queued command on: send it, expire it, or update why it waits. The
// state change is stored (compare-and-set) before the command is published, so two
// instances racing for the same command never both send it.
func (s *Service) advance(ctx context.Context, c Command, v *VehicleState, known bool) error {
	for range maxRetries {
		if c.State != CommandQueued {
			return nil
		}
		now := s.now()
		d, reason := s.gate.Decide(&c, v, known, now)
		var changed bool
		switch d {
		case Wait:
			changed = c.set(CommandQueued, reason, now)
		case Expire:
			changed = c.set(CommandExpired, reason, now)
		case Send:
			changed = c.set(CommandSent, "", now)
		}
		if !changed {
			return nil
		}
		stored, err := s.st.UpdateCommand(ctx, c)
		if errors.Is(err, ErrConflict) {
			if c, err = s.st.GetCommand(ctx, c.ID); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if d != Wait {
			s.cmds.WithLabelValues(stored.State.String()).Inc()
		}
		if d == Send {
			if err := s.publishCommand(&stored); err != nil {
				// It stays sent; the reply timeout will mark it failed.
				s.log.Error("publish command", "command_id", stored.ID, "vehicle", stored.Vehicle, "err", err)
			}
		}
		return nil
	}
	return fmt.Errorf("command %s: %w", c.ID, ErrConflict)
}

// applyReply records a device's answer.
func (s *Service) applyReply(ctx context.Context, r *Reply) error {
	c, err := s.st.GetCommand(ctx, r.CommandID)
	if errors.Is(err, ErrNotFound) {
		s.rej.Add("reply_unknown_command", r.Vehicle, err)
		return nil
	}
	if err != nil {
		return err
	}
	if c.Vehicle != r.Vehicle {
		s.rej.Add("reply_wrong_vehicle", r.Vehicle, fmt.Errorf("%w: command %s is for %s", ErrInvalid, c.ID, c.Vehicle))
		return nil
	}
	for range maxRetries {
		if !ApplyReply(&c, r.Status, replyDetail(&c, r, s.cfg.ImmobilizeMaxKmh), s.now()) {
			return nil // a repeat, or a step backwards
		}
		stored, err := s.st.UpdateCommand(ctx, c)
		if errors.Is(err, ErrConflict) {
			if c, err = s.st.GetCommand(ctx, c.ID); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		s.cmds.WithLabelValues(stored.State.String()).Inc()
		return nil
	}
	return fmt.Errorf("command %s: %w", c.ID, ErrConflict)
}

// sweep re-checks open commands: queued ones against the vehicle's state (expiry, a
// vehicle that came online meanwhile), delivered ones against their timeouts.
func (s *Service) sweep(ctx context.Context) error {
	t := time.NewTicker(s.cfg.SweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := s.sweepOnce(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("command sweep failed", "err", err)
		}
		if err := s.checkSilence(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("silence check failed", "err", err)
		}
	}
}

// watchSilence updates the silence watch list from states just applied.
func (s *Service) watchSilence(states []VehicleState) {
	s.silentMu.Lock()
	defer s.silentMu.Unlock()
	for i := range states {
		if SilenceCheck(&states[i]) {
			s.silent[states[i].Vehicle] = states[i]
		} else {
			delete(s.silent, states[i].Vehicle)
		}
	}
}

// checkSilence raises the silence rule's alerts. A vehicle stays on the list until a
// record takes it off, so the check repeats; the alert's cause id makes the repeats
// no-ops in the store.
func (s *Service) checkSilence(ctx context.Context) error {
	now := s.now()
	var alerts []Alert
	var raised []string
	s.silentMu.Lock()
	for v, st := range s.silent {
		if as := s.det.Silent(&st, now); len(as) > 0 {
			alerts = append(alerts, as...)
			raised = append(raised, v)
		}
	}
	s.silentMu.Unlock()
	if err := s.raise(ctx, alerts); err != nil {
		return err // still listed: the next sweep tries again
	}
	s.silentMu.Lock()
	for _, v := range raised {
		delete(s.silent, v) // the next record puts it back if it is still silent-prone
	}
	s.silentMu.Unlock()
	return nil
}

func (s *Service) sweepOnce(ctx context.Context) error {
	cmds, err := s.st.ListCommands(ctx, CommandFilter{OpenOnly: true, Limit: 100_000})
	if err != nil {
		return err
	}
	queued := 0
	for i := range cmds {
		if cmds[i].State == CommandQueued {
			queued++
		}
	}
	s.queued.Set(float64(queued))
	for i := len(cmds) - 1; i >= 0; i-- {
		c := cmds[i]
		if c.State == CommandQueued {
			v, known, err := s.st.GetVehicle(ctx, c.Vehicle)
			if err != nil {
				return err
			}
			if err := s.advance(ctx, c, &v, known); err != nil {
				return err
			}
			continue
		}
		reason := s.timeouts.Overdue(&c, s.now())
		if reason == "" || !c.set(CommandFailed, reason, s.now()) {
			continue
		}
		if _, err := s.st.UpdateCommand(ctx, c); err != nil && !errors.Is(err, ErrConflict) {
			return err // a conflict means a reply came meanwhile: the next sweep looks again
		} else if err == nil {
			s.cmds.WithLabelValues(CommandFailed.String()).Inc()
		}
	}
	return nil
}

// SendCommand issues a command for vehicle on behalf of who. ttl 0 means the default.
// It returns the stored command: sent at once when the vehicle is online (and, for
// IMMOBILIZE, slow enough), otherwise queued with the reason.
func (s *Service) SendCommand(ctx context.Context, vehicle string, kind CommandKind, params map[string]string, who string, ttl time.Duration) (Command, error) {
	if err := telemetry.ValidVehicleID(vehicle); err != nil {
		return Command{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := ValidateParams(kind, params); err != nil {
		return Command{}, err
	}
	if who == "" {
		return Command{}, fmt.Errorf("%w: who is required (audit)", ErrInvalid)
	}
	if ttl == 0 {
		ttl = s.cfg.CommandTTL
	}
	if ttl < 0 || ttl > s.cfg.MaxCommandTTL {
		return Command{}, fmt.Errorf("%w: ttl %s outside 0..%s", ErrInvalid, ttl, s.cfg.MaxCommandTTL)
	}
	v, known, err := s.st.GetVehicle(ctx, vehicle)
	if err != nil {
		return Command{}, err
	}
	// A command to a mistyped id would wait a whole TTL for a vehicle that never comes:
	// only vehicles that reported (dispatch holds their state) or are registered exist.
	if telemetry.IsLoadTest(vehicle) || (!known && (s.registry == nil || !s.registry.Known(vehicle))) {
		return Command{}, fmt.Errorf("vehicle %s: never reported and not registered: %w", vehicle, ErrNotFound)
	}
	now := s.now()
	c := Command{
		Vehicle: vehicle, Kind: kind, Params: params, State: CommandQueued, IssuedBy: who,
		IssueTime: now, ExpireTime: now.Add(ttl), UpdateTime: now,
		History: []Transition{{State: CommandQueued, Time: now, Detail: "issued by " + who}},
	}
	c, err = s.st.CreateCommand(ctx, c)
	if err != nil {
		return Command{}, err
	}
	s.cmds.WithLabelValues(CommandQueued.String()).Inc()
	s.log.Info("command issued", "command_id", c.ID, "vehicle", vehicle, "kind", kind.String(), "who", who)
	if err := s.advance(ctx, c, &v, known); err != nil {
		return c, err
	}
	return s.st.GetCommand(ctx, c.ID)
}

// CancelCommand withdraws a queued command on behalf of who: it is never delivered. A
// command that already left the queue (sent, answered, expired, cancelled) is
// ErrBadTransition: what reached the vehicle cannot be recalled. The change is
// compare-and-set, so a cancel racing the delivery either wins (nothing is sent) or
// loses (the command is sent and the cancel refused), never both.
func (s *Service) CancelCommand(ctx context.Context, id, who, note string) (Command, error) {
	if who == "" {
		return Command{}, fmt.Errorf("%w: who is required (audit)", ErrInvalid)
	}
	c, err := s.st.GetCommand(ctx, id)
	if err != nil {
		return Command{}, err
	}
	detail := "cancelled by " + who
	if note != "" {
		detail += ": " + note
	}
	for range maxRetries {
		if c.State != CommandQueued {
			return Command{}, fmt.Errorf("%w: command %s is %s; only a queued command can be cancelled", ErrBadTransition, c.ID, c.State)
		}
		c.set(CommandCancelled, detail, s.now())
		stored, err := s.st.UpdateCommand(ctx, c)
		if errors.Is(err, ErrConflict) {
			if c, err = s.st.GetCommand(ctx, id); err != nil {
				return Command{}, err
			}
			continue
		}
		if err != nil {
			return Command{}, err
		}
		s.cmds.WithLabelValues(CommandCancelled.String()).Inc()
		s.log.Info("command cancelled", "command_id", id, "vehicle", c.Vehicle, "kind", c.Kind.String(), "who", who)
		return stored, nil
	}
	return Command{}, fmt.Errorf("command %s: %w", id, ErrConflict)
}

// GetCommand returns one command.
func (s *Service) GetCommand(ctx context.Context, id string) (Command, error) {
	return s.st.GetCommand(ctx, id)
}

// ListCommands returns commands matching f, newest first.
func (s *Service) ListCommands(ctx context.Context, f CommandFilter) ([]Command, error) {
	return s.st.ListCommands(ctx, f)
}

// ListAlerts returns alerts matching f.
func (s *Service) ListAlerts(ctx context.Context, f AlertFilter) ([]Alert, error) {
	return s.st.ListAlerts(ctx, f)
}

// CountAlerts returns how many retained alerts match f's conditions.
func (s *Service) CountAlerts(ctx context.Context, f AlertFilter) (int, error) {
	return s.st.CountAlerts(ctx, f)
}

// housekeep removes resolved alerts older than the retention and refreshes the alert
// gauges, every HousekeepEvery until ctx ends.
func (s *Service) housekeep(ctx context.Context) error {
	t := time.NewTicker(s.cfg.HousekeepEvery)
	defer t.Stop()
	for {
		if err := s.housekeepOnce(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("alert housekeeping failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// pruneBatch bounds one removal, so a first run over a large backlog does not hold the
// store for long.
const pruneBatch = 1000

func (s *Service) housekeepOnce(ctx context.Context) error {
	if s.cfg.AlertRetention > 0 {
		cutoff := s.now().Add(-s.cfg.AlertRetention)
		for {
			n, err := s.st.PruneAlerts(ctx, cutoff, pruneBatch)
			if err != nil {
				return err
			}
			s.pruned.Add(float64(n))
			if n > 0 {
				s.log.Info("old resolved alerts removed", "count", n, "resolved_before", cutoff.UTC().Format(time.RFC3339))
			}
			if n < pruneBatch {
				break
			}
		}
	}
	// MinSeverity counts a severity and above: the differences give each severity.
	var atLeast [4]int
	for _, sev := range []Severity{SeverityInfo, SeverityWarning, SeverityCritical} {
		n, err := s.st.CountAlerts(ctx, AlertFilter{State: AlertOpen, MinSeverity: sev})
		if err != nil {
			return err
		}
		atLeast[sev] = n
	}
	for _, sev := range []Severity{SeverityInfo, SeverityWarning, SeverityCritical} {
		n := atLeast[sev]
		if sev < SeverityCritical {
			n -= atLeast[sev+1]
		}
		s.open.WithLabelValues(sev.String()).Set(float64(n))
	}
	return nil
}

// SetAlertState acknowledges or resolves an alert on behalf of who.
func (s *Service) SetAlertState(ctx context.Context, id uint64, to AlertState, who, note string) (Alert, error) {
	if who == "" {
		return Alert{}, fmt.Errorf("%w: who is required (audit)", ErrInvalid)
	}
	a, err := s.st.SetAlertState(ctx, id, to, who, note, s.now())
	if err == nil {
		s.log.Info("alert "+to.String(), "alert_id", id, "who", who)
	}
	return a, err
}

// WatchAlerts calls send for every alert with an id above after (all new ones when after
// is nil) that matches f, in id order, until ctx ends or send fails. It never skips an
// id: ids become visible in order, and the walk resumes from the last id it read.
//
// ready, when not nil, is called once the starting point is fixed: every alert raised
// after that call is sent.
func (s *Service) WatchAlerts(ctx context.Context, after *uint64, f AlertFilter, ready func() error, send func(Alert) error) error {
	var last uint64
	if after != nil {
		last = *after
	} else {
		var err error
		if last, err = s.st.LastAlertID(ctx); err != nil {
			return err
		}
	}
	if ready != nil {
		if err := ready(); err != nil {
			return err
		}
	}
	const page = 500
	poll := time.NewTimer(s.cfg.WatchPoll)
	defer poll.Stop()
	for {
		woken := s.wake.wait() // before reading, so an alert raised meanwhile is not missed
		list, err := s.st.ListAlerts(ctx, AlertFilter{AfterID: last, Ascending: true, Limit: page})
		if err != nil {
			return err
		}
		for i := range list {
			last = list[i].ID
			if f.Match(&list[i]) {
				if err := send(list[i]); err != nil {
					return err
				}
			}
		}
		if len(list) == page {
			continue
		}
		poll.Reset(s.cfg.WatchPoll)
		select {
		case <-ctx.Done():
			return nil
		case <-woken:
		case <-poll.C:
		}
	}
}
