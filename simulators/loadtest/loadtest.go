// Package loadtest measures a running Fleetwire: it publishes a simulated fleet at a
// requested rate, watches the dispatcher side (the gRPC WatchVehicles stream and the
// event stream) and reports end-to-end latency from device publish to dispatcher
// receipt, achieved throughput, records that never arrived, and errors, as a summary
// table, JSON and an HTML report. A ceiling mode raises the rate step by step until
// latency or loss crosses a limit.
package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
	"github.com/fleetwire/fleetwire/simulators/fleetsim"
)

// Config describes a load test.
type Config struct {
	Vehicles int           // simulated vehicles (default 20 000)
	Rate     float64       // records per second over the fleet (default 20 000)
	Duration time.Duration // how long to publish (default 60s)
	Seed     int64
	Prefix   string    // vehicle id prefix, always under telemetry.LoadTestPrefix; default "loadtest-<run id>-"
	Center   geo.Point // zero: the simulator's default

	BatchRecords int           // records per packet (default 1)
	MaxInFlight  int           // unacknowledged publishes (default 8192)
	Drain        time.Duration // after publishing, how long to wait for stragglers (default 10s)
	// Realistic keeps the trackers' faults (invalid fixes, duplicates, tunnels). Off by
	// default: a measurement wants every record to be accepted and visible.
	Realistic bool
	// Zones, when above 0, creates that many zones tiling the simulated city (ZoneLayout)
	// through the geofence gRPC API before the run, and deletes them after it; zone events
	// are then measured on WatchZoneEvents the way vehicle updates are on WatchVehicles,
	// and a step's zone-event p99 counts in its verdict. Needs the dispatcher side (gRPC).
	Zones int

	// Ceiling mode: start at Rate, multiply by CeilingFactor each step of StepDuration,
	// stop at the first step whose p99 exceeds P99Limit or whose loss exceeds LossLimit
	// (or that the generator could not publish at the requested rate), or at CeilingMax.
	// The same vehicles report in every step, only more often: a step measures the rate,
	// not the cost of introducing a fresh fleet (a status event and new state per vehicle).
	Ceiling       bool
	CeilingFactor float64       // default 1.5
	CeilingMax    float64       // default 1 000 000
	StepDuration  time.Duration // default 30s
	P99Limit      time.Duration // default 50ms
	LossLimit     float64       // fraction of records, default 0

	// Protocol is how the simulated trackers reach the platform: fleetsim.ProtocolNATS
	// (default, through the tester's NATS connection), ProtocolTeltonika (Codec 8E over TCP
	// to TeltonikaAddr), ProtocolMQTT or ProtocolCoAP (to DeviceAddr). Records of every
	// protocol are scored against the same ledger; Teltonika records carry no sequence, so
	// they are matched by device time (millisecond resolution, as the platform stores it).
	Protocol      string
	TeltonikaAddr string
	DeviceAddr    string
	// Register provisions one simulated vehicle as a device before the run, so that each
	// tracker logs in with its own credential, as a real one does: imei is its Teltonika
	// IMEI (fleetsim.IMEI), and the secret returned is its MQTT or CoAP password. Required
	// for every protocol but NATS.
	Register func(ctx context.Context, vehicle, imei string) (secret string, err error)

	// Progress receives a live status line (carriage-return updated); nil is quiet.
	Progress io.Writer
}

// DefaultConfig returns 20 000 vehicles at 20 000 records/s for a minute.
func DefaultConfig() Config {
	return Config{
		Vehicles: 20_000, Rate: 20_000, Duration: time.Minute, Seed: 1, BatchRecords: 1,
		MaxInFlight: 8192, Drain: 10 * time.Second, CeilingFactor: 1.5, CeilingMax: 1_000_000,
		StepDuration: 30 * time.Second, P99Limit: 50 * time.Millisecond,
	}
}

// ErrConfig is wrapped by configuration errors.
var ErrConfig = errors.New("invalid load test config")

