// Package launch wires Fleetwire's services into a process: the all-in-one binary runs all
// of them around an embedded NATS server, the per-service binaries run one each against
// external NATS and Redis. It only wires; behaviour lives in services/ and pkg/.
package launch

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/grpcserver"
	"github.com/fleetwire/fleetwire/services/dispatch"
	"github.com/fleetwire/fleetwire/services/geofence"
	"github.com/fleetwire/fleetwire/services/maintenance"
	"github.com/fleetwire/fleetwire/services/tracking"
	"github.com/fleetwire/fleetwire/simulators/fleetsim"
)

// Service names accepted in Options.Services.
const (
	Tracking    = "tracking"
	Geofence    = "geofence"
	Maintenance = "maintenance"
	Dispatch    = "dispatch" // theft detection, the alert feed and commands to vehicles
)

// AllServices is every service, in start order.
var AllServices = []string{Tracking, Geofence, Maintenance, Dispatch}

// Options configure a process. Flags fills them from flags and environment variables.
type Options struct {
	NATS        bus.Config
	Streams     bus.StreamConfig
	RedisURL    string // empty or "memory": in-memory stores
	RedisPrefix string
	GRPCAddr    string
	MetricsAddr string // empty: no metrics endpoint
	Partitions  string // which telemetry partitions this instance handles ("" = all)
	Services    []string
	Sim         int   // simulated vehicles run in-process (0 = none)
	SimSeed     int64 // seed of the simulated fleet
	Grace       time.Duration
	// DataDir is the all-in-one's home for everything it keeps between runs: the JetStream
	// store (DataDir/jetstream) and its generated development credentials
	// (DataDir/credentials). Empty: DefaultDataDir().
	DataDir string
	// Schedules is a JSON file of allowed driving hours per vehicle or group, for the
	// movement-outside-hours theft rule (format in docs/dispatch.md); empty: rule off.
	Schedules string
	// FallbackPorts lets the all-in-one move to a free port when a default one is taken, so
	// it starts on any machine; per-service binaries fail instead (an orchestrator expects
	// the port it configured).
	FallbackPorts bool
}

// Flags registers the options on fs. Each flag's default comes from its environment
// variable when set, then from def.
func (o *Options) Flags(fs *flag.FlagSet, def Options) {
	fs.StringVar(&o.NATS.URL, "nats-url", env("FLEETWIRE_NATS_URL", env("NATS_URL", def.NATS.URL)), `NATS server URL, or "embedded" for an in-process server (env FLEETWIRE_NATS_URL, NATS_URL)`)
	fs.StringVar(&o.NATS.CredsFile, "nats-creds", env("FLEETWIRE_NATS_CREDS", ""), "NATS credentials file (env FLEETWIRE_NATS_CREDS)")
	fs.StringVar(&o.NATS.TLSCert, "nats-tls-cert", env("FLEETWIRE_NATS_TLS_CERT", ""), "client certificate for NATS TLS (env FLEETWIRE_NATS_TLS_CERT)")
	fs.StringVar(&o.NATS.TLSKey, "nats-tls-key", env("FLEETWIRE_NATS_TLS_KEY", ""), "client key for NATS TLS (env FLEETWIRE_NATS_TLS_KEY)")
	fs.StringVar(&o.NATS.TLSCA, "nats-tls-ca", env("FLEETWIRE_NATS_TLS_CA", ""), "CA bundle for NATS TLS (env FLEETWIRE_NATS_TLS_CA)")
	fs.StringVar(&o.NATS.ListenHost, "nats-listen-host", env("FLEETWIRE_NATS_LISTEN_HOST", "127.0.0.1"), "embedded NATS: interface to listen on (env FLEETWIRE_NATS_LISTEN_HOST)")
	fs.IntVar(&o.NATS.ListenPort, "nats-listen-port", envInt("FLEETWIRE_NATS_LISTEN_PORT", 0), "embedded NATS: port; 0 = 4222 or a free port if taken (env FLEETWIRE_NATS_LISTEN_PORT)")
	fs.StringVar(&o.NATS.StoreDir, "store-dir", env("FLEETWIRE_STORE_DIR", ""), "embedded NATS: JetStream directory; empty = temporary, removed at exit (env FLEETWIRE_STORE_DIR)")
	fs.DurationVar(&o.Streams.TelemetryMaxAge, "telemetry-retention", envDuration("FLEETWIRE_TELEMETRY_RETENTION", 7*24*time.Hour), "how long raw records stay in the telemetry stream (env FLEETWIRE_TELEMETRY_RETENTION)")
	fs.IntVar(&o.Streams.Replicas, "stream-replicas", envInt("FLEETWIRE_STREAM_REPLICAS", 1), "JetStream replicas for the streams (3 in a cluster) (env FLEETWIRE_STREAM_REPLICAS)")
	fs.StringVar(&o.RedisURL, "redis-url", env("REDIS_URL", def.RedisURL), `Redis URL for shared state, or "memory" for in-process stores (env REDIS_URL)`)
	fs.StringVar(&o.RedisPrefix, "redis-prefix", env("FLEETWIRE_REDIS_PREFIX", "fw:"), "prefix of every Redis key (env FLEETWIRE_REDIS_PREFIX)")
	fs.StringVar(&o.GRPCAddr, "grpc-addr", env("FLEETWIRE_GRPC_ADDR", def.GRPCAddr), "gRPC listen address (env FLEETWIRE_GRPC_ADDR)")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", env("FLEETWIRE_METRICS_ADDR", def.MetricsAddr), "Prometheus /metrics listen address; empty disables (env FLEETWIRE_METRICS_ADDR)")
	fs.StringVar(&o.Partitions, "partitions", env("FLEETWIRE_PARTITIONS", ""), `telemetry partitions this instance handles: "0-7", "i/k" (instance i of k), "ordinal/k" (i from the host name's trailing number, for StatefulSets); empty = all (env FLEETWIRE_PARTITIONS)`)
	fs.StringVar(&o.Schedules, "schedules", env("FLEETWIRE_SCHEDULES", ""), "JSON file of allowed driving hours per vehicle or group (docs/dispatch.md); empty disables the outside-hours rule (env FLEETWIRE_SCHEDULES)")
	fs.DurationVar(&o.Grace, "grace", envDuration("FLEETWIRE_GRACE", 10*time.Second), "graceful shutdown limit (env FLEETWIRE_GRACE)")
}

