package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/cmd/internal/launch"
	"github.com/fleetwire/fleetwire/pkg/bus"
)

// One platform for every test that needs a server: starting one costs seconds on a busy
// machine. Security is on, as by default; the tests use its CA and admin token.
var (
	platformOnce sync.Once
	platform     *launch.Platform
	platformErr  error
	platformDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if platform != nil {
		_ = platform.Stop()
	}
	if platformDir != "" {
		_ = os.RemoveAll(platformDir)
	}
	os.Exit(code)
}

func sharedPlatform(t *testing.T) *launch.Platform {
	t.Helper()
	platformOnce.Do(func() {
		platformDir, platformErr = os.MkdirTemp("", "fleetctl-test-")
		if platformErr != nil {
			return
		}
		platform, platformErr = launch.Start(context.Background(), launch.Options{
			NATS:     bus.Config{URL: bus.Embedded, ListenPort: -1},
			Streams:  bus.StreamConfig{MemoryStorage: true},
			RedisURL: "memory", GRPCAddr: "127.0.0.1:0", Sim: 5, SimSeed: 11, Grace: time.Second,
			DataDir: platformDir,
		}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	})
	if platformErr != nil {
		t.Fatal(platformErr)
	}
	return platform
}

// testNow is the clock of every test: times print in UTC.
var testNow = time.Date(2026, 12, 2, 9, 14, 3, 0, time.UTC)

// ctl runs fleetctl against the shared platform (credentials as global flags after the
// command, which is allowed anywhere) and returns stdout, stderr and the exit code.
func ctl(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	p := sharedPlatform(t)
	return ctlRaw(append(args, "--addr", p.GRPCAddr, "--token", p.AdminToken, "--ca", p.CAFile)...)
}

func ctlRaw(args ...string) (string, string, int) {
	var out, errOut bytes.Buffer
	code := cli{stdout: &out, stderr: &errOut, now: time.Now, loc: time.UTC}.run(args)
	return out.String(), errOut.String(), code
}

// mustCtl runs fleetctl and fails the test unless it exits 0 and prints every want.
func mustCtl(t *testing.T, want []string, args ...string) string {
	t.Helper()
	out, stderr, code := ctl(t, args...)
	if code != 0 {
		t.Fatalf("fleetctl %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, stderr)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Fatalf("fleetctl %s: output lacks %q:\n%s", strings.Join(args, " "), w, out)
		}
	}
	return out
}

// failCtl runs fleetctl and fails the test unless it exits with code and stderr holds want.
func failCtl(t *testing.T, code int, want string, args ...string) {
	t.Helper()
	out, stderr, got := ctl(t, args...)
	if got != code || !strings.Contains(stderr, want) {
		t.Fatalf("fleetctl %s: exit %d, stderr %q, stdout %q; want exit %d and %q", strings.Join(args, " "), got, stderr, out, code, want)
	}
}

// simVehicles waits until the five simulated vehicles are listed and returns their ids.
func simVehicles(t *testing.T) []string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, _, code := ctl(t, "-o", "json", "vehicles", "--status", "moving,idle,stopped,offline")
		var ids []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var v struct {
				VehicleID string `json:"vehicleId"`
			}
			if json.Unmarshal([]byte(line), &v) == nil && v.VehicleID != "" && strings.HasPrefix(v.VehicleID, "veh-") {
				ids = append(ids, v.VehicleID)
			}
		}
		if code == 0 && len(ids) >= 5 {
			return ids
		}
		if time.Now().After(deadline) {
			t.Fatalf("the 5 simulated vehicles were never listed; last output:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestVehiclesAndRegistry(t *testing.T) {
	ids := simVehicles(t)
	mustCtl(t, []string{"VEHICLE", "LAST SEEN", ids[0], "of"}, "vehicles")
	csv := mustCtl(t, []string{"vehicle,name,status,position"}, "vehicles", "-o", "csv")
	if strings.Contains(csv, "of ") {
		t.Fatalf("csv output carries the table's footer:\n%s", csv)
	}
	// The detail is fields, not protobuf JSON.
	detail := mustCtl(t, []string{"vehicle:", ids[0], "status:", "position:", "last seen:", "UTC"}, "vehicle", ids[0])
	if strings.Contains(detail, "{") {
		t.Fatalf("vehicle prints JSON in table mode:\n%s", detail)
	}
	mustCtl(t, []string{"vehicle:", ids[0]}, "vehicle", "show", ids[0])
	failCtl(t, 1, "NotFound", "vehicle", "no-such-vehicle")

	mustCtl(t, []string{"van-1", "Van One", "B-FW 1", "vans,north", "never_seen"},
		"vehicle", "add", "van-1", "--name", "Van One", "--plate", "B-FW 1", "--group", "vans", "--group", "north", "--meta", "depot=spandau")
	failCtl(t, 1, "AlreadyExists", "vehicle", "add", "van-1")
	out := mustCtl(t, []string{"Van Uno", "B-FW 1", "depot=spandau"}, "vehicle", "update", "van-1", "--name", "Van Uno")
	if !strings.Contains(out, "vans,north") {
		t.Fatalf("update --name changed the groups:\n%s", out)
	}
	mustCtl(t, []string{"groups:", "vans"}, "vehicle", "update", "van-1", "--group", "vans")
	failCtl(t, 2, "nothing to change", "vehicle", "update", "van-1")
	failCtl(t, 1, "NotFound", "vehicle", "update", "nobody", "--name", "x")
	mustCtl(t, []string{"GROUP", "vans"}, "groups")
	mustCtl(t, []string{"van-1", "1 of 1 vehicles"}, "vehicles", "--group", "vans")
	failCtl(t, 2, "unknown status", "vehicles", "--status", "flying")
}

func TestLiveQueries(t *testing.T) {
	ids := simVehicles(t)
	// The simulated fleet drives around Berlin.
	out := mustCtl(t, []string{"DIST M", "VEHICLE"}, "nearest", "52.52,13.40", "--limit", "3")
	if n := strings.Count(out, "veh-"); n != 3 {
		t.Fatalf("nearest --limit 3 listed %d vehicles:\n%s", n, out)
	}
	failCtl(t, 2, "LAT,LON", "nearest", "berlin")
	mustCtl(t, []string{"TIME", "LAT", "fixes shown of"}, "track", ids[0], "--from", "1h")
	mustCtl(t, []string{"START", "KM"}, "trips", ids[0], "--from", "48h")
	mustCtl(t, []string{"START", "DURATION"}, "stops", ids[0])
	failCtl(t, 2, "not a time", "trips", ids[0], "--from", "yesterday-ish")

	// watch is a stream: it runs until interrupted, aligned, with the header first.
	var buf lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	p := sharedPlatform(t)
	e := &env{cli: cli{stdout: &buf, stderr: io.Discard, now: time.Now, loc: time.UTC}, name: "watch", format: "table"}
	cs := connSettings{addr: p.GRPCAddr, token: p.AdminToken, ca: p.CAFile}
	conn, err := cs.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	e.conn = conn
	go func() { done <- runWatch(ctx, e, []string{"--vehicle", ids[0]}) }()
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(buf.String(), "\n") < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("watch: %v", err)
	}
	lines := strings.Split(buf.String(), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "VEHICLE ") || !strings.HasPrefix(lines[1], ids[0]) {
		t.Fatalf("watch output:\n%s", buf.String())
	}
	if h, r := strings.Index(lines[0], "STATUS"), strings.Index(lines[1], statusWord(lines[1])); h != r {
		t.Fatalf("watch columns not aligned (STATUS at %d, the status at %d):\n%s", h, r, buf.String())
	}
}

