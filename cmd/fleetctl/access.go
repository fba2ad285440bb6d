package main

// Credentials (login, the config file, the all-in-one's own) and the admin's access
// commands: tokens and the audit trail.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

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
	if s.addr == "" {
		s.addr = c.Addr
	}
	if s.addr == "" {
		s.addr = "127.0.0.1:50051"
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

// runLogin checks the credentials against the server and stores them: login --addr A
// --token T [--ca FILE].
func runLogin(ctx context.Context, s connSettings, cfgPath string, out io.Writer) error {
	if s.addr == "" || s.token == "" {
		return errors.New("login needs --addr and --token (and --ca when the server's certificate is not from a public CA)")
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
	if _, err := fleetv1.NewTrackingServiceClient(conn).ListVehicles(ctx, &fleetv1.ListVehiclesRequest{PageSize: 1}); err != nil {
		return fmt.Errorf("the server refused these credentials: %w", err)
	}
	if err := saveConfig(cfgPath, config{Addr: s.addr, Token: s.token, CAFile: s.ca}); err != nil {
		return err
	}
	fmt.Fprintf(out, "logged in to %s; credentials saved in %s\n", s.addr, cfgPath)
	return nil
}

// runAudit prints the audit trail: audit [--after N] [--limit N] [--principal P].
func runAudit(ctx context.Context, conn *grpc.ClientConn, args []string, out io.Writer, jsonOut bool) error {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	after := fs.Uint64("after", 0, "records after this sequence number")
	limit := fs.Int("limit", 100, "most records (at most 1000)")
	principal := fs.String("principal", "", "only this principal's records")
	if err := fs.Parse(args); err != nil {
		return err
	}
	resp, err := fleetv1.NewAuditServiceClient(conn).ListAuditRecords(ctx, &fleetv1.ListAuditRecordsRequest{AfterSeq: *after, Limit: int32(*limit), Principal: *principal})
	if err != nil {
		return err
	}
	if jsonOut {
		for _, r := range resp.GetRecords() {
			b, _ := protojson.Marshal(r)
			fmt.Fprintln(out, string(b))
		}
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tPRINCIPAL\tROLE\tPEER\tMETHOD\tRESULT\tREQUEST")
	for _, r := range resp.GetRecords() {
		req := r.GetRequest()
		if len(req) > 80 {
			req = req[:77] + "..."
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.GetSeq(), r.GetTime().AsTime().Local().Format(time.DateTime),
			r.GetPrincipal(), enumName(r.GetRole().String(), "ROLE_"), r.GetPeer(), strings.TrimPrefix(r.GetMethod(), "/fleet.v1."), r.GetCode(), req)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "next page: fleetctl audit --after %d\n", resp.GetLastSeq())
	return nil
}

// runTokens manages API tokens: tokens create NAME ROLE [--group G]... [--ttl D] |
// tokens list | tokens revoke ID.
func runTokens(ctx context.Context, conn *grpc.ClientConn, args []string, out io.Writer, jsonOut bool) error {
	c := fleetv1.NewTokenServiceClient(conn)
	if len(args) == 0 {
		return errors.New("tokens create NAME ROLE [--group G]... [--ttl D] | tokens list | tokens revoke ID")
	}
	switch args[0] {
	case "create":
		fs := flag.NewFlagSet("tokens create", flag.ContinueOnError)
		var groups multiFlag
		fs.Var(&groups, "group", "limit the principal to this vehicle group (repeatable)")
		ttl := fs.Duration("ttl", 0, "lifetime (0: no expiry)")
		pos, err := parseMixed(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 2 {
			return errors.New("tokens create NAME ROLE (role: viewer, dispatcher, supervisor or admin)")
		}
		role, ok := enumValue(fleetv1.Role_value, "ROLE_", pos[1])
		if !ok {
			return fmt.Errorf("unknown role %q (want viewer, dispatcher, supervisor or admin)", pos[1])
		}
		resp, err := c.CreateToken(ctx, &fleetv1.CreateTokenRequest{Name: pos[0], Role: fleetv1.Role(role), Groups: groups, TtlSeconds: int64(ttl.Seconds())})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "token %s for %s (%s); the secret is shown only now:\n%s\n", resp.GetToken().GetId(), resp.GetToken().GetName(), pos[1], resp.GetSecret())
		return nil
	case "list":
		resp, err := c.ListTokens(ctx, &fleetv1.ListTokensRequest{})
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tROLE\tGROUPS\tCREATED\tEXPIRES\tREVOKED")
		for _, t := range resp.GetTokens() {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.GetId(), t.GetName(), enumName(t.GetRole().String(), "ROLE_"), strings.Join(t.GetGroups(), ","),
				shortTime(t.GetCreatedAt(), t.GetCreatedAt() != nil), shortTime(t.GetExpiresAt(), t.GetExpiresAt() != nil), shortTime(t.GetRevokedAt(), t.GetRevokedAt() != nil))
		}
		return tw.Flush()
	case "revoke":
		if len(args) != 2 {
			return errors.New("tokens revoke ID")
		}
		resp, err := c.RevokeToken(ctx, &fleetv1.RevokeTokenRequest{Id: args[1]})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "token %s (%s) revoked\n", resp.GetToken().GetId(), resp.GetToken().GetName())
		return nil
	}
	return fmt.Errorf("unknown tokens subcommand %q (create, list or revoke)", args[0])
}