// DefaultDataDir is where the all-in-one keeps its data unless told otherwise:
// $XDG_DATA_HOME/fleetwire, else ~/.local/share/fleetwire, else ./fleetwire-data.
func DefaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "fleetwire")
	}
	if h, err := os.UserHomeDir(); err == nil && h != "" {
		return filepath.Join(h, ".local", "share", "fleetwire")
	}
	return "fleetwire-data"
}

func env(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}

func envInt(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil {
		return v
	}
	return def
}

func envDuration(key string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(key)); err == nil {
		return v
	}
	return def
}

type component interface {
	Register(gs *grpc.Server)
	Run(ctx context.Context) error
}

// Platform is a running process.
type Platform struct {
	Bus         *bus.Bus
	GRPCAddr    string
	MetricsAddr string
	Sim         *fleetsim.Fleet

	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	err    error
	redis  *redis.Client
}

// Start brings the services up and returns once they are serving. Stop (or cancelling
// ctx) shuts them down.
func Start(ctx context.Context, o Options, log *slog.Logger) (*Platform, error) {
	if len(o.Services) == 0 {
		o.Services = AllServices
	}
	if o.Grace <= 0 {
		o.Grace = 10 * time.Second
	}
	ctx, cancel := context.WithCancel(ctx)
	p := &Platform{log: log, cancel: cancel, done: make(chan struct{})}
	fail := func(err error) (*Platform, error) {
		cancel()
		p.closeDeps()
		return nil, err
	}

	b, err := bus.Open(ctx, o.NATS, log.With("component", "bus"))
	if err != nil {
		return fail(err)
	}
	p.Bus = b
	if err := b.EnsureStreams(ctx, o.Streams); err != nil {
		return fail(err)
	}
	n, err := b.Partitions(ctx)
	if err != nil {
		return fail(err)
	}
	parts, err := bus.ParsePartitions(resolveOrdinal(o.Partitions), n)
	if err != nil {
		return fail(err)
	}

	memory := o.RedisURL == "" || o.RedisURL == "memory"
	if !memory {
		ropts, err := redis.ParseURL(o.RedisURL)
		if err != nil {
			return fail(fmt.Errorf("redis url: %w", err))
		}
		p.redis = redis.NewClient(ropts)
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		err = p.redis.Ping(pctx).Err()
		pcancel()
		if err != nil {
			return fail(fmt.Errorf("redis %s: %w", ropts.Addr, err))
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	gs := grpcserver.New(log.With("component", "grpc"), reg)

	var comps []component
	for _, name := range o.Services {
		c, err := p.build(name, o, b, parts, memory, o.RedisPrefix, log.With("service", name), prometheus.WrapRegistererWith(prometheus.Labels{"service": name}, reg))
		if err != nil {
			return fail(err)
		}
		comps = append(comps, c...)
	}
	for _, c := range comps {
		c.Register(gs.GRPC)
	}

	if err := listen(gs, o.GRPCAddr, o.FallbackPorts); err != nil {
		return fail(err)
	}
	p.GRPCAddr = gs.Addr()

	var metricsSrv *http.Server
	if o.MetricsAddr != "" {
		lis, err := listenTCP(o.MetricsAddr, o.FallbackPorts)
		if err != nil {
			return fail(err)
		}
		p.MetricsAddr = lis.Addr().String()
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		// Profiles on the same (by default loopback-only) port: "where does the time go"
		// must be answerable on a running system.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = metricsSrv.Serve(lis) }()
	}

	var wg sync.WaitGroup
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && !errors.Is(err, context.Canceled) {
				p.setErr(fmt.Errorf("%s: %w", name, err))
				cancel()
			}
		}()
	}
	for i, c := range comps {
		run(fmt.Sprintf("component %d", i), c.Run)
	}
	run("grpc", func(ctx context.Context) error { return gs.Serve(ctx, o.Grace) })
	if o.Sim > 0 {
		cfg := fleetsim.DefaultConfig()
		cfg.Vehicles = o.Sim
		if o.SimSeed != 0 {
			cfg.Seed = o.SimSeed
		}
		sim, err := fleetsim.New(cfg, log.With("component", "fleetsim"))
		if err != nil {
			return fail(err)
		}
		p.Sim = sim
		run("fleetsim", func(ctx context.Context) error { return sim.Run(ctx, b.NC) })
	}
	go func() {
		wg.Wait()
		if metricsSrv != nil {
			sctx, scancel := context.WithTimeout(context.Background(), time.Second)
			_ = metricsSrv.Shutdown(sctx)
			scancel()
		}
		p.closeDeps()
		close(p.done)
	}()
	return p, nil
}

