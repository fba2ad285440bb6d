// Package storeguard notices when a service's Redis store has lost its data, so the
// service never serves, or acknowledges its input, against a store that came back empty.
//
// Each store carries a generation marker, <namespace>epoch, a random id written when the
// store is first used. The id each consumer last worked against is recorded in NATS
// (key-value bucket FLEET_STORE_EPOCHS, one key per durable consumer), next to the
// consumer's own resume point. The two are compared at start, every Interval, and around
// every batch (bus.GuardBatches):
//
//   - marker present and equal to what the consumers recorded: the store is the one the
//     resume points describe;
//   - marker missing while a consumer recorded one (Redis restarted without its data, a
//     FLUSHALL, a new empty server): the store lost what the resume points say was
//     applied. Whatever was written since (the batches in flight) is wiped, a new marker
//     is written, and the service rebuilds from the start of the retained streams;
//   - marker different from the recorded one (the store was replaced, or another instance
//     found it empty and renewed it): the same rebuild, without the wipe unless this
//     instance owns every partition.
//
// The checks around a batch leave a window: Redis can restart empty after the check and
// before the batch reads or writes. The store's own transactions close it (Fence): each
// batch read and write checks the marker in the same MULTI/EXEC, so no event is computed
// from, and nothing is written into, a store that came back empty.
//
// At run time a mismatch fails the batch (nothing is acknowledged), makes the process
// report NOT_SERVING, and Run returns ErrStoreLost: the process starts again and takes
// the start-time path above. A rebuild re-reads records whose events were stored before;
// the event stream refuses them again (event identity), so nothing is emitted twice.
package storeguard

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/metrics"
)

// Bucket is the key-value bucket holding the epoch each durable consumer worked against.
const Bucket = "FLEET_STORE_EPOCHS"

// DefaultInterval is how often a running guard looks at the marker between batches: an
// idle service notices a lost store within it.
const DefaultInterval = time.Second

// ErrStoreLost reports a store whose marker is gone or changed while the process ran.
var ErrStoreLost = errors.New("store lost its data")

// Durable is a consumer whose resume point depends on the store.
type Durable struct {
	Stream string
	// Name is the service's durable: the key of its recorded epoch.
	Name string
	// Consumer is the durable that actually delivers to the service when it differs
	// from Name (the all-in-one's shared consumers): its ack floor and progress count.
	Consumer string
}

func (d Durable) consumer() string {
	if d.Consumer != "" {
		return d.Consumer
	}
	return d.Name
}

// Action is what Decide concludes at start.
type Action int

// Actions.
const (
	// OK: the store is the one the consumers worked against (or a new store and new
	// consumers); resume where the consumers are.
	OK Action = iota
	// Rebuild: the store lost data the consumers applied; rebuild from the stream.
	Rebuild
)

// Decision is Decide's verdict.
type Decision struct {
	Action Action
	// Wipe: delete whatever the store holds under the namespace before the rebuild (what
	// was written after the loss, from state that was already gone).
	Wipe bool
	// NewMarker: the store has no marker and gets a new one.
	NewMarker bool
	Reason    string
}

// Decide is the start-time rule, without I/O. marker is the store's marker ("" when
// missing); hasData says whether the store holds any key of the service besides it;
// recorded are the epochs the durables recorded ("" when none); applied says, per durable,
// whether its consumer acknowledged anything; allPartitions whether this instance is the
// only writer of the store.
func Decide(marker string, hasData bool, recorded []string, applied []bool, allPartitions bool) Decision {
	anyRecorded, anyApplied, mismatch := false, false, ""
	for i, r := range recorded {
		if r != "" {
			anyRecorded = true
			if marker != "" && r != marker {
				mismatch = r
			}
		}
		if i < len(applied) && applied[i] {
			anyApplied = true
		}
	}
	switch {
	case marker == "" && anyRecorded:
		return Decision{Action: Rebuild, Wipe: true, NewMarker: true,
			Reason: "the store has no generation marker but the consumers worked against one: it lost its data"}
	case marker == "" && hasData:
		// Keys and no marker, nothing recorded: a store written before markers existed.
		return Decision{Action: OK, NewMarker: true, Reason: "store predates generation markers; adopted"}
	case marker == "" && anyApplied:
		return Decision{Action: Rebuild, NewMarker: true,
			Reason: "the store is empty but the consumers have applied input: it lost its data"}
	case marker == "":
		return Decision{Action: OK, NewMarker: true, Reason: "new store"}
	case mismatch != "":
		return Decision{Action: Rebuild, Wipe: allPartitions,
			Reason: "the store's generation differs from the one the consumers worked against"}
	}
	return Decision{Action: OK, Reason: "store generation matches"}
}

