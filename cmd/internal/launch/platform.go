// Package launch wires Fleetwire's services into a process: the all-in-one binary runs all
// of them around an embedded NATS server, the per-service binaries run one each against
// external NATS and Redis. It only wires; behaviour lives in services/ and pkg/.
//
// One file per component: options.go (flags, environment, the logged configuration),
// tracking.go, geofence.go, maintenance.go and dispatch.go (one service each), sim.go (the
// in-process simulated fleet), admin.go (the metrics and profiling server) and this file,
// which starts them and supervises every one: the first to fail stops the process, and its
// name says which.
package launch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"

	"github.com/fleetwire/fleetwire/edge/teltonika"
	"github.com/fleetwire/fleetwire/pkg/auth"
	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/eventpub"
	"github.com/fleetwire/fleetwire/pkg/grpcserver"
	"github.com/fleetwire/fleetwire/pkg/natsauth"
	"github.com/fleetwire/fleetwire/pkg/redisconn"
	"github.com/fleetwire/fleetwire/pkg/status"
	"github.com/fleetwire/fleetwire/pkg/storeguard"
	"github.com/fleetwire/fleetwire/pkg/wire"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
	"github.com/fleetwire/fleetwire/simulators/fleetsim"
)

// service is what every Fleetwire service offers the process: gRPC services to register
// and a loop that runs until ctx ends.
type service interface {
	Register(gs *grpc.Server)
	Run(ctx context.Context) error
}

// deps are what the components of one process share.
type deps struct {
	// ctx lives as long as the process: for what a component opens at build and keeps
	// running (a key-value mirror), not for requests.
	ctx    context.Context
	opts   Options
	groups *auth.Groups // vehicle → groups, written by tracking's registry
	bus    *bus.Bus
	parts  []int         // telemetry partitions this instance handles
	redis  *redis.Client // nil: in-memory stores
	// rebuild names the services whose Redis store lost its data (pkg/storeguard): they
	// re-read the retained streams like an in-memory store does.
	rebuild map[string]bool
	// fences are the Redis stores' generation checks (pkg/storeguard): every batch read
	// and write of a store checks its marker in the same transaction.
	fences map[string]*storeguard.Fence
	log    *slog.Logger
	reg    *prometheus.Registry
	prefix string
}

// memory reports whether the services keep their state in process.
func (d deps) memory() bool { return d.redis == nil }

// rebuilds reports whether service must rebuild its state from the retained streams: an
// in-memory store always does, a Redis store when it lost its data.
func (d deps) rebuilds(service string) bool { return d.memory() || d.rebuild[service] }

// fence is service's store generation check (nil with in-memory stores).
func (d deps) fence(service string) *storeguard.Fence { return d.fences[service] }

// registerer labels a service's metrics with its name.
func (d deps) registerer(name string) prometheus.Registerer {
	return prometheus.WrapRegistererWith(prometheus.Labels{"service": name}, d.reg)
}

// builders make each service from the shared dependencies; one file per service.
var builders = map[string]func(deps) (service, error){
	Tracking:    buildTracking,
	Geofence:    buildGeofence,
	Maintenance: buildMaintenance,
	Dispatch:    buildDispatch,
	Teltonika:   buildTeltonika,
	Devices:     buildDevices,
	CoAP:        buildCoAP,
}

// streamless is implemented by components that consume no telemetry partitions (the
// Teltonika gateway, the devices service): readiness waits for no consumer of theirs.
type streamless interface{ streamless() }

// telemetryReaders are the services that consume the telemetry partitions: in one
// process they share one delivery per partition.
var telemetryReaders = []string{Tracking, Geofence, Maintenance, Dispatch}

// catchUpBound is how far behind its stream a consumer may be for the process to report
// ready: about a second of a busy partition.
const catchUpBound = 1000

