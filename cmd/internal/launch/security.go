package launch

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/fleetwire/fleetwire/pkg/audit"
	"github.com/fleetwire/fleetwire/pkg/auth"
	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/grpcserver"
)

// Security is how the gRPC API is protected (docs/security.md). The zero value is secure:
// TLS with the development credentials in DataDir/credentials, created on first start,
// and API tokens.
type Security struct {
	// Insecure serves plaintext gRPC without authentication (every caller is an anonymous
	// admin) and runs the embedded NATS server without users (every client may do
	// anything). Logged loudly at every start.
	Insecure bool
	// TLSCert and TLSKey are the server's certificate; empty: the development certificate
	// in DataDir/credentials.
	TLSCert, TLSKey string
	// ClientCA verifies mTLS client certificates; empty with the development credentials:
	// the development CA; empty otherwise: no client certificates.
	ClientCA string
	// AdminTokenFile holds a bootstrap admin token, stored (hashed) at every start so it
	// always works; empty with the development credentials: DataDir/credentials/admin.token.
	AdminTokenFile string
	// MaxWatches caps one principal's watch streams (0: auth.DefaultMaxWatches).
	MaxWatches int
}

// securityFlags registers the security flags.
func (o *Options) securityFlags(fs *flag.FlagSet, e *envReader) {
	fs.BoolVar(&o.Security.Insecure, "insecure", e.bool("FLEETWIRE_INSECURE", false), "serve plaintext gRPC with no authentication and an embedded NATS server without users (development only; logged loudly) (env FLEETWIRE_INSECURE)")
	fs.StringVar(&o.Security.TLSCert, "tls-cert", e.str("FLEETWIRE_TLS_CERT", ""), "gRPC server certificate (PEM); empty: development credentials in the data directory (env FLEETWIRE_TLS_CERT)")
	fs.StringVar(&o.Security.TLSKey, "tls-key", e.str("FLEETWIRE_TLS_KEY", ""), "gRPC server key (PEM) (env FLEETWIRE_TLS_KEY)")
	fs.StringVar(&o.Security.ClientCA, "tls-client-ca", e.str("FLEETWIRE_TLS_CLIENT_CA", ""), "CA bundle verifying mTLS client certificates (env FLEETWIRE_TLS_CLIENT_CA)")
	fs.StringVar(&o.Security.AdminTokenFile, "admin-token-file", e.str("FLEETWIRE_ADMIN_TOKEN_FILE", ""), "file holding a bootstrap admin API token (env FLEETWIRE_ADMIN_TOKEN_FILE)")
	fs.IntVar(&o.Security.MaxWatches, "max-watches", e.int("FLEETWIRE_MAX_WATCHES", auth.DefaultMaxWatches), "watch streams one principal may hold open (env FLEETWIRE_MAX_WATCHES)")
	fs.StringVar(&o.PprofAddr, "pprof-addr", e.str("FLEETWIRE_PPROF_ADDR", ""), "listen address of the profiling server (/debug/pprof); empty: off (env FLEETWIRE_PPROF_ADDR)")
}

// InsecureBanner is what a process with security off says at every start.
const InsecureBanner = "SECURITY IS OFF (--insecure): gRPC is plaintext and unauthenticated, and the embedded NATS server takes anonymous clients with every right; anyone who can reach them can immobilise vehicles, forge telemetry and events, delete streams, zones and tokens"

// security is the gRPC protection of one process.
type security struct {
	tls    *tls.Config
	guard  *auth.Guard
	tokens *auth.Tokens // nil when insecure
	groups *auth.Groups
	audit  *audit.Reader
	creds  *auth.DevCredentials // nil unless the development credentials are used
	token  string               // the bootstrap admin token, if any
	caFile string
}

func setupSecurity(ctx context.Context, o Options, b *bus.Bus, log *slog.Logger, reg prometheus.Registerer) (*security, error) {
	s := &security{}
	var err error
	if s.groups, err = auth.OpenGroups(ctx, b, o.Streams.Replicas, log); err != nil {
		return nil, err
	}
	if err := audit.EnsureStream(ctx, b, audit.StreamConfig{Replicas: o.Streams.Replicas, Memory: o.Streams.MemoryStorage}); err != nil {
		return nil, err
	}
	s.audit = audit.NewReader(b)
	cfg := auth.Config{Groups: s.groups, Audit: audit.NewRecorder(b, log, reg), MaxWatches: o.Security.MaxWatches, Log: log}
	if o.Security.Insecure {
		log.Error(InsecureBanner)
		cfg.Insecure = true
		s.guard = auth.NewGuard(cfg)
		return s, nil
	}

	sec := o.Security
	if sec.TLSCert == "" {
		dir := filepath.Join(dataDir(o), "credentials")
		if s.creds, err = auth.EnsureDevCredentials(dir, grpcHost(o.GRPCAddr)); err != nil {
			return nil, fmt.Errorf("development credentials: %w", err)
		}
		sec.TLSCert, sec.TLSKey = s.creds.CertFile, s.creds.KeyFile
		if sec.ClientCA == "" {
			sec.ClientCA = s.creds.CAFile
		}
		if sec.AdminTokenFile == "" {
			sec.AdminTokenFile = s.creds.TokenFile
		}
		s.caFile = s.creds.CAFile
	}
	if s.tls, err = auth.ServerTLS(sec.TLSCert, sec.TLSKey, sec.ClientCA); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if s.tokens, err = auth.OpenTokens(ctx, b, o.Streams.Replicas, log); err != nil {
		return nil, err
	}
	if sec.AdminTokenFile != "" {
		data, err := os.ReadFile(sec.AdminTokenFile)
		if err != nil {
			return nil, fmt.Errorf("%w: admin token: %w", ErrConfig, err)
		}
		s.token = strings.TrimSpace(string(data))
		if _, err := s.tokens.Ensure(ctx, s.token, "admin", auth.Admin); err != nil {
			return nil, fmt.Errorf("admin token %s: %w", sec.AdminTokenFile, err)
		}
	}
	cfg.Tokens, cfg.MTLS = s.tokens, sec.ClientCA != ""
	s.guard = auth.NewGuard(cfg)
	return s, nil
}

// server builds the gRPC server and registers the access services on it.
func (s *security) server(log *slog.Logger, reg prometheus.Registerer) *grpcserver.Server {
	gs := grpcserver.NewServer(log, reg, grpcserver.Config{TLS: s.tls, Guard: s.guard})
	s.audit.Register(gs.GRPC)
	auth.RegisterIdentity(gs.GRPC)
	if s.tokens != nil {
		s.tokens.Register(gs.GRPC)
	}
	return gs
}

func dataDir(o Options) string {
	if o.DataDir != "" {
		return o.DataDir
	}
	return DefaultDataDir()
}

// grpcHost is the host part of the gRPC address, for the development certificate, when it
// names a specific host.
func grpcHost(addr string) string {
	host := addr
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		host = strings.Trim(addr[:i], "[]")
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		return ""
	}
	return host
}

// Dial connects to the platform's gRPC API as its bootstrap admin (with TLS and the admin
// token, or plaintext when security is off). For tests and tools in the same process.
func (p *Platform) Dial(opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	if p.Insecure {
		return grpcserver.Dial(p.GRPCAddr, grpcserver.ClientConfig{Plaintext: true}, opts...)
	}
	return grpcserver.Dial(p.GRPCAddr, grpcserver.ClientConfig{CAFile: p.CAFile, Token: p.AdminToken}, opts...)
}