// Config describes one service's store.
type Config struct {
	Service string
	// Namespace is the prefix of every key the store writes (e.g. "fw:trk:").
	Namespace string
	Durables  []Durable
	// AllPartitions: this instance consumes every partition, so it is the store's only
	// writer and may wipe it.
	AllPartitions bool
	Interval      time.Duration // default DefaultInterval
	// Replicas of the FLEET_STORE_EPOCHS bucket when this guard creates it (default 1).
	Replicas int
}

// Metrics are shared by the guards of a process.
type Metrics struct {
	Losses *prometheus.CounterVec // store losses found, by service and when (start, run)
	OK     *prometheus.GaugeVec   // 1 while the store's generation is the expected one
}

// NewMetrics creates and registers the guards' metrics (reg may be nil).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Losses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetwire_store_losses_total",
			Help: "Stores found to have lost their data (generation marker missing or changed), by service and when.",
		}, []string{"store", "when"}),
		OK: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fleetwire_store_epoch_ok",
			Help: "1 while the store's generation marker is the one this process works against.",
		}, []string{"store"}),
	}
	if err := metrics.RegisterShared(reg, &m.Losses); err != nil {
		return nil, err
	}
	if err := metrics.RegisterShared(reg, &m.OK); err != nil {
		return nil, err
	}
	return m, nil
}

// Guard watches one service's store.
type Guard struct {
	cfg Config
	rdb *redis.Client
	b   *bus.Bus
	log *slog.Logger
	m   *Metrics

	kv      jetstream.KeyValue
	epoch   string // the marker this process works against (set by Prepare)
	pending bool   // Prepare decided a rebuild: record the epoch once the consumers rewound

	fence *Fence // the store's reads and writes check the epoch (SetEpoch in Prepare)

	lost     atomic.Bool
	lostOnce sync.Once
	lostCh   chan struct{}
}

// New returns a guard; nothing is read until Prepare.
func New(cfg Config, rdb *redis.Client, b *bus.Bus, m *Metrics, log *slog.Logger) *Guard {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	g := &Guard{cfg: cfg, rdb: rdb, b: b, m: m, log: log.With("store", cfg.Service), lostCh: make(chan struct{})}
	g.fence = NewFence(g.markerKey(), g.markLost)
	return g
}

// Fence is the store's transaction-level check of the epoch: the store's batch reads
// and writes go through it (see Fence), and a refusal marks the store lost here.
func (g *Guard) Fence() *Fence { return g.fence }

func (g *Guard) markerKey() string { return g.cfg.Namespace + "epoch" }
func (g *Guard) lockKey() string   { return g.cfg.Namespace + "epoch-lock" }

