// Command fleetsim plays a simulated fleet of trackers against any NATS server, or
// measures a running Fleetwire with a load test.
//
//	fleetsim [run] [--nats-url URL] [--vehicles N] [--seed S] [--center LAT,LON] ...
//	fleetsim load --vehicles N --rate R --duration D [--target URL] [--grpc ADDR] [--zones N] [--protocol P] ...
//	fleetsim COMMAND --cpu-profile FILE [flags]   (writes a CPU profile)
//
// fleetsim load exits with status 1 when its verdict is FAIL (loadtest.Result.Err), so a
// script or CI job can gate on it; the report is written first either way.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/natsauth"
	"github.com/fleetwire/fleetwire/pkg/wire"
	"github.com/fleetwire/fleetwire/simulators/fleetsim"
	"github.com/fleetwire/fleetwire/simulators/loadtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "fleetsim:", err)
		os.Exit(1)
	}
}

// usage heads every command's help: both commands are listed whichever was asked about.
const usage = `usage:
  fleetsim [run] [flags]    play a simulated fleet against a NATS server
  fleetsim load [flags]     measure a running Fleetwire: latency to WatchVehicles (and,
                            with --zones N, to WatchZoneEvents), throughput, missing records;
                            --ceiling finds the highest sustained rate; exits 1 on FAIL;
                            --protocol teltonika|mqtt|coap reports through that gateway,
                            each vehicle registered as its own device
  fleetsim COMMAND --cpu-profile FILE [flags]
run "fleetsim load -h" for the load tester's flags.

`

func setUsage(fs *flag.FlagSet, stderr io.Writer) {
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fmt.Fprintf(stderr, "flags of %s:\n", fs.Name())
		fs.PrintDefaults()
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	// --cpu-profile is accepted by every command, before its own flags.
	if len(args) >= 2 && args[0] == "--cpu-profile" {
		f, err := os.Create(args[1])
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
		args = args[2:]
	}
	switch cmd {
	case "run":
		return runFleet(ctx, args, stderr)
	case "load":
		return runLoad(ctx, args, stdout, stderr)
	}
	return fmt.Errorf("unknown command %q (want run or load)", cmd)
}

func envOr(def string, keys ...string) string {
	for _, k := range keys {
		if v := os.Getenv(k); v != "" {
			return v
		}
	}
	return def
}

// centerFlag parses "LAT,LON".
type centerFlag struct{ p *geo.Point }

func (c centerFlag) String() string {
	if c.p == nil {
		return ""
	}
	return fmt.Sprintf("%g,%g", c.p.Lat, c.p.Lon)
}

func (c centerFlag) Set(s string) error {
	lat, lon, ok := strings.Cut(s, ",")
	if !ok {
		return fmt.Errorf("want LAT,LON, got %q", s)
	}
	la, err1 := strconv.ParseFloat(strings.TrimSpace(lat), 64)
	lo, err2 := strconv.ParseFloat(strings.TrimSpace(lon), 64)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("want LAT,LON, got %q", s)
	}
	*c.p = geo.Point{Lat: la, Lon: lo}
	return nil
}