func (p *Platform) build(name string, o Options, b *bus.Bus, parts []int, memory bool, prefix string, log *slog.Logger, reg prometheus.Registerer) ([]component, error) {
	switch name {
	case Tracking:
		cfg := tracking.DefaultConfig()
		cfg.Partitions, cfg.Rebuild = parts, memory
		var st tracking.Store = tracking.NewMemoryStore()
		if !memory {
			st = tracking.NewRedisStore(p.redis, prefix)
		}
		ts, err := tracking.New(cfg, b, st, log, reg)
		if err != nil {
			return nil, fmt.Errorf("tracking: %w", err)
		}
		return []component{ts}, nil
	case Dispatch:
		dcfg := dispatch.DefaultConfig()
		dcfg.Partitions, dcfg.Rebuild = parts, memory
		if o.Schedules != "" {
			data, err := os.ReadFile(o.Schedules)
			if err != nil {
				return nil, fmt.Errorf("schedules: %w", err)
			}
			if dcfg.Detect.Schedules, dcfg.Detect.Groups, err = dispatch.ParseSchedules(data); err != nil {
				return nil, fmt.Errorf("schedules %s: %w", o.Schedules, err)
			}
		}
		var dst dispatch.Store = dispatch.NewMemoryStore()
		if !memory {
			dst = dispatch.NewRedisStore(p.redis, prefix)
		}
		ds, err := dispatch.New(dcfg, b, dst, log, reg)
		if err != nil {
			return nil, fmt.Errorf("dispatch: %w", err)
		}
		return []component{ds}, nil
	case Geofence:
		cfg := geofence.DefaultConfig()
		cfg.Partitions, cfg.Rebuild = parts, memory
		var st geofence.Store = geofence.NewMemoryStore()
		if !memory {
			st = geofence.NewRedisStore(p.redis, prefix)
		}
		s, err := geofence.New(cfg, b, st, log, reg)
		if err != nil {
			return nil, fmt.Errorf("geofence: %w", err)
		}
		return []component{s}, nil
	case Maintenance:
		cfg := maintenance.DefaultConfig()
		cfg.Partitions, cfg.Rebuild = parts, memory
		var st maintenance.Store = maintenance.NewMemoryStore()
		if !memory {
			st = maintenance.NewRedisStore(p.redis, prefix)
		}
		s, err := maintenance.New(cfg, b, st, log, reg)
		if err != nil {
			return nil, fmt.Errorf("maintenance: %w", err)
		}
		return []component{s}, nil
	}
	return nil, fmt.Errorf("unknown service %q (want one of %s)", name, strings.Join(AllServices, ", "))
}

func listen(gs *grpcserver.Server, addr string, fallback bool) error {
	err := gs.Listen(addr)
	if err != nil && fallback {
		host, _, _ := net.SplitHostPort(addr)
		return gs.Listen(net.JoinHostPort(host, "0"))
	}
	return err
}

func listenTCP(addr string, fallback bool) (net.Listener, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil && fallback {
		host, _, _ := net.SplitHostPort(addr)
		return net.Listen("tcp", net.JoinHostPort(host, "0"))
	}
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return lis, nil
}

// resolveOrdinal turns "ordinal/k" into "i/k", i being the trailing number of the host
// name: a Kubernetes StatefulSet pod "tracking-2" is instance 2.
func resolveOrdinal(spec string) string {
	rest, ok := strings.CutPrefix(spec, "ordinal/")
	if !ok {
		return spec
	}
	host, _ := os.Hostname()
	if h := os.Getenv("HOSTNAME"); h != "" {
		host = h
	}
	i := strings.LastIndexByte(host, '-')
	if i < 0 {
		return "0/" + rest
	}
	return host[i+1:] + "/" + rest
}

func (p *Platform) setErr(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err == nil {
		p.err = err
		p.log.Error("stopping after failure", "err", err)
	}
}

func (p *Platform) closeDeps() {
	if p.Bus != nil {
		p.Bus.Close()
	}
	if p.redis != nil {
		_ = p.redis.Close()
	}
}

// Stop shuts everything down and waits for it.
func (p *Platform) Stop() error {
	p.cancel()
	return p.Wait()
}

// Wait blocks until the platform has stopped and returns the first failure, if any.
func (p *Platform) Wait() error {
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}