// Prepare checks the store against the consumers' records before the service starts and
// returns whether the service must rebuild from the stream. It wipes the store when the
// rule says so, writes a new marker when there is none, and registers the batch guard.
func (g *Guard) Prepare(ctx context.Context) (rebuild bool, err error) {
	kv, err := g.b.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Store generation each durable consumer last worked against (pkg/storeguard)",
		History:     1,
		Replicas:    max(g.cfg.Replicas, 1),
	})
	if err != nil {
		return false, fmt.Errorf("store epoch bucket: %w", err)
	}
	g.kv = kv
	marker, err := g.marker(ctx)
	if err != nil {
		return false, err
	}
	hasData := false
	if marker == "" {
		if hasData, err = g.hasData(ctx); err != nil {
			return false, err
		}
	}
	recorded := make([]string, len(g.cfg.Durables))
	applied := make([]bool, len(g.cfg.Durables))
	for i, d := range g.cfg.Durables {
		if e, err := kv.Get(ctx, d.Name); err == nil {
			recorded[i] = string(e.Value())
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return false, fmt.Errorf("store epoch of %s: %w", d.Name, err)
		}
		c, err := g.b.Consumer(ctx, d.Stream, d.consumer())
		switch {
		case err == nil:
			applied[i] = c.CachedInfo().AckFloor.Stream > 0
		case !errors.Is(err, jetstream.ErrConsumerNotFound):
			return false, fmt.Errorf("consumer %s: %w", d.consumer(), err)
		}
	}
	d := Decide(marker, hasData, recorded, applied, g.cfg.AllPartitions)
	if d.Action == Rebuild {
		g.m.Losses.WithLabelValues(g.cfg.Service, "start").Inc()
		g.log.Error("STORE LOST ITS DATA: rebuilding from the stream before serving", "reason", d.Reason,
			"marker", marker, "recorded", recorded, "wipe", d.Wipe)
	} else {
		g.log.Info("store generation checked", "reason", d.Reason, "marker", marker)
	}
	switch {
	case d.Wipe:
		if marker, err = g.wipeAndRenew(ctx); err != nil {
			return false, err
		}
	case d.NewMarker:
		if marker, err = g.newMarker(ctx); err != nil {
			return false, err
		}
	}
	g.epoch = marker
	g.fence.SetEpoch(marker)
	if d.Action == Rebuild {
		// Recorded once the consumers have rewound (Run): recorded now, a crash before the
		// rewind would resume past what the store holds.
		g.pending = true
	} else if err := g.record(ctx); err != nil {
		return false, err
	}
	g.m.OK.WithLabelValues(g.cfg.Service).Set(1)
	g.b.GuardBatches(g.cfg.Service, g.Check)
	return d.Action == Rebuild, nil
}

// Service is the service whose store this guard watches.
func (g *Guard) Service() string { return g.cfg.Service }

// Epoch is the marker this process works against.
func (g *Guard) Epoch() string { return g.epoch }

// OK reports whether no loss was seen since Prepare.
func (g *Guard) OK() bool { return !g.lost.Load() }

// Check compares the marker with the expected one; a difference marks the store lost.
// An unreachable Redis is an error, not a loss.
func (g *Guard) Check(ctx context.Context) error {
	if g.lost.Load() {
		return ErrStoreLost
	}
	m, err := g.marker(ctx)
	if err != nil {
		return err
	}
	if m != g.epoch {
		g.markLost(m)
		return ErrStoreLost
	}
	return nil
}

func (g *Guard) markLost(found string) {
	g.lostOnce.Do(func() {
		g.lost.Store(true)
		g.m.Losses.WithLabelValues(g.cfg.Service, "run").Inc()
		g.m.OK.WithLabelValues(g.cfg.Service).Set(0)
		g.log.Error("STORE LOST ITS DATA while running: refusing to acknowledge input; restarting to rebuild from the stream",
			"expected_marker", g.epoch, "found_marker", found)
		close(g.lostCh)
	})
}

// Run checks the marker every Interval until ctx ends or the store is lost (ErrStoreLost).
// After a start-time rebuild it records the epoch for the durables once their consumers
// have rewound.
func (g *Guard) Run(ctx context.Context) error {
	t := time.NewTicker(g.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-g.lostCh:
			return fmt.Errorf("%s: %w", g.cfg.Service, ErrStoreLost)
		case <-t.C:
		}
		if err := g.Check(ctx); err != nil && !errors.Is(err, ErrStoreLost) && ctx.Err() == nil {
			g.log.Warn("store generation not checked", "err", err)
		}
		if g.pending && g.rewound() {
			if err := g.record(ctx); err != nil {
				g.log.Warn("record store generation", "err", err)
				continue
			}
			g.pending = false
			g.log.Info("store generation recorded after the rebuild started", "marker", g.epoch)
		}
	}
}