// Platform is a running process.
type Platform struct {
	Bus         *bus.Bus
	GRPCAddr    string
	MetricsAddr string
	PprofAddr   string
	// ConsoleURL is the web console's address when it runs ("http://127.0.0.1:8088/").
	ConsoleURL string
	Sim        *fleetsim.Fleet
	// Moved maps each listener that moved off its default port ("grpc", "metrics",
	// "pprof", "teltonika tcp", "teltonika udp") to the address it wanted.
	Moved map[string]string
	// TeltonikaTCP and TeltonikaUDP are the gateway's bound addresses when it runs.
	TeltonikaTCP, TeltonikaUDP string
	// TeltonikaDevices registers devices with the running gateway (nil without one).
	TeltonikaDevices *teltonika.MemoryRegistry
	// DeviceRegistry is the devices service's registry when it runs (nil otherwise).
	DeviceRegistry *natsauth.Devices
	// CoAPAddr is the CoAP gateway's bound UDP address when it runs.
	CoAPAddr string
	// MQTTAddr is the embedded NATS server's MQTT listener when it has one.
	MQTTAddr string
	// How to reach the gRPC API: the CA that signed its certificate and the bootstrap
	// admin token (both empty when Insecure, or when certificates were given without a
	// token file). Credentials is the development credentials directory when one is used.
	CAFile      string
	AdminToken  string
	Credentials *auth.DevCredentials
	Insecure    bool
	// The NATS side (nil/empty with --insecure or an external server): the device registry,
	// the generated NATS credentials (service passwords, callout issuer) and the simulated
	// fleet's device secrets by vehicle id.
	Devices          *natsauth.Devices
	NATSCredentials  *natsauth.DevCredentials
	SimDeviceSecrets map[string]string

	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	err    error
	redis  *redis.Client
}

