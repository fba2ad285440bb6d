package auth

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// DefaultMaxWatches is how many watch streams one principal may hold open at once: enough
// for a console with a few views on several screens, too few to exhaust a server.
const DefaultMaxWatches = 16

// Entry is one mutating call, handed to the Auditor after it finished.
type Entry struct {
	Time      time.Time
	Principal *Principal
	Peer      string
	Method    string
	Request   proto.Message
	Err       error
}

// Auditor records mutating calls. Declared here, where it is consumed; pkg/audit
// implements it on a JetStream stream.
type Auditor interface {
	Record(ctx context.Context, e Entry)
}

// Config configures a Guard.
type Config struct {
	// Tokens verifies bearer tokens; nil refuses them.
	Tokens *Tokens
	// MTLS accepts client certificates verified by the server's TLS configuration
	// (crypto/tls does the verification; the Guard only maps a verified certificate to a
	// principal: CN = name, OU = role, O = groups).
	MTLS bool
	// Groups knows each vehicle's groups, for group-scoped principals; nil hides every
	// vehicle from them.
	Groups *Groups
	// Audit receives every mutating call; nil records nothing.
	Audit Auditor
	// Insecure turns authentication off: every caller is an anonymous admin. For a
	// development machine only; the binaries say so loudly at every start.
	Insecure bool
	// MaxWatches caps the watch streams one principal holds open (0: DefaultMaxWatches).
	MaxWatches int
	// Policy overrides the method table (tests); nil: Policy.
	Policy map[string]Rule
	Log    *slog.Logger
}

// Guard authenticates and authorises every call. Install Unary and Stream as the first
// interceptors of a server.
type Guard struct {
	cfg Config

	denied  *prometheus.CounterVec
	watches prometheus.Gauge

	mu      sync.Mutex
	open    map[string]int // watch streams per principal
	metrics []prometheus.Collector
}

// NewGuard returns a guard for cfg.
func NewGuard(cfg Config) *Guard {
	if cfg.MaxWatches <= 0 {
		cfg.MaxWatches = DefaultMaxWatches
	}
	if cfg.Policy == nil {
		cfg.Policy = Policy
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	g := &Guard{cfg: cfg, open: map[string]int{}}
	g.denied = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fleetwire_grpc_denied_total",
		Help: "gRPC calls refused by authentication, authorisation, group scope or the watch cap, by reason.",
	}, []string{"reason"})
	g.watches = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "fleetwire_grpc_watch_streams", Help: "Watch streams open.",
	})
	g.metrics = []prometheus.Collector{g.denied, g.watches}
	return g
}

// Collectors are the guard's metrics, for the caller to register.
func (g *Guard) Collectors() []prometheus.Collector { return g.metrics }

func (g *Guard) deny(reason string, code codes.Code, format string, args ...any) error {
	g.denied.WithLabelValues(reason).Inc()
	return status.Errorf(code, format, args...)
}

// authenticate finds who is calling.
func (g *Guard) authenticate(ctx context.Context) (*Principal, error) {
	if g.cfg.Insecure {
		return &Principal{Name: "anonymous", Role: Admin, Via: ViaInsecure}, nil
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if vals := md.Get("authorization"); len(vals) > 0 {
			scheme, tok, _ := strings.Cut(vals[0], " ")
			if !strings.EqualFold(scheme, "bearer") || g.cfg.Tokens == nil {
				return nil, g.deny("unauthenticated", codes.Unauthenticated, "authorization must be \"Bearer <token>\"")
			}
			p, err := g.cfg.Tokens.Verify(strings.TrimSpace(tok), time.Now())
			if err != nil {
				// One message for unknown, revoked and expired alike would hide why a
				// legitimate user is locked out; none of them reveals a secret.
				return nil, g.deny("unauthenticated", codes.Unauthenticated, "bearer token refused: %v", err)
			}
			return p, nil
		}
	}
	if g.cfg.MTLS {
		if pr, ok := peer.FromContext(ctx); ok {
			if ti, ok := pr.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 && len(ti.State.VerifiedChains[0]) > 0 {
				p, err := certPrincipal(ti.State.VerifiedChains[0][0])
				if err != nil {
					return nil, g.deny("unauthenticated", codes.Unauthenticated, "client certificate: %v", err)
				}
				return p, nil
			}
		}
	}
	return nil, g.deny("unauthenticated", codes.Unauthenticated, "credentials required: send \"authorization: Bearer <token>\" or a client certificate")
}

// certPrincipal maps a verified client certificate: CN is the name, the first OU that
// names a role is the role, O values are vehicle groups.
func certPrincipal(c *x509.Certificate) (*Principal, error) {
	if !nameRE.MatchString(c.Subject.CommonName) {
		return nil, errors.New("subject CN must be a principal name")
	}
	p := &Principal{Name: c.Subject.CommonName, Via: ViaMTLS, ID: c.SerialNumber.Text(16), Groups: c.Subject.Organization}
	for _, ou := range c.Subject.OrganizationalUnit {
		if r, err := ParseRole(ou); err == nil {
			p.Role = r
			break
		}
	}
	if p.Role == RoleNone {
		return nil, errors.New("subject OU must name a role (viewer, dispatcher, supervisor or admin)")
	}
	return p, nil
}

// authorize checks the caller's role against the method's rule and, for a request already
// read, the request itself.
func (g *Guard) authorize(p *Principal, method string, rule Rule, req any) error {
	need := rule.Role
	if rule.Raise != nil && req != nil {
		need = max(need, rule.Raise(req))
	}
	if p.Role < need {
		return g.deny("permission_denied", codes.PermissionDenied, "%s %q may not call %s (needs %s)", p.Role, p.Name, method, need)
	}
	return nil
}