// fleetFlags registers the simulator's flags on fs.
func fleetFlags(fs *flag.FlagSet, cfg *fleetsim.Config) {
	fs.IntVar(&cfg.Vehicles, "vehicles", cfg.Vehicles, "number of simulated vehicles")
	fs.Int64Var(&cfg.Seed, "seed", cfg.Seed, "random seed; runs are reproducible from it")
	fs.Var(centerFlag{&cfg.Center}, "center", "city centre LAT,LON")
	fs.StringVar(&cfg.Prefix, "prefix", cfg.Prefix, "vehicle id prefix")
	fs.DurationVar(&cfg.MovingInterval, "moving-interval", cfg.MovingInterval, "tracker interval while moving")
	fs.DurationVar(&cfg.ParkedInterval, "parked-interval", cfg.ParkedInterval, "tracker interval while parked")
	fs.IntVar(&cfg.BatchRecords, "batch", cfg.BatchRecords, "records a tracker buffers per packet")
	fs.IntVar(&cfg.MaxInFlight, "max-in-flight", cfg.MaxInFlight, "unacknowledged JetStream publishes")
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

func runFleet(ctx context.Context, args []string, stderr io.Writer) error {
	cfg := fleetsim.DefaultConfig()
	fs := flag.NewFlagSet("fleetsim run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	setUsage(fs, stderr)
	url := fs.String("nats-url", envOr(nats.DefaultURL, "FLEETSIM_NATS_URL", "NATS_URL"), "NATS server URL (env FLEETSIM_NATS_URL, NATS_URL); \"embedded\" starts one in-process")
	creds := fs.String("nats-creds", os.Getenv("NATS_CREDS"), "NATS credentials file (env NATS_CREDS)")
	user, pwFile := natsLoginFlags(fs)
	devices := fs.String("devices", os.Getenv("FLEETSIM_DEVICES"), "device secrets file (\"<vehicle id> <secret>\" lines, e.g. the all-in-one's <data-dir>/credentials/nats/devices.secrets): each vehicle connects as its own device (env FLEETSIM_DEVICES)")
	fleetFlags(fs, &cfg)
	fs.DurationVar(&cfg.FixedInterval, "interval", 0, "if set, every vehicle reports exactly this often (load generation)")
	fs.Float64Var(&cfg.Speedup, "speedup", 1, "simulated clock speed relative to the wall clock")
	fs.BoolVar(&cfg.Scenarios, "scenarios", false, "play the scripted incidents")
	fs.StringVar(&cfg.Protocol, "protocol", fleetsim.ProtocolNATS, "how trackers report: nats, teltonika (Codec 8E over TCP to --teltonika-addr), mqtt (to the NATS server's MQTT listener at --device-addr) or coap (to the CoAP gateway at --device-addr)")
	fs.StringVar(&cfg.DeviceAddr, "device-addr", envOr("", "FLEETSIM_DEVICE_ADDR"), "mqtt or coap: host:port of the MQTT listener or the CoAP gateway (env FLEETSIM_DEVICE_ADDR)")
	secretsFile := fs.String("device-secrets", envOr("", "FLEETSIM_DEVICE_SECRETS"), "mqtt or coap: file of \"vehicle-id secret\" lines, the devices' registered secrets (env FLEETSIM_DEVICE_SECRETS)")
	fs.StringVar(&cfg.TeltonikaAddr, "teltonika-addr", envOr("127.0.0.1:5027", "FLEETSIM_TELTONIKA_ADDR"), "Teltonika gateway TCP address (env FLEETSIM_TELTONIKA_ADDR)")
	devicesOut := fs.String("teltonika-devices", "", "write the simulated devices as \"IMEI vehicle-id\" lines to this file (the gateway's --teltonika-devices)")
	ensure := fs.Bool("ensure-streams", false, "create the platform's streams if missing (for a bare NATS server)")
	truth := fs.String("ground-truth", "", "write the incidents' ground truth (JSON) to this file on exit")
	statsEvery := fs.Duration("stats", 10*time.Second, "log statistics this often (0: never)")
	level := fs.String("log-level", envOr("info", "FLEETSIM_LOG_LEVEL"), "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := newLogger(stderr, *level)
	if *secretsFile != "" {
		secrets, err := readSecrets(*secretsFile)
		if err != nil {
			return err
		}
		cfg.DeviceSecrets = secrets
	}
	fleet, err := fleetsim.New(cfg, log)
	if err != nil {
		return err
	}
	if *devicesOut != "" {
		if err := os.WriteFile(*devicesOut, []byte(strings.Join(fleet.Devices(), "\n")+"\n"), 0o600); err != nil {
			return err
		}
	}
	if cfg.Protocol != fleetsim.ProtocolNATS && cfg.Protocol != "" {
		log.Info("reporting as devices", "protocol", cfg.Protocol, "teltonika", cfg.TeltonikaAddr, "device_addr", cfg.DeviceAddr)
		err := fleet.Run(ctx, nil)
		if *truth != "" {
			if werr := fleet.Sim().WriteGroundTruth(*truth); werr != nil {
				return errors.Join(err, werr)
			}
		}
		return err
	}
	if *devices != "" {
		secrets, err := natsauth.LoadDeviceSecrets(*devices)
		if err != nil {
			return fmt.Errorf("device secrets: %w", err)
		}
		log.Info("connecting every vehicle as its device", "nats", *url, "vehicles", len(fleet.Sim().VehicleIDs()))
		err = fleet.RunDevices(ctx, deviceDialer(*url, secrets))
		if *truth != "" {
			if werr := fleet.Sim().WriteGroundTruth(*truth); werr != nil {
				return errors.Join(err, werr)
			}
		}
		return err
	}
	b, err := bus.Open(ctx, bus.Config{URL: *url, CredsFile: *creds, Name: "fleetsim", User: *user, Password: password(*pwFile),
		InboxPrefix: inboxFor(*user)}, log)
	if err != nil {
		return err
	}
	defer b.Close()
	if *ensure {
		if err := b.EnsureStreams(ctx, bus.StreamConfig{MaxMsgSize: wire.MaxMessageBytes}); err != nil {
			return err
		}
	}
	log.Info("connected", "nats", b.ClientURL())
	if *statsEvery > 0 {
		go func() {
			t := time.NewTicker(*statsEvery)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					st := fleet.Stats()
					log.Info("stats", "records", st.Records, "packets", st.Batches, "acked", st.Acked,
						"errors", st.PublishErrors, "retry_queue", st.RetryQueue, "commands", st.Commands)
				}
			}
		}()
	}
	err = fleet.Run(ctx, b.Conn())
	if *truth != "" {
		if werr := fleet.Sim().WriteGroundTruth(*truth); werr != nil {
			return errors.Join(err, werr)
		}
	}
	return err
}

// readSecrets reads "vehicle-id secret" lines ('#' starts a comment).
func readSecrets(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, secret, ok := strings.Cut(line, " ")
		if secret = strings.TrimSpace(secret); !ok || secret == "" {
			return nil, fmt.Errorf("%s line %d: want \"vehicle-id secret\"", path, i+1)
		}
		out[id] = secret
	}
	return out, nil
}

