package bus

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Partition leases: instances of a service spread the telemetry partitions among
// themselves through a JetStream key-value bucket, with no coordinator of their own.
//
//   - A partition belongs to the instance holding the key "<service>.p<NN>" in
//     LeaseBucket. It is taken with Create (refused while the key exists) and kept with
//     Update at the revision last written (refused if anyone else wrote since). The bucket's
//     MaxAge is the lease TTL: a key not renewed within it is removed by the servers, and
//     the partition is free.
//   - Each instance also keeps "<service>.m.<instance>" alive. An instance holds at most
//     ceil(partitions / instances); above that it releases the surplus, below it takes free
//     partitions, so instances that join get their share and a dead instance's partitions
//     are taken by the others once its keys expire.
//   - Fencing: an instance that writes its lease at local time t0 treats it as valid until
//     t0 + TTL - margin, on its own clock; the servers remove the key no earlier than TTL
//     after they stored it, which is after t0. Every batch runs with a context whose
//     deadline is that validity, refused outright once past it, and the partition's
//     consumer is stopped at it when a renewal did not come through. Before a partition is
//     released its consumer is stopped and everything it held is handed back; a new owner's
//     consumer starts by rewinding the durable to its ack floor. See docs/scaling.md.

// LeaseBucket is the key-value bucket of partition leases and instance presence.
const LeaseBucket = "FLEET_LEASES"

// LeaseConfig turns on partition leases for ConsumePartitions.
type LeaseConfig struct {
	// Instance names this process in the leases (default: host name, pid and a random
	// suffix, so a restarted process is a new instance).
	Instance string
	// TTL is how long a lease lives without renewal (default 3s): the bound on how long a
	// dead instance's partitions stall.
	TTL time.Duration
	// Margin is how much sooner than TTL an owner considers its lease gone (default TTL/4):
	// room for clock-rate differences and for a write in flight to land.
	Margin time.Duration
	// Replicas of the lease bucket when this process creates it (default 1).
	Replicas int
	// Memory keeps the bucket in memory (tests).
	Memory bool

	// beforeRound, when set, runs at the start of every lease round: tests stall it to
	// make a lease lapse while the partition's consumer goes on, as in a starved process.
	beforeRound func()
}

func (c *LeaseConfig) defaults() {
	if c.TTL <= 0 {
		c.TTL = 3 * time.Second
	}
	if c.Margin <= 0 || c.Margin >= c.TTL/2 {
		c.Margin = c.TTL / 4
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.Instance == "" {
		host, _ := os.Hostname()
		c.Instance = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), nuid.Next()[:6])
	}
	c.Instance = leaseToken(c.Instance)
}

// leaseToken keeps only the characters a key-value key may hold.
func leaseToken(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, s)
}

// LeasePartitions makes every later ConsumePartitions call of this bus take its
// partitions by lease (the partitions it is given are the candidates) instead of
// consuming all of them. Shared delivery (ShareTelemetry) is not leased.
func (b *Bus) LeasePartitions(cfg LeaseConfig) {
	cfg.defaults()
	b.leaseCfg = &cfg
}

// Leasing reports whether partitions are taken by lease (LeasePartitions).
func (b *Bus) Leasing() bool { return b.leaseCfg != nil }

// LeaseInstance is this process's name in the leases ("" when not leasing).
func (b *Bus) LeaseInstance() string {
	if b.leaseCfg == nil {
		return ""
	}
	return b.leaseCfg.Instance
}