func (c *Config) normalize() error {
	d := DefaultConfig()
	if c.Vehicles <= 0 {
		c.Vehicles = d.Vehicles
	}
	if c.Rate <= 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) {
		return fmt.Errorf("%w: rate %v", ErrConfig, c.Rate)
	}
	if c.Rate/float64(c.Vehicles) > 100 {
		return fmt.Errorf("%w: %v records/s from %d vehicles is more than 100 per vehicle per second", ErrConfig, c.Rate, c.Vehicles)
	}
	if c.Duration <= 0 {
		c.Duration = d.Duration
	}
	if c.Prefix == "" {
		c.Prefix = strings.ToLower(fmt.Sprintf("%x-", time.Now().Unix()%0xfffff))
	}
	if !telemetry.IsLoadTest(c.Prefix) {
		c.Prefix = telemetry.LoadTestPrefix + c.Prefix
	}
	if c.BatchRecords <= 0 {
		c.BatchRecords = 1
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = d.MaxInFlight
	}
	if c.Drain <= 0 {
		c.Drain = d.Drain
	}
	if c.CeilingFactor <= 1 {
		c.CeilingFactor = d.CeilingFactor
	}
	if c.CeilingMax <= 0 {
		c.CeilingMax = d.CeilingMax
	}
	if c.StepDuration <= 0 {
		c.StepDuration = d.StepDuration
	}
	if c.P99Limit <= 0 {
		c.P99Limit = d.P99Limit
	}
	if c.Zones < 0 || c.Zones > 10_000 {
		return fmt.Errorf("%w: %d zones (want 0..10000)", ErrConfig, c.Zones)
	}
	switch c.Protocol {
	case "", fleetsim.ProtocolNATS:
		c.Protocol = fleetsim.ProtocolNATS
	case fleetsim.ProtocolTeltonika, fleetsim.ProtocolMQTT, fleetsim.ProtocolCoAP:
		if c.Register == nil {
			return fmt.Errorf("%w: protocol %s needs the devices registered (Register)", ErrConfig, c.Protocol)
		}
		if c.Protocol == fleetsim.ProtocolTeltonika && c.TeltonikaAddr == "" || c.Protocol != fleetsim.ProtocolTeltonika && c.DeviceAddr == "" {
			return fmt.Errorf("%w: protocol %s needs the gateway's address", ErrConfig, c.Protocol)
		}
	default:
		return fmt.Errorf("%w: protocol %q (want nats, teltonika, mqtt or coap)", ErrConfig, c.Protocol)
	}
	return nil
}

// Tester runs load tests against one Fleetwire.
type Tester struct {
	cfg      Config
	log      *slog.Logger
	nc       *nats.Conn
	grpc     *grpc.ClientConn // nil: no dispatcher side
	ownsGRPC bool             // New dialled it, so Close closes it

	current      atomic.Pointer[ledger]
	watchErrors  atomic.Uint64
	eventErrors  atomic.Uint64
	watching     atomic.Bool
	zoneWatching atomic.Bool
}

// New prepares a load test publishing through nc and, when grpcAddr is not empty,
// watching the tracking service there.
func New(cfg Config, nc *nats.Conn, grpcAddr string, log *slog.Logger) (*Tester, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	if cfg.Zones > 0 && grpcAddr == "" {
		return nil, fmt.Errorf("%w: zones need the dispatcher side (a gRPC address)", ErrConfig)
	}
	t := &Tester{cfg: cfg, log: log, nc: nc}
	if grpcAddr != "" {
		conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, fmt.Errorf("grpc %s: %w", grpcAddr, err)
		}
		t.grpc, t.ownsGRPC = conn, true
	}
	return t, nil
}

// NewWithConn is New watching the dispatcher side through conn, a connection the caller
// dialled (with TLS and a token, say) and keeps: Close leaves it open.
func NewWithConn(cfg Config, nc *nats.Conn, conn *grpc.ClientConn, log *slog.Logger) (*Tester, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	if cfg.Zones > 0 && conn == nil {
		return nil, fmt.Errorf("%w: zones need the dispatcher side (a gRPC connection)", ErrConfig)
	}
	return &Tester{cfg: cfg, log: log, nc: nc, grpc: conn}, nil
}

// Close releases the gRPC connection New dialled.
func (t *Tester) Close() {
	if t.grpc != nil && t.ownsGRPC {
		_ = t.grpc.Close()
	}
}