func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := loadtest.DefaultConfig()
	fs := flag.NewFlagSet("fleetsim load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	setUsage(fs, stderr)
	target := fs.String("target", envOr(nats.DefaultURL, "FLEETSIM_NATS_URL", "NATS_URL"), "NATS URL of the system under test (env FLEETSIM_NATS_URL, NATS_URL)")
	creds := fs.String("nats-creds", os.Getenv("NATS_CREDS"), "NATS credentials file (env NATS_CREDS)")
	user, pwFile := natsLoginFlags(fs)
	grpcAddr := fs.String("grpc", envOr("", "FLEETSIM_GRPC_ADDR"), "tracking gRPC address to watch (env FLEETSIM_GRPC_ADDR); empty: publish side only")
	fs.IntVar(&cfg.Vehicles, "vehicles", cfg.Vehicles, "simulated vehicles")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "records per second over the fleet (the first rate in --ceiling mode)")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long to publish")
	fs.Int64Var(&cfg.Seed, "seed", cfg.Seed, "random seed")
	fs.Var(centerFlag{&cfg.Center}, "center", "city centre LAT,LON")
	fs.StringVar(&cfg.Prefix, "prefix", "", `vehicle id prefix, always under the reserved "loadtest-" (default: unique per run)`)
	fs.IntVar(&cfg.BatchRecords, "batch", cfg.BatchRecords, "records per packet")
	fs.IntVar(&cfg.MaxInFlight, "max-in-flight", cfg.MaxInFlight, "unacknowledged JetStream publishes")
	fs.DurationVar(&cfg.Drain, "drain", cfg.Drain, "after publishing, how long to wait for records still on their way")
	fs.BoolVar(&cfg.Realistic, "realistic", false, "keep tracker faults (invalid fixes, duplicates, tunnels)")
	fs.IntVar(&cfg.Zones, "zones", 0, "create N zones tiling the simulated city through the geofence API (deleted after the run) and measure zone-event latency on WatchZoneEvents; needs --grpc")
	ensure := fs.Bool("ensure-streams", false, "create the platform's streams if missing (for a bare NATS server)")
	fs.BoolVar(&cfg.Ceiling, "ceiling", false, "find the ceiling: raise the rate step by step until p99 or loss crosses its limit")
	fs.Float64Var(&cfg.CeilingFactor, "ceiling-factor", cfg.CeilingFactor, "rate multiplier between ceiling steps")
	fs.Float64Var(&cfg.CeilingMax, "ceiling-max", cfg.CeilingMax, "highest rate the ceiling search tries")
	fs.DurationVar(&cfg.StepDuration, "step-duration", cfg.StepDuration, "duration of each ceiling step")
	fs.DurationVar(&cfg.P99Limit, "p99-limit", cfg.P99Limit, "ceiling: highest acceptable p99 latency")
	fs.Float64Var(&cfg.LossLimit, "loss-limit", 0, "ceiling: highest acceptable fraction of missing records")
	fs.StringVar(&cfg.Protocol, "protocol", fleetsim.ProtocolNATS, "how trackers report: nats (through --target), teltonika (Codec 8E over TCP to --teltonika-addr), mqtt (to the NATS server's MQTT listener at --device-addr) or coap (to the CoAP gateway at --device-addr); every protocol but nats registers each vehicle as a device first, in the device registry on --target (a NATS identity that may write it, e.g. admin)")
	fs.StringVar(&cfg.TeltonikaAddr, "teltonika-addr", envOr("127.0.0.1:5027", "FLEETSIM_TELTONIKA_ADDR"), "teltonika: the gateway's TCP address (env FLEETSIM_TELTONIKA_ADDR)")
	fs.StringVar(&cfg.DeviceAddr, "device-addr", envOr("", "FLEETSIM_DEVICE_ADDR"), "mqtt or coap: host:port of the MQTT listener or the CoAP gateway (env FLEETSIM_DEVICE_ADDR)")
	ttDevices := fs.String("teltonika-devices", "", "teltonika: append the vehicles' \"IMEI vehicle-id\" lines to this file, the gateway's --teltonika-devices (re-read when it changes)")
	jsonOut := fs.String("json", "", "write the result as JSON to this file (\"-\": standard output)")
	htmlOut := fs.String("html", "", "write the HTML report to this file")
	progress := fs.String("progress", "auto", "live progress line: auto (on a terminal), always, never")
	level := fs.String("log-level", envOr("warn", "FLEETSIM_LOG_LEVEL"), "log level")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := newLogger(stderr, *level)
	switch *progress {
	case "always":
		cfg.Progress = stderr
	case "auto":
		if isTerminal(stderr) {
			cfg.Progress = stderr
		}
	}
	b, err := bus.Open(ctx, bus.Config{URL: *target, CredsFile: *creds, Name: "fleetsim-load", User: *user, Password: password(*pwFile),
		InboxPrefix: inboxFor(*user)}, log)
	if err != nil {
		return err
	}
	defer b.Close()
	if *ensure {
		if err := b.EnsureStreams(ctx, bus.StreamConfig{MaxMsgSize: wire.MaxMessageBytes}); err != nil {
			return err
		}
	}
	if cfg.Protocol != fleetsim.ProtocolNATS && cfg.Protocol != "" {
		reg, err := newDeviceRegistrar(ctx, b, cfg.Protocol, *ttDevices, log)
		if err != nil {
			return err
		}
		defer reg.revokeAll(context.WithoutCancel(ctx))
		cfg.Register = reg.register
	}
	lt, err := loadtest.New(cfg, b.Conn(), *grpcAddr, log)
	if err != nil {
		return err
	}
	defer lt.Close()
	res, err := lt.Run(ctx)
	if res == nil {
		return err
	}
	if werr := res.WriteSummary(stdout); werr != nil {
		return werr
	}
	if *jsonOut != "" {
		if werr := writeTo(*jsonOut, stdout, res.WriteJSON); werr != nil {
			return werr
		}
	}
	if *htmlOut != "" {
		if werr := writeTo(*htmlOut, stdout, res.WriteHTML); werr != nil {
			return werr
		}
	}
	if errors.Is(err, context.Canceled) {
		return nil // interrupted: the partial result is still reported
	}
	if err != nil {
		return err
	}
	return res.Err() // the verdict: FAIL is a non-zero exit
}

