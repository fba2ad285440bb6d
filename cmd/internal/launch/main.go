package launch

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/storeguard"
)

// Main is the whole of a per-service binary: parse flags, run one service until a signal.
func Main(service string) {
	fs := flag.NewFlagSet(service, flag.ExitOnError)
	var o Options
	def := Options{
		NATS:     bus.Config{URL: "nats://127.0.0.1:4222"},
		RedisURL: "redis://127.0.0.1:6379",
		// Loopback unless told otherwise: a container or pod is given --grpc-addr :50051.
		GRPCAddr:    "127.0.0.1:50051",
		MetricsAddr: "127.0.0.1:9464",
	}
	switch service {
	case Teltonika:
		// The gateways keep no state: no Redis. Their own ports, so they can share a host
		// with the services.
		def.RedisURL, def.GRPCAddr, def.MetricsAddr = "memory", "127.0.0.1:50055", "127.0.0.1:9468"
	case CoAP:
		def.RedisURL, def.GRPCAddr, def.MetricsAddr = "memory", "127.0.0.1:50057", "127.0.0.1:9470"
	}
	if service == Devices {
		// The registry is a JetStream bucket: no Redis.
		def.RedisURL, def.GRPCAddr, def.MetricsAddr = "memory", "127.0.0.1:50056", "127.0.0.1:9469"
	}
	o.Flags(fs, def)
	switch service {
	case Teltonika:
		o.TeltonikaFlags(fs, TeltonikaOptions{TCPAddr: "127.0.0.1:5027", UDPAddr: "127.0.0.1:5027"})
	case CoAP:
		o.CoAPFlags(fs, CoAPOptions{Addr: "127.0.0.1:5683"})
	}
	level := fs.String("log-level", env("FLEETWIRE_LOG_LEVEL", "info"), "debug, info, warn or error (env FLEETWIRE_LOG_LEVEL)")
	_ = fs.Parse(os.Args[1:])
	o.Services = []string{service}
	TuneGC()
	lvl, err := ParseLevel(*level)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", service, err)
		os.Exit(2)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for {
		p, err := Start(ctx, o, log)
		if err != nil {
			log.Error("start failed", "service", service, "err", err)
			os.Exit(1)
		}
		log.Info("serving", "service", service, "grpc", p.GRPCAddr, "metrics", p.MetricsAddr, "pprof", p.PprofAddr, "nats", p.Bus.ClientURL(),
			"teltonika_tcp", p.TeltonikaTCP, "teltonika_udp", p.TeltonikaUDP, "coap", p.CoAPAddr, "tls", !p.Insecure)
		if p.Insecure {
			log.Error(InsecureBanner)
		}
		err = p.Wait()
		if errors.Is(err, storeguard.ErrStoreLost) && ctx.Err() == nil {
			// The store came back without its data: start again, which finds the marker
			// gone and rebuilds from the stream before reporting ready.
			log.Error("starting again to rebuild a lost store", "err", err)
			continue
		}
		if err != nil {
			log.Error("stopped with error", "err", err)
			os.Exit(1)
		}
		log.Info("stopped")
		return
	}
}

// ParseLevel reads a log level name: debug, info, warn or error. Anything else is a
// configuration error, so a typo does not silently hide the debug logs asked for.
func ParseLevel(level string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(strings.TrimSpace(level)))); err != nil {
		return 0, fmt.Errorf("%w: log level %q (want debug, info, warn or error)", ErrConfig, level)
	}
	return l, nil
}

// NewLogger returns a JSON slog logger at level (text when w is a terminal is not worth a
// dependency; JSON is what log collectors want). Callers check level with ParseLevel first;
// an unknown level logs at info.
func NewLogger(w io.Writer, level string) *slog.Logger {
	l, err := ParseLevel(level)
	if err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

// DefaultGCPercent is the garbage collector target the binaries use unless GOGC is set.
// The services keep little live heap but allocate per record; at Go's default of 100 the
// collector's pauses and assists were the tail of the event latency (p99 11 ms at 20 000
// records/s through the geofence service; 6.5–8.4 ms at 400, docs/bench-geofence.md).
// Memory grows to about five times the live heap instead of twice.
const DefaultGCPercent = 400

// TuneGC applies DefaultGCPercent when the operator has not chosen GOGC.
func TuneGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(DefaultGCPercent)
	}
}
