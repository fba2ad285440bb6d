package main

// Credentials (login, the config file, the all-in-one's own) and the admin's access
// commands: tokens and the audit trail.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"google.golang.org/grpc"

	"github.com/fleetwire/fleetwire/pkg/grpcserver"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// config is what `fleetctl login` stores, in configPath() with mode 0600.
type config struct {
	Addr   string `json:"addr"`
	Token  string `json:"token,omitempty"`
	CAFile string `json:"ca_file,omitempty"`
}

// configPath is $FLEETCTL_CONFIG, else <user config dir>/fleetwire/fleetctl.json
// (~/.config/fleetwire/fleetctl.json on Linux).
func configPath() string {
	if p := os.Getenv("FLEETCTL_CONFIG"); p != "" {
		return p
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return ".fleetctl.json"
	}
	return filepath.Join(dir, "fleetwire", "fleetctl.json")
}

func loadConfig(path string) (config, error) {
	var c config
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

func saveConfig(path string, c config) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	data, _ := json.MarshalIndent(c, "", "  ")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// allInOneDataDir mirrors launch.DefaultDataDir (a test keeps them equal): where a
// fleetwire all-in-one on this machine keeps its generated credentials.
func allInOneDataDir() string {
	if d := os.Getenv("FLEETWIRE_DATA_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "fleetwire")
	}
	if h, err := os.UserHomeDir(); err == nil && h != "" {
		return filepath.Join(h, ".local", "share", "fleetwire")
	}
	return "fleetwire-data"
}

// connSettings are the resolved connection settings.
type connSettings struct {
	addr, token, ca string
	plaintext       bool
	addrFrom        string // where addr came from, for hints
	addrNote        string // what was changed about the address given, said on stderr
}

// endpointsPath is the file a running all-in-one writes its bound addresses to
// (launch.EndpointsFile; a test keeps them equal).
func endpointsPath(dataDir string) string { return filepath.Join(dataDir, "endpoints.json") }

// allInOneGRPC is the gRPC address a local all-in-one wrote, when one did.
func allInOneGRPC() string {
	data, err := os.ReadFile(endpointsPath(allInOneDataDir()))
	if err != nil {
		return ""
	}
	var ep struct {
		GRPC string `json:"grpc"`
	}
	if json.Unmarshal(data, &ep) != nil {
		return ""
	}
	return ep.GRPC
}

// normalizeAddr checks an address given by the operator. A host without a port gets the
// documented port, said aloud (gRPC would otherwise dial :443 without a word); a URL is
// refused, since gRPC wants HOST:PORT.
func normalizeAddr(addr string) (string, string, error) {
	if strings.Contains(addr, "://") {
		return "", "", fmt.Errorf("--addr %q: want HOST:PORT, not a URL (e.g. 127.0.0.1:%s)", addr, defaultPort)
	}
	host, port, err := net.SplitHostPort(addr)
	if err == nil {
		if host == "" {
			host = "127.0.0.1"
		}
		if _, perr := strconv.ParseUint(port, 10, 16); perr != nil {
			return "", "", fmt.Errorf("--addr %q: port %q is not a number", addr, port)
		}
		return net.JoinHostPort(host, port), "", nil
	}
	host = strings.Trim(addr, "[]")
	if host == "" || strings.ContainsAny(host, "/ ") {
		return "", "", fmt.Errorf("--addr %q: want HOST:PORT (e.g. 127.0.0.1:%s)", addr, defaultPort)
	}
	if strings.Count(host, ":") > 0 && net.ParseIP(host) == nil {
		return "", "", fmt.Errorf("--addr %q: want HOST:PORT (e.g. 127.0.0.1:%s)", addr, defaultPort)
	}
	fixed := net.JoinHostPort(host, defaultPort)
	return fixed, fmt.Sprintf("--addr %q has no port; using %s (Fleetwire's default gRPC port)", addr, fixed), nil
}

// resolve fills what the flags left empty: from the environment, then the config file,
// then — for an address on this machine — the all-in-one's development credentials, so
// `fleetctl vehicles` works against `fleetwire` with no setup.
func (s *connSettings) resolve(cfgPath string) error {
	if s.token == "" {
		s.token = os.Getenv("FLEETCTL_TOKEN")
	}
	if s.ca == "" {
		s.ca = os.Getenv("FLEETCTL_CA")
	}
	c, err := loadConfig(cfgPath)
	if err != nil {
		return err
	}
	switch {
	case s.addr != "":
		s.addrFrom = "from --addr or FLEETCTL_ADDR"
		if s.addr, s.addrNote, err = normalizeAddr(s.addr); err != nil {
			return err
		}
	case c.Addr != "":
		s.addr, s.addrFrom = c.Addr, "the server of fleetctl login, in "+cfgPath
	default:
		if a := allInOneGRPC(); a != "" {
			s.addr, s.addrFrom = a, "written by the local all-in-one to "+endpointsPath(allInOneDataDir())
		} else {
			s.addr, s.addrFrom = "127.0.0.1:"+defaultPort, "the default"
		}
	}
	if s.plaintext {
		return nil
	}
	if s.token == "" && c.Addr == s.addr {
		s.token = c.Token
		if s.ca == "" {
			s.ca = c.CAFile
		}
	}
	if s.token == "" && loopback(s.addr) {
		dir := filepath.Join(allInOneDataDir(), "credentials")
		if tok, err := os.ReadFile(filepath.Join(dir, "admin.token")); err == nil {
			s.token = strings.TrimSpace(string(tok))
			if s.ca == "" {
				s.ca = filepath.Join(dir, "ca.pem")
			}
		}
	}
	if s.ca == "" && c.Addr == s.addr {
		s.ca = c.CAFile
	}
	if s.ca == "" && loopback(s.addr) {
		if ca := filepath.Join(allInOneDataDir(), "credentials", "ca.pem"); fileExists(ca) {
			s.ca = ca
		}
	}
	return nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (s *connSettings) dial() (*grpc.ClientConn, error) {
	return grpcserver.Dial(s.addr, grpcserver.ClientConfig{CAFile: s.ca, Token: s.token, Plaintext: s.plaintext})
}

func init() {
	register(
		command{name: "login", args: "--addr HOST:PORT --token T [--ca FILE]", summary: "check credentials and save them for later commands", local: true, run: runLogin},
		command{name: "audit", args: "[--after N] [--limit N] [--principal P]", summary: "the audit trail of every change (admin)", run: runAudit},
		command{name: "tokens", args: "create NAME ROLE [--group G]... [--ttl D] | list | revoke ID", summary: "API tokens (admin)", run: runTokens},
	)
}

// runLogin checks the credentials against the server and stores them: login --addr A
// --token T [--ca FILE] (the global flags).
func runLogin(ctx context.Context, e *env, args []string) error {
	if _, err := e.noFlags(args, 0, 0); err != nil {
		return err
	}
	s := connSettings{addr: e.globals.addr, token: e.globals.token, ca: e.globals.ca, plaintext: e.globals.plaintext, addrFrom: "from --addr"}
	if s.addr == "" || s.token == "" {
		return usageErr("login needs --addr and --token (and --ca when the server's certificate is not from a public CA)")
	}
	var err error
	if s.addr, s.addrNote, err = normalizeAddr(s.addr); err != nil {
		return err
	}
	if s.addrNote != "" {
		fmt.Fprintf(e.stderr, "fleetctl: %s\n", s.addrNote)
	}
	if s.ca != "" {
		abs, err := filepath.Abs(s.ca)
		if err != nil {
			return err
		}
		s.ca = abs
	}
	conn, err := s.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	e.conns = s
	if _, err := fleetv1.NewTrackingServiceClient(conn).ListVehicles(ctx, &fleetv1.ListVehiclesRequest{PageSize: 1}); err != nil {
		return err
	}
	if err := saveConfig(e.globals.cfgPath, config{Addr: s.addr, Token: s.token, CAFile: s.ca}); err != nil {
		return err
	}
	fmt.Fprintf(e.out(), "logged in to %s; credentials saved in %s\n", s.addr, e.globals.cfgPath)
	return nil
}

// runAudit prints the audit trail: audit [--after N] [--limit N] [--principal P].
func runAudit(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet()
	after := fs.Uint64("after", 0, "records after this sequence number")
	limit := fs.Int("limit", 100, "most records (at most 1000)")
	principal := fs.String("principal", "", "only this principal's records")
	if _, err := e.noPos(fs, args); err != nil {
		return err
	}
	resp, err := fleetv1.NewAuditServiceClient(e.conn).ListAuditRecords(ctx, &fleetv1.ListAuditRecordsRequest{AfterSeq: *after, Limit: int32(*limit), Principal: *principal})
	if err != nil {
		return err
	}
	return renderAudit(e, resp)
}

func renderAudit(e *env, resp *fleetv1.ListAuditRecordsResponse) error {
	if e.json() {
		for _, r := range resp.GetRecords() {
			if err := e.emit(r); err != nil {
				return err
			}
		}
		return nil
	}
	t := e.table("SEQ", "TIME", "PRINCIPAL", "ROLE", "PEER", "METHOD", "RESULT", "REQUEST")
	for _, r := range resp.GetRecords() {
		req := r.GetRequest()
		if len(req) > 80 && e.format == "table" {
			req = req[:77] + "..."
		}
		t.row(strconv.FormatUint(r.GetSeq(), 10), e.when(r.GetTime()), r.GetPrincipal(), enumName(r.GetRole().String(), "ROLE_"), r.GetPeer(),
			strings.TrimPrefix(r.GetMethod(), "/fleet.v1."), r.GetCode(), req)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if e.format == "table" && len(resp.GetRecords()) > 0 {
		fmt.Fprintf(e.stderr, "next page: fleetctl audit --after %d\n", resp.GetLastSeq())
	}
	return nil
}

// runTokens manages API tokens: tokens create NAME ROLE [--group G]... [--ttl D] |
// tokens list | tokens revoke ID.
func runTokens(ctx context.Context, e *env, args []string) error {
	c := fleetv1.NewTokenServiceClient(e.conn)
	return e.dispatch(ctx, args, []sub{
		{name: "create", args: "NAME ROLE [--group G]... [--ttl D]", summary: "issue a token (role: " + enumNames(fleetv1.Role_value, "ROLE_") + "); the secret is shown once",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				var groups multiFlag
				fs.Var(&groups, "group", "limit the principal to this vehicle group (repeatable)")
				ttl := fs.Duration("ttl", 0, "lifetime (0: no expiry)")
				pos, err := e.parse(fs, args)
				if err != nil {
					return err
				}
				if len(pos) != 2 {
					return usageErr("tokens create NAME ROLE")
				}
				role, ok := enumValue(fleetv1.Role_value, "ROLE_", pos[1])
				if !ok {
					return usageErr("unknown role %q (want %s)", pos[1], enumNames(fleetv1.Role_value, "ROLE_"))
				}
				resp, err := c.CreateToken(ctx, &fleetv1.CreateTokenRequest{Name: pos[0], Role: fleetv1.Role(role), Groups: groups, TtlSeconds: int64(ttl.Seconds())})
				if err != nil {
					return err
				}
				if e.json() {
					return e.emit(resp)
				}
				fmt.Fprintf(e.out(), "token %s for %s (%s); the secret is shown only now:\n%s\n", resp.GetToken().GetId(), resp.GetToken().GetName(), pos[1], resp.GetSecret())
				return nil
			}},
		{name: "list", summary: "every token (secrets are never shown again)",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				if _, err := e.noPos(fs, args); err != nil {
					return err
				}
				resp, err := c.ListTokens(ctx, &fleetv1.ListTokensRequest{})
				if err != nil {
					return err
				}
				return renderTokens(e, resp.GetTokens())
			}},
		{name: "revoke", args: "ID", summary: "revoke a token at once",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				pos, err := e.parse(fs, args)
				if err != nil {
					return err
				}
				if len(pos) != 1 {
					return usageErr("tokens revoke ID")
				}
				resp, err := c.RevokeToken(ctx, &fleetv1.RevokeTokenRequest{Id: pos[0]})
				if err != nil {
					return err
				}
				if e.json() {
					return e.emit(resp.GetToken())
				}
				fmt.Fprintf(e.out(), "token %s (%s) revoked\n", resp.GetToken().GetId(), resp.GetToken().GetName())
				return nil
			}},
	}, "")
}

func renderTokens(e *env, tokens []*fleetv1.Token) error {
	if e.json() {
		for _, t := range tokens {
			if err := e.emit(t); err != nil {
				return err
			}
		}
		return nil
	}
	t := e.table("ID", "NAME", "ROLE", "GROUPS", "CREATED", "EXPIRES", "REVOKED")
	for _, k := range tokens {
		t.row(k.GetId(), k.GetName(), enumName(k.GetRole().String(), "ROLE_"), joinOrDash(k.GetGroups()),
			e.when(k.GetCreatedAt()), e.when(k.GetExpiresAt()), e.when(k.GetRevokedAt()))
	}
	return t.flush()
}