// Owned returns the partitions this process holds for service, in order (all the
// candidates when not leasing is not tracked here: nil).
func (b *Bus) Owned(service string) []int {
	v, ok := b.owned.Load(service)
	if !ok {
		return nil
	}
	o := v.(*ownedSet)
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]int, 0, len(o.m))
	for p := range o.m {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

type ownedSet struct {
	mu sync.Mutex
	m  map[int]bool
}

// PartitionHooks tell a service which partitions it holds while leasing: Acquired runs
// before the partition's consumer starts (an error is retried by giving the lease back),
// Released after it stopped and before the lease is given up.
type PartitionHooks struct {
	Acquired func(ctx context.Context, p int) error
	Released func(p int)
}

// errLeaseLost fails a batch whose partition lease is no longer certainly ours.
var errLeaseLost = errors.New("partition lease expired")

type lease struct {
	p      int
	key    string
	rev    uint64
	until  atomic.Int64 // unix nanos: valid until, on our clock
	cancel context.CancelFunc
	done   chan struct{}
}

func (l *lease) valid(now time.Time) bool { return now.UnixNano() < l.until.Load() }

type leaser struct {
	b       *Bus
	cfg     LeaseConfig
	kv      jetstream.KeyValue
	service string
	parts   []int
	start   func(ctx context.Context, p int, l *lease) error // runs the partition's consumer
	hooks   PartitionHooks
	held    map[int]*lease
	owned   *ownedSet
	free    map[int]int // partition → consecutive rounds seen free
}

func (b *Bus) leaseBucket(ctx context.Context) (jetstream.KeyValue, error) {
	cfg := b.leaseCfg
	storage := jetstream.FileStorage
	if cfg.Memory {
		storage = jetstream.MemoryStorage
	}
	kv, err := b.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      LeaseBucket,
		Description: "Partition leases and instance presence (pkg/bus leases.go)",
		History:     1,
		TTL:         cfg.TTL,
		Replicas:    cfg.Replicas,
		Storage:     storage,
	})
	if err != nil {
		return nil, fmt.Errorf("lease bucket: %w", err)
	}
	return kv, nil
}