// natsLoginFlags registers the static NATS login (the all-in-one's "loadgen" identity for
// fleetsim load: <data-dir>/credentials/nats/loadgen.password).
func natsLoginFlags(fs *flag.FlagSet) (user, pwFile *string) {
	user = fs.String("nats-user", os.Getenv("FLEETSIM_NATS_USER"), "NATS user, e.g. loadgen (env FLEETSIM_NATS_USER)")
	pwFile = fs.String("nats-password-file", os.Getenv("FLEETSIM_NATS_PASSWORD_FILE"), "file holding the NATS user's password (env FLEETSIM_NATS_PASSWORD_FILE)")
	return user, pwFile
}

func password(file string) string {
	if file == "" {
		return os.Getenv("FLEETSIM_NATS_PASSWORD")
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return "" // the login then fails with the server's own message
	}
	return strings.TrimSpace(string(data))
}

func inboxFor(user string) string {
	if user == "" {
		return ""
	}
	return natsauth.InboxPrefix(user)
}

// deviceDialer connects one simulated vehicle as its device.
func deviceDialer(url string, secrets map[string]string) fleetsim.DeviceDialer {
	return func(ctx context.Context, id string) (*nats.Conn, error) {
		secret, ok := secrets[id]
		if !ok {
			return nil, fmt.Errorf("no secret for %s in the device secrets file (register it, or run fewer vehicles)", id)
		}
		return nats.Connect(url, nats.UserInfo(id, secret), nats.CustomInboxPrefix(natsauth.DeviceInboxPrefix(id)),
			nats.Name(id), nats.MaxReconnects(-1), nats.Timeout(10*time.Second))
	}
}