func (g *Guard) rule(method string) (Rule, error) {
	rule, ok := g.cfg.Policy[method]
	if !ok {
		return Rule{}, g.deny("no_rule", codes.PermissionDenied, "method %s has no access rule", Truncate(method))
	}
	return rule, nil
}

// prepare checks a request of a principal and stamps who is asking into it.
func (g *Guard) prepare(p *Principal, method string, rule Rule, req any) error {
	m, ok := req.(proto.Message)
	if ok {
		// First, so that even the audit record of a refused call says who really asked.
		stampWho(m, p.Name)
	}
	if err := g.authorize(p, method, rule, req); err != nil {
		return err
	}
	if ok && p.Scoped() && !g.requestVisible(p, m) {
		return g.deny("scope", codes.NotFound, "vehicle not found")
	}
	return nil
}

// Unary is the unary interceptor.
func (g *Guard) Unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		rule, err := g.rule(info.FullMethod)
		if err != nil {
			return nil, err
		}
		if rule.Role == RoleNone {
			return h(ctx, req)
		}
		p, err := g.authenticate(ctx)
		if err != nil {
			return nil, err
		}
		if err := g.prepare(p, info.FullMethod, rule, req); err != nil {
			if rule.Mutates && status.Code(err) == codes.PermissionDenied {
				g.record(ctx, p, info.FullMethod, req, err)
			}
			return nil, err
		}
		ctx = context.WithValue(WithPrincipal(ctx, p), groupsKey{}, g.cfg.Groups)
		if rule.Mutates {
			ctx = context.WithValue(ctx, auditKey{}, g)
		}
		resp, err := h(ctx, req)
		if err == nil && p.Scoped() {
			if m, ok := resp.(proto.Message); ok && g.prune(p, m.ProtoReflect()) {
				err, resp = g.deny("scope", codes.NotFound, "vehicle not found"), nil
			}
		}
		if rule.Mutates {
			g.record(ctx, p, info.FullMethod, req, err)
		}
		return resp, err
	}
}

func (g *Guard) record(ctx context.Context, p *Principal, method string, req any, err error) {
	if g.cfg.Audit == nil {
		return
	}
	m, _ := req.(proto.Message)
	addr := ""
	if pr, ok := peer.FromContext(ctx); ok && pr.Addr != nil {
		addr = pr.Addr.String()
	}
	g.cfg.Audit.Record(ctx, Entry{Time: time.Now().UTC(), Principal: p, Peer: addr, Method: method, Request: m, Err: err})
}

type auditKey struct{}

// Audit records one more entry for the mutating call running in ctx, as if the same
// principal had called method with req. A bulk call's handler records each item it
// changes, so the trail of one alert or one vehicle reads the same however it was
// changed. Nothing is recorded outside a guarded mutating call.
func Audit(ctx context.Context, method string, req proto.Message, err error) {
	g, _ := ctx.Value(auditKey{}).(*Guard)
	p := FromContext(ctx)
	if g == nil || p == nil {
		return
	}
	if req != nil {
		stampWho(req, p.Name)
	}
	g.record(ctx, p, method, req, err)
}

// Stream is the stream interceptor.
func (g *Guard) Stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		rule, err := g.rule(info.FullMethod)
		if err != nil {
			return err
		}
		if rule.Role == RoleNone {
			return h(srv, ss)
		}
		ctx := ss.Context()
		p, err := g.authenticate(ctx)
		if err != nil {
			return err
		}
		if err := g.authorize(p, info.FullMethod, rule, nil); err != nil {
			return err
		}
		if rule.Watch {
			if !g.acquire(p.Name) {
				return g.deny("watch_cap", codes.ResourceExhausted, "%q already holds %d watch streams", p.Name, g.cfg.MaxWatches)
			}
			defer g.release(p.Name)
		}
		ctx = context.WithValue(WithPrincipal(ctx, p), groupsKey{}, g.cfg.Groups)
		return h(srv, &guardedStream{ServerStream: ss, ctx: ctx, g: g, p: p, method: info.FullMethod, rule: rule})
	}
}

func (g *Guard) acquire(name string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open[name] >= g.cfg.MaxWatches {
		return false
	}
	g.open[name]++
	g.watches.Inc()
	return true
}

func (g *Guard) release(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open[name]--; g.open[name] <= 0 {
		delete(g.open, name)
	}
	g.watches.Dec()
}

// guardedStream checks each request read and hides what a group-scoped principal may not
// see from each response sent.
type guardedStream struct {
	grpc.ServerStream
	ctx    context.Context
	g      *Guard
	p      *Principal
	method string
	rule   Rule
}

func (s *guardedStream) Context() context.Context { return s.ctx }

func (s *guardedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return s.g.prepare(s.p, s.method, s.rule, m)
}

func (s *guardedStream) SendMsg(m any) error {
	if s.p.Scoped() {
		if pm, ok := m.(proto.Message); ok && s.g.prune(s.p, pm.ProtoReflect()) {
			return nil // not visible to this principal: not sent, and not an error
		}
	}
	return s.ServerStream.SendMsg(m)
}

// Describe is a one-line description of a principal for logs.
func Describe(p *Principal) string {
	if p == nil {
		return "anonymous"
	}
	s := fmt.Sprintf("%s (%s via %s)", p.Name, p.Role, p.Via)
	if p.Scoped() {
		s += " groups " + strings.Join(p.Groups, ",")
	}
	return s
}