// statusWord finds the status in a watch row.
func statusWord(row string) string {
	for _, s := range []string{" moving", " idle", " stopped", " offline", " never_seen"} {
		if strings.Contains(row, s) {
			return s[1:]
		}
	}
	return "?"
}

func TestZones(t *testing.T) {
	sharedPlatform(t)
	mustCtl(t, []string{"depot", "Depot", "Circle", "enter_exit", "50 km/h"},
		"zones", "create", "depot", "--circle", "52.52,13.405", "--radius", "500", "--name", "Depot", "--speed-limit", "50", "--tag", "base")
	file := filepath.Join(t.TempDir(), "zones.geojson")
	if err := os.WriteFile(file, []byte(`{"type":"FeatureCollection","features":[
 {"type":"Feature","id":"yard","properties":{"name":"Yard"},"geometry":{"type":"Polygon","coordinates":[[[13.3,52.4],[13.5,52.4],[13.5,52.6],[13.3,52.6],[13.3,52.4]]]}},
 {"type":"Feature","properties":{"id":"road","name":"Ring road","buffer_m":30},"geometry":{"type":"LineString","coordinates":[[13.3,52.5],[13.5,52.5]]}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	mustCtl(t, []string{"yard", "Polygon", "must_stay_inside", "road", "Corridor", "group:vans"},
		"zones", "create", "--geojson", file, "--alert", "must_stay_inside", "--group", "vans", "--days", "mon-fri", "--hours", "06:00-18:00", "--tz", "Europe/Berlin")
	failCtl(t, 1, "AlreadyExists", "zones", "create", "depot", "--circle", "52.52,13.405", "--radius", "500")
	failCtl(t, 2, "--geojson FILE or --circle", "zones", "create", "x")
	failCtl(t, 2, "unknown --alert", "zones", "create", "x", "--circle", "1,1", "--radius", "5", "--alert", "geofence_enter")

	mustCtl(t, []string{"depot", "road", "yard"}, "zones")
	mustCtl(t, []string{"depot"}, "zones", "list", "--tag", "base")
	mustCtl(t, []string{"zone:", "yard", "schedule:", "Mon,Tue,Wed,Thu,Fri 06:00-18:00 Europe/Berlin", "geojson:"}, "zones", "show", "yard")
	mustCtl(t, []string{"VEHICLE", "vehicles in yard"}, "zones", "occupants", "yard")
	mustCtl(t, []string{"depot", "yard"}, "zones", "at", "52.52,13.405")
	mustCtl(t, []string{"ZONE", "INSIDE SINCE"}, "zones", "of", "veh-00001")
	mustCtl(t, []string{"TIME", "EVENT"}, "zones", "events", "--zone", "yard", "--from", "1h")
	failCtl(t, 2, "--zone or --vehicle", "zones", "events")
	mustCtl(t, []string{"FeatureCollection", "depot"}, "zones", "export")
	_, stderr, code := ctl(t, "zones", "delete", "depot")
	if code != 0 || !strings.Contains(stderr, "deleted") {
		t.Fatalf("zones delete: exit %d, %s", code, stderr)
	}
	failCtl(t, 1, "NotFound", "zones", "show", "depot")
}

func TestMaintenanceAndFuel(t *testing.T) {
	ids := simVehicles(t)
	mustCtl(t, []string{"group vans-m: 2 vehicles"}, "plans", "group", "vans-m", ids[0], ids[1])
	out := mustCtl(t, []string{"Oil and filter", "group:vans-m", "15000 km", "365 d", "engine oil"},
		"plans", "add", "Oil and filter", "--group", "vans-m", "--every-km", "15000", "--every-days", "365", "--item", "engine oil", "--id", "oil")
	_ = out
	mustCtl(t, []string{"oil", "Oil and filter"}, "plans", "--vehicle", ids[0])
	failCtl(t, 1, "InvalidArgument", "plans", "add", "Nothing", "--vehicle", ids[0])
	mustCtl(t, []string{"VEHICLE", "PLAN", ids[0], "oil", "ok"}, "due", "--horizon-days", "400", "--state", "ok,due_soon,overdue")
	mustCtl(t, []string{"SERVICE", "oil", "engine oil", "90.50 EUR", "plan oil is now ok"},
		"services", "record", ids[0], "--plan", "oil", "--item", "engine oil:60.5", "--item", "filter:30", "--currency", "EUR", "--time", "2h")
	mustCtl(t, []string{"engine oil", "1 services, total cost 90.50"}, "services", ids[0])
	mustCtl(t, []string{"CODE", "SEVERITY"}, "faults", ids[0])
	mustCtl(t, []string{"vehicle:", ids[0], "odometer km:"}, "health", ids[0])
	mustCtl(t, []string{"VEHICLE", "CONSUMED L", ids[0]}, "fuel", ids[0], "--from", "1h")
	mustCtl(t, []string{ids[1], "TOTAL"}, "fuel", "--group", "vans-m")
	mustCtl(t, []string{"80.0 L tank, 2 calibration points"}, "fuel", "profile", ids[0], "--capacity", "80", "--calibration", "0:0,4095:80")
	failCtl(t, 2, "one vehicle, or --group", "fuel")
	// One group model: the registry's groups are maintenance's. A vehicle put in a group
	// with vehicle update is in that group's fuel report; plans group moves the members.
	mustCtl(t, []string{"vans-m"}, "vehicle", ids[0])
	mustCtl(t, nil, "vehicle", "add", ids[2], "--group", "vans-m") // it reports; registering keeps its state
	mustCtl(t, []string{ids[0], ids[1], ids[2], "TOTAL"}, "fuel", "--group", "vans-m", "--from", "1h")
	mustCtl(t, []string{"group vans-m: 1 vehicles"}, "plans", "group", "vans-m", ids[2])
	if out := mustCtl(t, []string{ids[2]}, "fuel", "--group", "vans-m", "--from", "1h"); strings.Contains(out, ids[0]) || strings.Contains(out, ids[1]) {
		t.Fatalf("fuel --group after plans group moved the members: still lists the old ones:\n%s", out)
	}
	mustCtl(t, []string{"vans-m", "1"}, "groups")
	failCtl(t, 1, "NotFound", "plans", "group", "vans-m", "veh-nosuch")
	_, stderr, code := ctl(t, "plans", "delete", "oil")
	if code != 0 || !strings.Contains(stderr, "deleted") {
		t.Fatalf("plans delete: exit %d, %s", code, stderr)
	}
}

func TestAccess(t *testing.T) {
	p := sharedPlatform(t)
	t.Run("anonymous", func(t *testing.T) {
		t.Setenv("FLEETWIRE_DATA_DIR", t.TempDir()) // no all-in-one credentials to fall back on
		t.Setenv("FLEETCTL_CONFIG", filepath.Join(t.TempDir(), "none.json"))
		_, stderr, code := ctlRaw("--addr", p.GRPCAddr, "--ca", p.CAFile, "vehicles")
		if code != 1 || !strings.Contains(stderr, "Unauthenticated") || !strings.Contains(stderr, "fleetctl login") {
			t.Fatalf("without a token: exit %d, stderr %q; want exit 1, Unauthenticated and a hint", code, stderr)
		}
	})
	t.Run("login then use", func(t *testing.T) {
		cfg := filepath.Join(t.TempDir(), "fleetwire", "fleetctl.json")
		t.Setenv("FLEETCTL_CONFIG", cfg)
		t.Setenv("FLEETWIRE_DATA_DIR", t.TempDir())
		if _, stderr, code := ctlRaw("login", "--addr", p.GRPCAddr, "--token", p.AdminToken, "--ca", p.CAFile); code != 0 {
			t.Fatalf("login: exit %d: %s", code, stderr)
		}
		st, err := os.Stat(cfg)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("config file: %v, mode %v; want 0600", err, st.Mode().Perm())
		}
		// No --addr: the logged-in server.
		if out, stderr, code := ctlRaw("tokens", "create", "vera", "viewer", "--group", "red"); code != 0 || !strings.Contains(out, "fwt_") {
			t.Fatalf("tokens create: exit %d, out %q, stderr %q", code, out, stderr)
		}
		if out, stderr, code := ctlRaw("audit", "--principal", "admin"); code != 0 || !strings.Contains(out, "TokenService/CreateToken") || !strings.Contains(out, "UTC") {
			t.Fatalf("audit: exit %d, out %q, stderr %q; want the token creation by admin", code, out, stderr)
		}
		if out, _, code := ctlRaw("tokens", "list", "-o", "csv"); code != 0 || !strings.Contains(out, "id,name,role") || !strings.Contains(out, "vera") {
			t.Fatalf("tokens list: exit %d, out %q", code, out)
		}
	})
}

func TestHelpAndFlags(t *testing.T) {
	// Help needs no server: "-h" is never a vehicle id.
	for _, args := range [][]string{{"vehicle", "-h"}, {"help", "vehicle"}, {"zones", "create", "--help"}, {"ack", "-h"}, {"vehicles", "-h", "--addr", "127.0.0.1:1"}} {
		out, stderr, code := ctlRaw(args...)
		name := args[0]
		if name == "help" {
			name = args[1]
		}
		if code != 0 || !strings.Contains(out+stderr, "usage: fleetctl "+name) {
			t.Fatalf("fleetctl %v: exit %d, output %q", args, code, out+stderr)
		}
	}
	out, _, code := ctlRaw("help")
	if code != 0 || !strings.Contains(out, "zones") || !strings.Contains(out, "-addr") {
		t.Fatalf("help: exit %d:\n%s", code, out)
	}
	if _, stderr, code := ctlRaw("frobnicate"); code != 2 || !strings.Contains(stderr, "unknown command") {
		t.Fatalf("unknown command: exit %d, stderr %q", code, stderr)
	}
	if _, stderr, code := ctlRaw("vehicles", "-o", "yaml"); code != 2 || !strings.Contains(stderr, "table, json or csv") {
		t.Fatalf("-o yaml: exit %d, stderr %q", code, stderr)
	}
	if _, stderr, code := ctlRaw("vehicles", "--bogus"); code != 2 || !strings.Contains(stderr, "bogus") {
		t.Fatalf("unknown flag: exit %d, stderr %q", code, stderr)
	}
	if _, stderr, code := ctlRaw("ack"); code != 2 || !strings.Contains(stderr, "usage: fleetctl ack") {
		t.Fatalf("ack without ids: exit %d, stderr %q", code, stderr)
	}
	// Completion lists commands, then a command's subcommands and flags.
	out, _, _ = ctlRaw("__complete")
	for _, w := range []string{"vehicles", "zones", "--addr", "-o"} {
		if !strings.Contains(out, w+"\n") {
			t.Fatalf("completion of the first word lacks %q:\n%s", w, out)
		}
	}
	out, _, _ = ctlRaw("__complete", "zones")
	if !strings.Contains(out, "create\n") || !strings.Contains(out, "occupants\n") {
		t.Fatalf("completion after zones:\n%s", out)
	}
	out, _, _ = ctlRaw("__complete", "--addr", "x:1", "zones", "create")
	if !strings.Contains(out, "--circle\n") || !strings.Contains(out, "--radius\n") {
		t.Fatalf("completion after zones create:\n%s", out)
	}
	for _, sh := range []string{"bash", "zsh"} {
		if out, _, code := ctlRaw("completion", sh); code != 0 || !strings.Contains(out, "__complete") {
			t.Fatalf("completion %s: exit %d:\n%s", sh, code, out)
		}
	}
}

func TestSplitGlobals(t *testing.T) {
	var g globals
	fs := newGlobalFlags(&g)
	for _, tc := range []struct {
		in           []string
		global, rest string
	}{
		{[]string{"vehicles", "--addr", "h:1", "-o", "json", "--group", "g"}, "--addr h:1 -o json", "vehicles --group g"},
		{[]string{"--insecure", "ack", "12", "--note", "x"}, "--insecure", "ack 12 --note x"},
		{[]string{"-o=csv", "alerts", "--", "--addr"}, "-o=csv", "alerts -- --addr"},
	} {
		global, rest := splitGlobals(fs, tc.in)
		if strings.Join(global, " ") != tc.global || strings.Join(rest, " ") != tc.rest {
			t.Errorf("splitGlobals(%q) = %q, %q; want %q, %q", tc.in, global, rest, tc.global, tc.rest)
		}
	}
}

func TestAddress(t *testing.T) {
	for _, tc := range []struct {
		in, want, note, err string
	}{
		{"127.0.0.1:50051", "127.0.0.1:50051", "", ""},
		{"fleet.example.com", "fleet.example.com:50051", "has no port", ""},
		{"::1", "[::1]:50051", "has no port", ""},
		{":7000", "127.0.0.1:7000", "", ""},
		{"https://fleet.example.com", "", "", "not a URL"},
		{"host:https", "", "", "not a number"},
	} {
		got, note, err := normalizeAddr(tc.in)
		if got != tc.want || !strings.Contains(note, tc.note) || (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("normalizeAddr(%q) = %q, %q, %v; want %q, note %q, error %q", tc.in, got, note, err, tc.want, tc.note, tc.err)
		}
	}
}

// A server that is not there: the address tried, where it came from, and how to find the
// right one; --follow says it is reconnecting instead of looking like a quiet fleet.
func TestUnreachable(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens here now
	t.Setenv("FLEETCTL_CONFIG", filepath.Join(t.TempDir(), "none.json"))
	t.Setenv("FLEETWIRE_DATA_DIR", t.TempDir())
	_, stderr, code := ctlRaw("vehicles", "--addr", addr, "--timeout", "3s")
	for _, w := range []string{"Unavailable", "no Fleetwire server answered at " + addr, "--addr or FLEETCTL_ADDR", "prints its gRPC address", "endpoints.json"} {
		if code != 1 || !strings.Contains(stderr, w) {
			t.Fatalf("unreachable server: exit %d, stderr lacks %q:\n%s", code, w, stderr)
		}
	}

	var errOut lockedBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := &env{cli: cli{stdout: io.Discard, stderr: &errOut, now: time.Now, loc: time.UTC}, name: "alerts", format: "table"}
	e.conns = connSettings{addr: addr, plaintext: true, addrFrom: "test"}
	conn, err := e.conns.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	e.conn = conn
	done := make(chan error, 1)
	go func() { done <- runAlerts(ctx, e, []string{"--follow"}) }()
	for !strings.Contains(errOut.String(), "reconnecting") && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	if s := errOut.String(); !strings.Contains(s, "unreachable") || !strings.Contains(s, addr) {
		t.Fatalf("alerts --follow against no server said:\n%s", s)
	}
}

// fleetctl finds the all-in-one's credentials where the all-in-one puts them.
func TestAllInOneDataDirMatchesLaunch(t *testing.T) {
	t.Setenv("FLEETWIRE_DATA_DIR", "")
	if got, want := allInOneDataDir(), launch.DefaultDataDir(); got != want {
		t.Fatalf("fleetctl looks in %s, the all-in-one writes to %s", got, want)
	}
}

func TestEndpointsFileMatchesLaunch(t *testing.T) {
	dir := t.TempDir()
	if got, want := endpointsPath(dir), filepath.Join(dir, launch.EndpointsFile); got != want {
		t.Fatalf("fleetctl reads %s, the all-in-one writes %s", got, want)
	}
	// A local all-in-one's address is the default when nothing else says.
	t.Setenv("FLEETWIRE_DATA_DIR", dir)
	t.Setenv("FLEETCTL_CONFIG", filepath.Join(dir, "none.json"))
	t.Setenv("FLEETCTL_ADDR", "")
	if err := os.WriteFile(endpointsPath(dir), []byte(`{"grpc":"127.0.0.1:50999"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var cs connSettings
	if err := cs.resolve(filepath.Join(dir, "none.json")); err != nil || cs.addr != "127.0.0.1:50999" || !strings.Contains(cs.addrFrom, "endpoints.json") {
		t.Fatalf("resolve: %v, addr %q from %q; want the all-in-one's 127.0.0.1:50999", err, cs.addr, cs.addrFrom)
	}
}
