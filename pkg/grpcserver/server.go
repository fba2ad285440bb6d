// Package grpcserver builds the gRPC server every Fleetwire service exposes: health and
// reflection registered, logging and panic-recovery interceptors, request metrics, and a
// graceful stop with a timed fallback.
package grpcserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/fleetwire/fleetwire/pkg/auth"
	"github.com/fleetwire/fleetwire/pkg/metrics"
)

// Server is a gRPC server with the standard Fleetwire services attached.
type Server struct {
	GRPC   *grpc.Server
	Health *health.Server
	// Ready, when set before Serve, holds health at NOT_SERVING until it reports true.
	Ready func() (ok bool, detail string)
	log   *slog.Logger
	lis   net.Listener
}

// Config bounds and secures a server. The zero value is a plaintext server without
// authentication (what a service's own tests use); the binaries always set TLS and Guard.
type Config struct {
	// TLS, when set, serves gRPC over TLS only.
	TLS *tls.Config
	// Guard authenticates and authorises every call; nil lets everyone in.
	Guard *auth.Guard
	// MaxConcurrentStreams per connection (0: DefaultMaxConcurrentStreams).
	MaxConcurrentStreams uint32
	// MaxRecvMsgSize is the largest request accepted (0: DefaultMaxRecvMsgSize).
	MaxRecvMsgSize int
}

// Limits every server applies unless told otherwise.
const (
	// DefaultMaxConcurrentStreams: a console holds a few watch streams and issues a few
	// calls at a time; a connection opening hundreds is not a console.
	DefaultMaxConcurrentStreams = 128
	// DefaultMaxRecvMsgSize fits the largest legitimate request, a zone whose GeoJSON may
	// be up to 60 KiB (fence.MaxDefinitionBytes), four times over; gRPC's own default is
	// 4 MiB, which an attacker would otherwise have parsed.
	DefaultMaxRecvMsgSize = 256 << 10
	// Keepalive enforcement: a client may ping at most every MinPingInterval; the server
	// pings idle connections every PingInterval and drops those that do not answer.
	MinPingInterval = 10 * time.Second
	PingInterval    = 2 * time.Minute
	PingTimeout     = 20 * time.Second
)

// ServiceOf returns the service of a full gRPC method name ("/fleet.v1.TrackingService/
// ListVehicles" → "fleet.v1.TrackingService"), the service label of the gRPC metrics.
func ServiceOf(fullMethod string) string {
	svc, _, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	return svc
}

// New creates a plaintext server without authentication. Register services on s.GRPC,
// then call Serve.
func New(log *slog.Logger, reg prometheus.Registerer) *Server {
	return NewServer(log, reg, Config{})
}

// NewServer creates a server configured by cfg.
func NewServer(log *slog.Logger, reg prometheus.Registerer, cfg Config) *Server {
	// Every gRPC series carries the same labels: service (fleet.v1.TrackingService),
	// method (the full method name) and code.
	calls := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fleetwire_grpc_requests_total", Help: "gRPC calls by service, method and code.",
	}, []string{"service", "method", "code"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "fleetwire_grpc_request_duration_seconds", Help: "Unary gRPC call handling time in seconds, by service, method and code (refusals included).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"service", "method", "code"})
	lagged := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fleetwire_grpc_watch_lagged_total", Help: "Watch streams ended because the reader fell behind its buffer, by method.",
	}, []string{"method"})
	// A clash is logged, not fatal: the server works without its request counts.
	if err := metrics.Register(reg, calls, latency, lagged); err != nil {
		log.Error("grpc metrics not registered", "err", err)
	}
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
		start := time.Now()
		defer func() {
			if p := recover(); p != nil {
				log.Error("panic in handler", "method", info.FullMethod, "panic", p, "stack", string(debug.Stack()))
				err = status.Error(codes.Internal, "internal error")
			}
			code := status.Code(err)
			svc := ServiceOf(info.FullMethod)
			calls.WithLabelValues(svc, info.FullMethod, code.String()).Inc()
			latency.WithLabelValues(svc, info.FullMethod, code.String()).Observe(time.Since(start).Seconds())
			if code == codes.Internal || code == codes.Unknown {
				log.Error("rpc failed", "method", info.FullMethod, "code", code, "err", err)
			} else {
				log.Debug("rpc", "method", info.FullMethod, "code", code, "took", time.Since(start))
			}
		}()
		return h(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
		defer func() {
			if p := recover(); p != nil {
				log.Error("panic in stream handler", "method", info.FullMethod, "panic", p, "stack", string(debug.Stack()))
				err = status.Error(codes.Internal, "internal error")
			}
			calls.WithLabelValues(ServiceOf(info.FullMethod), info.FullMethod, status.Code(err).String()).Inc()
			if IsLagged(err) {
				lagged.WithLabelValues(info.FullMethod).Inc()
			}
		}()
		return h(srv, ss)
	}
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if cfg.MaxRecvMsgSize == 0 {
		cfg.MaxRecvMsgSize = DefaultMaxRecvMsgSize
	}
	unaries := []grpc.UnaryServerInterceptor{unary}
	streams := []grpc.StreamServerInterceptor{stream}
	if cfg.Guard != nil {
		// After the recovery and metrics interceptors, so refusals are counted too.
		unaries = append(unaries, cfg.Guard.Unary())
		streams = append(streams, cfg.Guard.Stream())
		if err := metrics.Register(reg, cfg.Guard.Collectors()...); err != nil {
			log.Error("auth metrics not registered", "err", err)
		}
	}
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unaries...), grpc.ChainStreamInterceptor(streams...),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: MinPingInterval, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: PingInterval, Timeout: PingTimeout}),
	}
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	gs := grpc.NewServer(opts...)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	return &Server{GRPC: gs, Health: hs, log: log}
}

// Listen binds addr (":0" for any free port) so Addr is known before Serve.
func (s *Server) Listen(addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	s.lis = lis
	return nil
}

// Addr is the bound address.
func (s *Server) Addr() string {
	if s.lis == nil {
		return ""
	}
	return s.lis.Addr().String()
}

// Serve serves until ctx ends, then stops gracefully, forcing the stop after grace.
// The health status of every registered service is SERVING while it runs; with Ready
// set, NOT_SERVING until Ready first reports true (a rebuild or catch-up within bounds),
// so a load balancer sends no queries to state that is still partial.
func (s *Server) Serve(ctx context.Context, grace time.Duration) error {
	if s.lis == nil {
		return errors.New("grpcserver: Serve before Listen")
	}
	setAll := func(st healthpb.HealthCheckResponse_ServingStatus) {
		for name := range s.GRPC.GetServiceInfo() {
			s.Health.SetServingStatus(name, st)
		}
		s.Health.SetServingStatus("", st)
	}
	if s.Ready == nil {
		setAll(healthpb.HealthCheckResponse_SERVING)
	} else {
		setAll(healthpb.HealthCheckResponse_NOT_SERVING)
		go func() {
			t := time.NewTicker(250 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				if ok, why := s.Ready(); ok {
					s.log.Info("ready: serving", "state", why)
					setAll(healthpb.HealthCheckResponse_SERVING)
					return
				}
			}
		}()
	}
	errc := make(chan error, 1)
	go func() { errc <- s.GRPC.Serve(s.lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("grpc serve: %w", err)
	case <-ctx.Done():
	}
	s.Health.Shutdown() // tell load balancers first
	done := make(chan struct{})
	go func() { s.GRPC.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		s.log.Warn("graceful stop timed out; closing open streams", "grace", grace)
		s.GRPC.Stop()
		<-done
	}
	return nil
}