// consumeLeased runs the lease loop for service over the candidate partitions until ctx
// ends; start runs one partition's consumer until its context ends.
func (b *Bus) consumeLeased(ctx context.Context, service string, parts []int, hooks PartitionHooks, start func(ctx context.Context, p int, l *lease) error) error {
	kv, err := b.leaseBucket(ctx)
	if err != nil {
		return err
	}
	o := &ownedSet{m: map[int]bool{}}
	b.owned.Store(service, o)
	l := &leaser{b: b, cfg: *b.leaseCfg, kv: kv, service: leaseToken(service), parts: parts, start: start,
		hooks: hooks, held: map[int]*lease{}, owned: o, free: map[int]int{}}
	// Candidates are tried from a point that depends on the instance, so instances that
	// start together do not all race for partition 0 first.
	h := fnv.New32a()
	_, _ = h.Write([]byte(l.cfg.Instance))
	if n := len(parts); n > 0 {
		off := int(h.Sum32() % uint32(n))
		l.parts = append(slices.Clone(parts[off:]), parts[:off]...)
	}
	b.log.Info("partitions taken by lease", "service", service, "instance", l.cfg.Instance, "candidates", len(parts), "ttl", l.cfg.TTL)
	defer l.releaseAll()
	tick := time.NewTicker(l.cfg.TTL / 6)
	defer tick.Stop()
	for {
		l.round(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (l *leaser) memberKey() string { return l.service + ".m." + l.cfg.Instance }
func (l *leaser) leaseKey(p int) string {
	return fmt.Sprintf("%s.p%02d", l.service, p)
}

// round renews what is held, then takes or gives up partitions toward a fair share.
func (l *leaser) round(ctx context.Context) {
	if l.cfg.beforeRound != nil {
		l.cfg.beforeRound()
	}
	rctx, cancel := context.WithTimeout(ctx, l.cfg.TTL/3)
	defer cancel()
	if _, err := l.kv.PutString(rctx, l.memberKey(), "1"); err != nil && ctx.Err() == nil {
		l.b.log.Debug("lease presence not renewed", "service", l.service, "err", err)
	}
	for p, ls := range l.held {
		select {
		case <-ls.done:
			// The partition's consumer ended on its own (it failed): renewing would keep
			// the partition held with nobody reading it. Give it back; it is taken again
			// (here or elsewhere) with a fresh consumer.
			l.stop(p, true)
			continue
		default:
		}
		t0 := time.Now()
		rev, err := l.kv.Update(rctx, ls.key, []byte(l.cfg.Instance), ls.rev)
		switch {
		case err == nil:
			ls.rev = rev
			ls.until.Store(t0.Add(l.cfg.TTL - l.cfg.Margin).UnixNano())
		case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyNotFound), isWrongSeq(err):
			l.b.log.Warn("partition lease lost", "service", l.service, "partition", p, "err", err)
			l.stop(p, false)
		default:
			if !ls.valid(time.Now()) {
				l.b.log.Warn("partition lease not renewed in time; stopping", "service", l.service, "partition", p, "err", err)
				l.stop(p, false)
			}
		}
	}
	if ctx.Err() != nil {
		return
	}
	keys := map[string]bool{}
	lister, err := l.kv.ListKeysFiltered(rctx, l.service+".>")
	if err != nil {
		l.b.log.Debug("lease keys not listed", "service", l.service, "err", err)
		return
	}
	members := 0
	for k := range lister.Keys() {
		keys[k] = true
		if strings.HasPrefix(k, l.service+".m.") {
			members++
		}
	}
	if members == 0 {
		members = 1
	}
	share := (len(l.parts) + members - 1) / members
	if surplus := len(l.held) - share; surplus > 0 {
		// One at a time, so the others can take them and a bad count settles gently.
		for _, p := range slices.Backward(l.parts) {
			if _, ok := l.held[p]; ok {
				l.b.log.Info("partition released to rebalance", "service", l.service, "partition", p, "instances", members, "share", share)
				l.stop(p, true)
				break
			}
		}
		return
	}
	for _, p := range l.parts {
		if _, ok := l.held[p]; ok || keys[l.leaseKey(p)] {
			delete(l.free, p)
			continue
		}
		l.free[p]++
		// A free partition is taken while under the share, or by anyone once it has
		// stayed free for a few rounds (a share counted from a stale presence key).
		if len(l.held) >= share && l.free[p] < 3 {
			continue
		}
		l.acquire(ctx, p)
	}
}

func isWrongSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

func (l *leaser) acquire(ctx context.Context, p int) {
	key := l.leaseKey(p)
	t0 := time.Now()
	rctx, cancel := context.WithTimeout(ctx, l.cfg.TTL/3)
	rev, err := l.kv.Create(rctx, key, []byte(l.cfg.Instance))
	cancel()
	if err != nil {
		return // taken by another instance first, or NATS unreachable: next round
	}
	delete(l.free, p)
	ls := &lease{p: p, key: key, rev: rev, done: make(chan struct{})}
	ls.until.Store(t0.Add(l.cfg.TTL - l.cfg.Margin).UnixNano())
	if l.hooks.Acquired != nil {
		if err := l.hooks.Acquired(ctx, p); err != nil {
			l.b.log.Warn("partition not taken: the service could not prepare it", "service", l.service, "partition", p, "err", err)
			_ = l.kv.Delete(context.WithoutCancel(ctx), key, jetstream.LastRevision(rev))
			return
		}
	}
	pctx, pcancel := context.WithCancel(ctx)
	ls.cancel = pcancel
	l.held[p] = ls
	l.owned.mu.Lock()
	l.owned.m[p] = true
	l.owned.mu.Unlock()
	l.b.log.Info("partition acquired", "service", l.service, "partition", p, "instance", l.cfg.Instance)
	go func() {
		defer close(ls.done)
		if err := l.start(pctx, p, ls); err != nil && pctx.Err() == nil {
			l.b.log.Warn("partition consumer failed; the lease will be given up", "service", l.service, "partition", p, "err", err)
			// Let the lease lapse: the next round finds it invalid or another instance takes it.
			ls.until.Store(0)
		}
	}()
}

// stop ends the partition's consumer and waits for it; give deletes the lease at once so
// another instance need not wait for it to expire.
func (l *leaser) stop(p int, give bool) {
	ls := l.held[p]
	if ls == nil {
		return
	}
	delete(l.held, p)
	ls.cancel()
	<-ls.done
	l.owned.mu.Lock()
	delete(l.owned.m, p)
	l.owned.mu.Unlock()
	if l.hooks.Released != nil {
		l.hooks.Released(p)
	}
	if give {
		ctx, cancel := context.WithTimeout(context.Background(), l.cfg.TTL/2)
		_ = l.kv.Delete(ctx, ls.key, jetstream.LastRevision(ls.rev))
		cancel()
	}
}

// releaseAll gives up every lease and the presence key when the service stops, so the
// other instances take over at once instead of after the TTL.
func (l *leaser) releaseAll() {
	for p := range l.held {
		l.stop(p, true)
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.TTL/2)
	_ = l.kv.Delete(ctx, l.memberKey())
	cancel()
}

// fenced wraps a partition's handler: a batch runs only while the lease is certainly
// ours, with a context that ends when it stops being so.
func fenced(ls *lease, h Handler) Handler {
	return func(ctx context.Context, batch []Msg) error {
		until := time.Unix(0, ls.until.Load())
		if !time.Now().Before(until) {
			return errLeaseLost
		}
		ctx, cancel := context.WithDeadline(ctx, until)
		defer cancel()
		if err := h(ctx, batch); err != nil {
			if ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("%w: %w", errLeaseLost, err)
			}
			return err
		}
		return nil
	}
}