// Start validates o, brings the services up and returns once they are serving. Stop (or
// cancelling ctx) shuts them down. A configuration error is returned before anything
// starts and wraps ErrConfig.
func Start(ctx context.Context, o Options, log *slog.Logger) (*Platform, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if len(o.Services) == 0 {
		o.Services = AllServices
	}
	if o.Grace <= 0 {
		o.Grace = 10 * time.Second
	}
	log.Info("configuration", "options", o)

	ctx, cancel := context.WithCancel(ctx)
	p := &Platform{log: log, cancel: cancel, done: make(chan struct{})}
	fail := func(err error) (*Platform, error) {
		cancel()
		p.closeDeps()
		return nil, err
	}

	if o.NATS.URL == "" || o.NATS.URL == bus.Embedded {
		// Durable by default: the store lives in the data directory and a restart with
		// the same command finds it; --ephemeral (or no data directory) uses a temporary
		// one that is removed at exit.
		switch {
		case o.Ephemeral:
			o.NATS.StoreDir = ""
		case o.NATS.StoreDir == "" && o.DataDir != "":
			o.NATS.StoreDir = filepath.Join(o.DataDir, "jetstream")
		}
	}
	natsCreds, err := prepareEmbeddedNATS(&o)
	if err != nil {
		return fail(fmt.Errorf("nats security: %w", err))
	}
	if err := serviceLogin(&o); err != nil {
		return fail(err)
	}
	// The largest message is the wire format's: the embedded server refuses a larger
	// publish, and the streams a larger message from any server.
	o.NATS.MaxPayload, o.Streams.MaxMsgSize = wire.MaxMessageBytes, wire.MaxMessageBytes
	b, err := bus.Open(ctx, o.NATS, log.With("component", "bus"))
	if err != nil {
		return fail(fmt.Errorf("bus: %w", err))
	}
	p.Bus = b
	eventpub.RaiseDeadLetters(b)
	if err := b.EnsureStreams(ctx, o.Streams); err != nil {
		return fail(fmt.Errorf("bus: %w", err))
	}
	n, err := b.Partitions(ctx)
	if err != nil {
		return fail(fmt.Errorf("bus: %w", err))
	}
	leasing := o.Partitions == "auto"
	spec := resolveOrdinal(o.Partitions)
	if leasing {
		spec = "all" // the candidates; each is taken by lease
	}
	parts, err := bus.ParsePartitions(spec, n)
	if err != nil {
		return fail(fmt.Errorf("partitions: %w", err))
	}
	if o.RedisURL != "" && o.RedisURL != "memory" {
		if p.redis, err = openRedis(ctx, o.RedisURL); err != nil {
			return fail(err)
		}
	}
	if leasing {
		if p.redis == nil {
			return fail(fmt.Errorf("%w: --partitions auto moves partitions between instances, so their state must live in Redis, not in memory", ErrConfig))
		}
		b.LeasePartitions(bus.LeaseConfig{TTL: o.LeaseTTL, Replicas: o.Streams.Replicas, Memory: o.Streams.MemoryStorage})
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := b.RegisterMetrics(reg); err != nil {
		return fail(fmt.Errorf("bus: %w", err))
	}
	sec, err := setupSecurity(ctx, o, b, log.With("component", "security"), reg)
	if err != nil {
		return fail(fmt.Errorf("security: %w", err))
	}
	p.CAFile, p.AdminToken, p.Credentials, p.Insecure = sec.caFile, sec.token, sec.creds, o.Security.Insecure
	var ns *natsSecurity
	if natsCreds != nil {
		if ns, err = startNATSAuth(ctx, o, b, natsCreds, log.With("component", "natsauth")); err != nil {
			return fail(fmt.Errorf("nats security: %w", err))
		}
		p.Devices, p.NATSCredentials = ns.devices, natsCreds
	}
	d := deps{ctx: ctx, opts: o, bus: b, parts: parts, redis: p.redis, log: log, reg: reg, prefix: o.RedisPrefix, groups: sec.groups}
	// Services in one process share one delivery per partition (docs/architecture.md):
	// each record is delivered, acknowledged and stored in consumer state once instead of
	// once per service.
	var sharing []string
	for _, name := range o.Services {
		if slices.Contains(telemetryReaders, name) {
			sharing = append(sharing, name)
		}
	}
	var shared *bus.Shared
	// Leased partitions are per service: each service's instances share its partitions.
	if len(sharing) > 1 && !o.SeparateConsumers && !leasing {
		shared = b.ShareTelemetry(sharing)
	}
	var sharedBy []string // services whose partitions the shared consumers read
	if shared != nil {
		sharedBy = sharing
	}
	rebuild, guards, err := prepareStores(ctx, d, o.Services, n, sharedBy)
	if err != nil {
		return fail(err)
	}
	d.rebuild = rebuild
	d.fences = map[string]*storeguard.Fence{}
	for _, g := range guards {
		d.fences[g.Service()] = g.Fence()
	}

	gs := sec.server(log.With("component", "grpc"), reg)
	type named struct {
		name string
		svc  service
	}
	var svcs []named
	consuming := 0
	for _, name := range o.Services {
		s, err := builders[name](d)
		if err != nil {
			return fail(fmt.Errorf("%s: %w", name, err))
		}
		s.Register(gs.GRPC)
		svcs = append(svcs, named{name, s})
		if _, ok := s.(streamless); !ok {
			consuming++
		}
		if ds, ok := s.(devicesService); ok {
			p.DeviceRegistry = ds.registry
		}
		if tg, ok := s.(teltonikaGateway); ok {
			p.TeltonikaTCP, p.TeltonikaUDP, p.TeltonikaDevices = tg.TCPAddr(), tg.UDPAddr(), tg.registry
		}
		if cg, ok := s.(coapGateway); ok {
			p.CoAPAddr = cg.Addr()
		}
	}
	// Ready once every consumer is within catchUpBound messages of its stream's end: a
	// rebuilt in-memory state or a service back from an outage answers queries only then.
	consumers := len(parts) * consuming
	if shared != nil {
		// The sharing services' partitions are read once, by the shared consumers.
		consumers = len(parts)*(consuming-len(sharing)) + shared.Consumers(len(parts))
	}
	if leasing {
		// Partitions come and go; the ones held must be caught up (Bus.CaughtUp checks
		// every consumer started so far), however many there are.
		consumers = 0
	}
	if slices.Contains(o.Services, Dispatch) {
		consumers++ // dispatch-events
	}
	ready := func() (bool, string) {
		for _, g := range guards {
			if !g.OK() {
				return false, "a store lost its data"
			}
		}
		return b.CaughtUp(consumers, catchUpBound)
	}
	gs.Ready = ready
	fleetv1.RegisterStatusServiceServer(gs.GRPC, &status.Server{
		Bus: b, Services: o.Services, Stores: storeStatus(d, o.Services, guards), Ready: ready, Bound: catchUpBound,
	})
	if err := listenGRPC(gs, o.GRPCAddr, o.fallback("grpc-addr")); err != nil {
		return fail(fmt.Errorf("grpc: %w", err))
	}
	p.GRPCAddr = gs.Addr()
	p.noteMoved("grpc", o.GRPCAddr, p.GRPCAddr)
	p.MQTTAddr = b.MQTTAddr()

	var admin *adminServer
	if o.MetricsAddr != "" {
		if admin, err = newAdminServer(o.MetricsAddr, o.fallback("metrics-addr"), reg); err != nil {
			return fail(fmt.Errorf("metrics: %w", err))
		}
		p.MetricsAddr = admin.Addr()
		p.noteMoved("metrics", o.MetricsAddr, p.MetricsAddr)
	}
	var profiles *adminServer
	if o.PprofAddr != "" {
		if profiles, err = newPprofServer(o.PprofAddr, o.fallback("pprof-addr")); err != nil {
			return fail(fmt.Errorf("pprof: %w", err))
		}
		p.PprofAddr = profiles.Addr()
		p.noteMoved("pprof", o.PprofAddr, p.PprofAddr)
	}
	var web *consoleServer
	if o.ConsoleAddr != "" {
		if web, err = newConsoleServer(o, gs, sec.tls); err != nil {
			return fail(fmt.Errorf("console: %w", err))
		}
		p.ConsoleURL = web.URL()
		p.noteMoved("console", o.ConsoleAddr, web.Addr())
	}
	p.noteMoved("teltonika tcp", o.Teltonika.TCPAddr, p.TeltonikaTCP)
	p.noteMoved("teltonika udp", o.Teltonika.UDPAddr, p.TeltonikaUDP)
	if o.EndpointsFile != "" {
		if err := p.writeEndpoints(o.EndpointsFile); err != nil {
			return fail(fmt.Errorf("endpoints file: %w", err))
		}
	}
	var sim *fleetsim.Fleet
	if o.Sim > 0 {
		if sim, err = newSim(o, log.With("component", "fleetsim")); err != nil {
			return fail(fmt.Errorf("fleetsim: %w", err))
		}
		p.Sim = sim
		if ns != nil {
			if p.SimDeviceSecrets, err = ns.registerSimDevices(ctx, sim.Sim().VehicleIDs(), "fleetsim"); err != nil {
				return fail(fmt.Errorf("fleetsim: %w", err))
			}
		}
	}

	// Everything that can fail is built; from here every component runs supervised.
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
	if shared != nil {
		run("shared delivery", shared.Run)
	}
	for _, s := range svcs {
		run(s.name, s.svc.Run)
	}
	for _, g := range guards {
		run("storeguard", g.Run)
	}
	run("grpc", func(ctx context.Context) error { return gs.Serve(ctx, o.Grace) })
	if admin != nil {
		run("metrics", admin.Serve)
	}
	if profiles != nil {
		run("pprof", profiles.Serve)
	}
	if web != nil {
		run("console", web.Serve)
	}
	if ns != nil {
		run("natsauth", ns.run)
	}
	if sim != nil {
		if ns != nil {
			// Every simulated vehicle logs in as its own device, confined like a real one.
			dial := deviceDialer(b.ClientURL(), p.SimDeviceSecrets)
			run("fleetsim", func(ctx context.Context) error { return sim.RunDevices(ctx, dial) })
		} else {
			run("fleetsim", func(ctx context.Context) error { return sim.Run(ctx, b.Conn()) })
		}
	}
	go func() {
		wg.Wait()
		if o.EndpointsFile != "" {
			_ = os.Remove(o.EndpointsFile)
		}
		p.closeDeps()
		close(p.done)
	}()
	return p, nil
}

// noteMoved records and logs a listener that did not get the port it asked for (only the
// all-in-one's defaults may move: listenGRPC, listenTCP).
func (p *Platform) noteMoved(name, wanted, got string) {
	if wanted == "" || got == "" {
		return
	}
	_, wp, err1 := net.SplitHostPort(wanted)
	_, gp, err2 := net.SplitHostPort(got)
	if err1 != nil || err2 != nil || wp == gp || wp == "0" {
		return
	}
	if p.Moved == nil {
		p.Moved = map[string]string{}
	}
	p.Moved[name] = wanted
	p.log.Warn("default port taken; listening on a free one instead", "listener", name, "wanted", wanted, "listening", got)
}

// EndpointsFile is the name of the file, in the all-in-one's data directory, holding
// the addresses it listens on.
const EndpointsFile = "endpoints.json"

// Endpoints are the addresses a running process listens on.
type Endpoints struct {
	GRPC         string `json:"grpc"`
	Metrics      string `json:"metrics,omitempty"`
	Pprof        string `json:"pprof,omitempty"`
	Console      string `json:"console,omitempty"`
	NATS         string `json:"nats,omitempty"`
	TeltonikaTCP string `json:"teltonika_tcp,omitempty"`
	TeltonikaUDP string `json:"teltonika_udp,omitempty"`
	PID          int    `json:"pid"`
}

func (p *Platform) writeEndpoints(path string) error {
	ep := Endpoints{GRPC: p.GRPCAddr, Metrics: p.MetricsAddr, Pprof: p.PprofAddr, Console: p.ConsoleURL, TeltonikaTCP: p.TeltonikaTCP, TeltonikaUDP: p.TeltonikaUDP, PID: os.Getpid()}
	if p.Bus != nil {
		ep.NATS = p.Bus.ClientURL()
	}
	data, err := json.MarshalIndent(ep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func openRedis(ctx context.Context, rawURL string) (*redis.Client, error) {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := redisconn.Open(pctx, rawURL)
	if errors.Is(err, redisconn.ErrMalformedURL) {
		return nil, fmt.Errorf("%w: %s: %w", ErrConfig, maskURL(rawURL), err)
	}
	return c, err
}

// listenGRPC listens on addr; with fallback, a taken port is replaced by a free one
// (Platform.noteMoved says so). Without, the error names the address and what to do.
func listenGRPC(gs *grpcserver.Server, addr string, fallback bool) error {
	err := gs.Listen(addr)
	if err != nil && fallback {
		host, _, _ := net.SplitHostPort(addr)
		return gs.Listen(net.JoinHostPort(host, "0"))
	}
	if err != nil {
		return portErr(addr, err)
	}
	return nil
}

func listenTCP(addr string, fallback bool) (net.Listener, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil && fallback {
		host, _, _ := net.SplitHostPort(addr)
		return net.Listen("tcp", net.JoinHostPort(host, "0"))
	}
	if err != nil {
		return nil, portErr(addr, fmt.Errorf("listen %s: %w", addr, err))
	}
	return lis, nil
}

// portErr explains a listen failure on an address the operator chose: it never moves.
func portErr(addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%s is in use by another process; stop it or choose another address (an address given by flag or environment never moves to another port): %w", addr, err)
	}
	return err
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