// rewound reports whether every durable's consumer has passed its start (and so its
// rewind): Bus.Lag knows it once a consumer has applied a batch or found nothing to read.
func (g *Guard) rewound() bool {
	lags := g.b.Lag()
	for _, d := range g.cfg.Durables {
		if l, ok := lags[d.consumer()]; !ok || l < 0 {
			return false
		}
	}
	return true
}

func (g *Guard) record(ctx context.Context) error {
	for _, d := range g.cfg.Durables {
		if _, err := g.kv.PutString(ctx, d.Name, g.epoch); err != nil {
			return fmt.Errorf("record store epoch of %s: %w", d.Name, err)
		}
	}
	return nil
}

func (g *Guard) marker(ctx context.Context) (string, error) {
	m, err := g.rdb.Get(ctx, g.markerKey()).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("store marker: %w", err)
	}
	return m, nil
}

func (g *Guard) hasData(ctx context.Context) (bool, error) {
	var cursor uint64
	for {
		keys, next, err := g.rdb.Scan(ctx, cursor, g.cfg.Namespace+"*", 1000).Result()
		if err != nil {
			return false, fmt.Errorf("scan store: %w", err)
		}
		for _, k := range keys {
			if k != g.markerKey() && k != g.lockKey() {
				return true, nil
			}
		}
		if cursor = next; cursor == 0 {
			return false, nil
		}
	}
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// newMarker writes a marker unless one appeared meanwhile (another instance), and
// returns the marker in place.
func (g *Guard) newMarker(ctx context.Context) (string, error) {
	if err := g.rdb.SetNX(ctx, g.markerKey(), newID(), 0).Err(); err != nil {
		return "", fmt.Errorf("write store marker: %w", err)
	}
	m, err := g.marker(ctx)
	if err == nil && m == "" {
		err = errors.New("store marker vanished after it was written")
	}
	return m, err
}

// wipeAndRenew deletes the namespace and writes a new marker, under a lock so that of
// several instances finding the store lost at once one wipes and the others wait for its
// marker (and do not wipe what it has rebuilt since).
func (g *Guard) wipeAndRenew(ctx context.Context) (string, error) {
	me := newID()
	for {
		ok, err := g.rdb.SetNX(ctx, g.lockKey(), me, 2*time.Minute).Result()
		if err != nil {
			return "", fmt.Errorf("store wipe lock: %w", err)
		}
		if ok {
			break
		}
		// Another instance wipes; take its marker when it is there.
		if m, err := g.marker(ctx); err != nil || m != "" {
			return m, err
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	defer g.rdb.Del(context.WithoutCancel(ctx), g.lockKey())
	n, err := Wipe(ctx, g.rdb, g.cfg.Namespace, g.lockKey())
	if err != nil {
		return "", err
	}
	g.log.Warn("store wiped before the rebuild", "keys", n)
	m := newID()
	if err := g.rdb.Set(ctx, g.markerKey(), m, 0).Err(); err != nil {
		return "", fmt.Errorf("write store marker: %w", err)
	}
	return m, nil
}

// Wipe deletes every key under namespace except those in keep, and returns how many.
func Wipe(ctx context.Context, rdb *redis.Client, namespace string, keep ...string) (int, error) {
	var (
		cursor uint64
		n      int
	)
	for {
		keys, next, err := rdb.Scan(ctx, cursor, namespace+"*", 1000).Result()
		if err != nil {
			return n, fmt.Errorf("wipe store: %w", err)
		}
		del := keys[:0]
		for _, k := range keys {
			drop := true
			for _, kk := range keep {
				if k == kk {
					drop = false
				}
			}
			if drop {
				del = append(del, k)
			}
		}
		if len(del) > 0 {
			if err := rdb.Unlink(ctx, del...).Err(); err != nil {
				return n, fmt.Errorf("wipe store: %w", err)
			}
			n += len(del)
		}
		if cursor = next; cursor == 0 {
			return n, nil
		}
	}
}