// Run runs the test (one step, or the ceiling search) and returns its result.
func (t *Tester) Run(ctx context.Context) (*Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	res := &Result{
		Started: time.Now().UTC(), Vehicles: t.cfg.Vehicles, BatchRecords: t.cfg.BatchRecords,
		Target: t.nc.ConnectedUrlRedacted(), Dispatcher: t.grpc != nil, Zones: t.cfg.Zones,
		Protocol: t.cfg.Protocol,
	}
	switch t.cfg.Protocol {
	case fleetsim.ProtocolTeltonika:
		res.Gateway = t.cfg.TeltonikaAddr
	case fleetsim.ProtocolMQTT, fleetsim.ProtocolCoAP:
		res.Gateway = t.cfg.DeviceAddr
	}
	if t.grpc != nil {
		res.GRPC = t.grpc.Target()
	}
	var wg sync.WaitGroup
	if t.grpc != nil {
		wg.Add(1)
		go func() { defer wg.Done(); t.watch(ctx) }()
		// Wait until the watch stream is established, so early records are not missed.
		deadline := time.Now().Add(10 * time.Second)
		for !t.watching.Load() && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		if !t.watching.Load() {
			cancel()
			wg.Wait()
			return nil, fmt.Errorf("WatchVehicles on %s: no stream after 10s", res.GRPC)
		}
		time.Sleep(300 * time.Millisecond) // let the server register the watcher
	}
	if t.cfg.Zones > 0 {
		ids, err := t.createZones(ctx)
		defer t.deleteZones(ctx, ids)
		if err != nil {
			cancel()
			wg.Wait()
			return nil, err
		}
		wg.Add(1)
		go func() { defer wg.Done(); t.watchZones(ctx) }()
		deadline := time.Now().Add(10 * time.Second)
		for !t.zoneWatching.Load() && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		if !t.zoneWatching.Load() {
			cancel()
			wg.Wait()
			return nil, fmt.Errorf("WatchZoneEvents on %s: no stream after 10s", res.GRPC)
		}
	}
	sub, err := t.nc.Subscribe(bus.EventWildcard(), t.onEvent)
	if err != nil {
		return nil, fmt.Errorf("subscribe to events: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(1<<20, 256<<20)

	fleet, err := t.newFleet(ctx, t.cfg.Rate)
	if err != nil {
		cancel()
		wg.Wait()
		return nil, err
	}
	if !t.cfg.Ceiling {
		st, err := t.step(ctx, fleet, 1, 1, t.cfg.Rate, t.cfg.Duration)
		if st != nil {
			st.Pass, st.Verdict = t.judge(st)
			res.Steps = append(res.Steps, *st)
		}
		cancel()
		wg.Wait()
		return res, err
	}
	c := &Ceiling{P99LimitMs: ms(t.cfg.P99Limit), LossLimit: t.cfg.LossLimit}
	res.Ceiling = c
	rate := t.cfg.Rate
	planned := 1 + int(math.Floor(math.Log(t.cfg.CeilingMax/t.cfg.Rate)/math.Log(t.cfg.CeilingFactor)))
	for i := 1; rate <= t.cfg.CeilingMax && ctx.Err() == nil; i++ {
		if rate/float64(t.cfg.Vehicles) > 100 {
			c.Reason = "rate per vehicle above 100/s; add vehicles"
			break
		}
		if err := fleet.SetInterval(interval(t.cfg.Vehicles, rate)); err != nil {
			cancel()
			wg.Wait()
			return res, err
		}
		st, err := t.step(ctx, fleet, i, planned, rate, t.cfg.StepDuration)
		if err != nil {
			cancel()
			wg.Wait()
			return res, err
		}
		st.Pass, st.Verdict = t.judge(st)
		res.Steps = append(res.Steps, *st)
		if !st.Pass {
			c.Reason = fmt.Sprintf("%.0f records/s: %s", rate, st.Verdict)
			break
		}
		c.HighestSustained = st.Rate
		rate *= t.cfg.CeilingFactor
	}
	if c.Reason == "" {
		c.Reason = "reached the maximum rate tried"
	}
	cancel()
	wg.Wait()
	return res, nil
}

// judge decides whether a ceiling step sustained its rate.
func (t *Tester) judge(st *StepResult) (bool, string) {
	switch {
	case float64(st.Published) < 0.95*st.Rate*(st.DurationS-float64(t.cfg.Vehicles)/st.Rate):
		// The first reporting interval is a ramp (vehicles start at spread phases).
		return false, fmt.Sprintf("the simulator published only %.0f/s", st.PublishRate)
	case st.Dispatcher && st.Latency.Samples == 0:
		return false, "no updates reached the dispatcher"
	case st.Dispatcher && st.Latency.P99Ms > ms(t.cfg.P99Limit):
		return false, fmt.Sprintf("p99 %.1f ms > %.1f ms", st.Latency.P99Ms, ms(t.cfg.P99Limit))
	case st.ZoneLatency.Samples > 0 && st.ZoneLatency.P99Ms > ms(t.cfg.P99Limit):
		return false, fmt.Sprintf("zone event p99 %.1f ms > %.1f ms", st.ZoneLatency.P99Ms, ms(t.cfg.P99Limit))
	case st.Dispatcher && st.LossRatio > t.cfg.LossLimit:
		return false, fmt.Sprintf("%d records missing (%.3f%%)", st.Missing, 100*st.LossRatio)
	case st.PublishErrors > 0:
		return false, fmt.Sprintf("%d publish errors", st.PublishErrors)
	}
	return true, "ok"
}

// interval is the reporting interval that makes vehicles report rate records/s together.
func interval(vehicles int, rate float64) time.Duration {
	return time.Duration(float64(time.Second) * float64(vehicles) / rate)
}

// newFleet builds the simulated fleet of the run; every step reuses it, so its vehicles
// keep their positions, sequences and zone memberships from one rate to the next.
func (t *Tester) newFleet(ctx context.Context, rate float64) (*fleetsim.Fleet, error) {
	fc := fleetsim.DefaultConfig()
	fc.Vehicles = t.cfg.Vehicles
	fc.Seed = t.cfg.Seed
	fc.Prefix = t.cfg.Prefix
	if t.cfg.Center != (geo.Point{}) {
		fc.Center = t.cfg.Center
	}
	fc.FixedInterval = interval(t.cfg.Vehicles, rate)
	fc.BatchRecords = t.cfg.BatchRecords
	fc.MaxInFlight = t.cfg.MaxInFlight
	fc.Tick = 20 * time.Millisecond // smooth the publishing over each second
	if !t.cfg.Realistic {
		fc.InvalidFixProb, fc.DuplicateProb, fc.Tunnels, fc.FaultsPerHour = 0, 0, false, 0
	}
	wall := true
	fc.SendWallTime = &wall
	if t.cfg.Protocol != fleetsim.ProtocolNATS {
		fc.Protocol, fc.TeltonikaAddr, fc.DeviceAddr = t.cfg.Protocol, t.cfg.TeltonikaAddr, t.cfg.DeviceAddr
		if err := t.register(ctx, &fc); err != nil {
			return nil, err
		}
	}
	fleet, err := fleetsim.New(fc, t.log)
	if err != nil {
		return nil, err
	}
	fleet.Observe(func(p fleetsim.Packet) {
		if l := t.current.Load(); l != nil {
			l.published(p)
		}
	})
	return fleet, nil
}

// register provisions every vehicle of fc as its device and keeps the secrets in fc.
func (t *Tester) register(ctx context.Context, fc *fleetsim.Config) error {
	sim, err := fleetsim.NewSim(*fc) // the same ids the fleet will have: they follow from the config
	if err != nil {
		return err
	}
	ids := sim.VehicleIDs()
	fc.DeviceSecrets = make(map[string]string, len(ids))
	for _, id := range ids {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		secret, err := t.cfg.Register(ctx, id, fleetsim.IMEI(id))
		if err != nil {
			return fmt.Errorf("register %s: %w", id, err)
		}
		fc.DeviceSecrets[id] = secret
	}
	t.log.Info("simulated vehicles registered as devices", "protocol", fc.Protocol, "devices", len(ids))
	return nil
}

// step publishes at rate for d, then waits up to Drain for what is still on its way.
func (t *Tester) step(ctx context.Context, fleet *fleetsim.Fleet, idx, of int, rate float64, d time.Duration) (*StepResult, error) {
	start := time.Now()
	l := newLedger(start)
	t.current.Store(l)
	defer t.current.Store(nil)
	watchErr0, evErr0 := t.watchErrors.Load(), t.eventErrors.Load()
	fs0 := fleet.Stats() // the fleet's counters run over all steps

	fctx, fcancel := context.WithTimeout(ctx, d)
	defer fcancel()
	done := make(chan error, 1)
	go func() { done <- fleet.Run(fctx, t.nc) }()
	label := fmt.Sprintf("%.0f rec/s", rate)
	if of > 1 {
		label = fmt.Sprintf("step %d: %s", idx, label)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var runErr error
	publishing := true
	var drainEnd time.Time
	for publishing || time.Now().Before(drainEnd) {
		select {
		case runErr = <-done:
			publishing = false
			drainEnd = time.Now().Add(t.cfg.Drain)
			if t.grpc == nil {
				drainEnd = time.Now()
			}
		case <-tick.C:
			t.progress(label, l, fleet, start, d, publishing)
			if !publishing {
				if p, _ := l.pending(); p == 0 {
					drainEnd = time.Now()
				}
			}
		case <-ctx.Done():
			if publishing {
				runErr = <-done
			}
			publishing, drainEnd = false, time.Now()
		}
	}
	if t.cfg.Progress != nil {
		fmt.Fprint(t.cfg.Progress, "\r\x1b[K")
	}
	fs := fleet.Stats()
	fs.Published -= fs0.Published
	fs.Acked -= fs0.Acked
	fs.PublishErrors -= fs0.PublishErrors
	fs.Dropped -= fs0.Dropped
	st := summarize(l, fs, rate, d, t.grpc != nil)
	st.WatchErrors = t.watchErrors.Load() - watchErr0
	st.EventErrors = t.eventErrors.Load() - evErr0
	if runErr != nil {
		return st, fmt.Errorf("fleet: %w", runErr)
	}
	return st, ctx.Err()
}

func (t *Tester) progress(label string, l *ledger, f *fleetsim.Fleet, start time.Time, d time.Duration, publishing bool) {
	if t.cfg.Progress == nil {
		return
	}
	el := time.Since(start)
	l.mu.Lock()
	var pub, del uint64
	var last hist
	if n := len(l.series); n >= 2 {
		s := &l.series[n-2] // the last complete second
		pub, del = s.published, s.delivered
		last = s.lat
	}
	l.mu.Unlock()
	backlog, _ := l.pending()
	st := f.Stats()
	phase := fmt.Sprintf("ETA %s", clock(max(0, d-el)))
	if !publishing {
		phase = "draining"
	}
	fmt.Fprintf(t.cfg.Progress, "\r\x1b[K[%s] %s/%s  sent %d/s  seen %d/s  p50 %.1fms p99 %.1fms  backlog %d  unacked %d  %s",
		label, clock(el), clock(d), pub, del, ms(last.quantile(0.5)), ms(last.quantile(0.99)),
		backlog, st.Published-st.Acked, phase)
}

func clock(d time.Duration) string {
	s := int(d.Round(time.Second) / time.Second)
	return fmt.Sprintf("%02d:%02d", s/60, s%60)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// watch follows WatchVehicles, reconnecting after errors, and feeds the current ledger.
func (t *Tester) watch(ctx context.Context) {
	client := fleetv1.NewTrackingServiceClient(t.grpc)
	for ctx.Err() == nil {
		stream, err := client.WatchVehicles(ctx, &fleetv1.WatchVehiclesRequest{LoadTest: true})
		if err == nil {
			err = t.receive(ctx, stream)
		}
		t.watching.Store(false)
		if ctx.Err() != nil {
			return
		}
		t.watchErrors.Add(1)
		t.log.Warn("WatchVehicles failed; reconnecting", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (t *Tester) receive(ctx context.Context, stream grpc.ServerStreamingClient[fleetv1.WatchVehiclesResponse]) error {
	// The call has reached the server; it sends headers with its first message, which
	// does not come while the snapshot is empty, so do not wait for them.
	t.watching.Store(true)
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		now := time.Now()
		if resp.GetSnapshot() {
			continue
		}
		l := t.current.Load()
		if l == nil {
			continue
		}
		v := resp.GetVehicle()
		st := v.GetState()
		var sent time.Time
		if st.GetLastSentTime() != nil {
			sent = st.GetLastSentTime().AsTime()
		}
		var dev time.Time
		if st.GetLastDeviceTime() != nil {
			dev = st.GetLastDeviceTime().AsTime()
		}
		l.observe(v.GetVehicleId(), st.GetLastSequence(), dev, sent, now)
	}
}

func (t *Tester) onEvent(m *nats.Msg) {
	l := t.current.Load()
	if l == nil {
		return
	}
	now := time.Now()
	var ev fleetv1.Event
	if err := proto.Unmarshal(m.Data, &ev); err != nil {
		t.eventErrors.Add(1)
		return
	}
	var dev time.Time
	if ev.GetTime() != nil {
		dev = ev.GetTime().AsTime()
	}
	l.event(ev.GetSource()+"."+ev.GetKind(), ev.GetVehicleId(), dev, now)
}