// deviceRegistrar registers the load test's vehicles as devices of one protocol in the
// platform's device registry (and their IMEIs in the Teltonika gateway's devices file), and
// revokes them after the run so no load-test credential outlives it.
type deviceRegistrar struct {
	devices  *natsauth.Devices
	protocol string
	ttFile   string
	log      *slog.Logger

	mu    sync.Mutex
	added []string
}

func newDeviceRegistrar(ctx context.Context, b *bus.Bus, protocol, ttFile string, log *slog.Logger) (*deviceRegistrar, error) {
	if protocol == fleetsim.ProtocolTeltonika && ttFile == "" {
		return nil, errors.New("--protocol teltonika needs --teltonika-devices: the gateway's devices file, where the vehicles' IMEIs are mapped")
	}
	devices, err := natsauth.OpenDevices(ctx, b, 1, log)
	if err != nil {
		return nil, fmt.Errorf("device registry (log in as an identity that may write it, e.g. admin): %w", err)
	}
	return &deviceRegistrar{devices: devices, protocol: protocol, ttFile: ttFile, log: log}, nil
}

func (r *deviceRegistrar) register(ctx context.Context, vehicle, imei string) (string, error) {
	_, secret, err := r.devices.Add(ctx, natsauth.Device{ID: vehicle, Model: "fleetsim", Protocol: r.protocol}, "fleetsim-load")
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.added = append(r.added, vehicle)
	if r.ttFile != "" {
		f, err := os.OpenFile(r.ttFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			return "", err
		}
		_, werr := fmt.Fprintf(f, "%s %s\n", imei, vehicle)
		if err := errors.Join(werr, f.Close()); err != nil {
			return "", fmt.Errorf("teltonika devices file: %w", err)
		}
	}
	return secret, nil
}

func (r *deviceRegistrar) revokeAll(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range r.added {
		if _, err := r.devices.Revoke(ctx, id, "fleetsim-load"); err != nil {
			r.log.Warn("revoke load-test device", "device", id, "err", err)
		}
	}
}

func writeTo(path string, stdout io.Writer, write func(io.Writer) error) error {
	if path == "-" {
		return write(stdout)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
