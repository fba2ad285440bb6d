package launch

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/services/dispatch"
)

// Service names accepted in Options.Services.
const (
	Tracking    = "tracking"
	Geofence    = "geofence"
	Maintenance = "maintenance"
	Dispatch    = "dispatch" // theft detection, the alert feed and commands to vehicles
)

// AllServices is every service, in start order (Devices is in devices.go).
var AllServices = []string{Tracking, Geofence, Maintenance, Dispatch, Devices}

// Gateways are the protocol edges a process may host beside the services.
var Gateways = []string{Teltonika, CoAP}

// ErrConfig is wrapped by every configuration error: a malformed environment value, an
// unknown service. Such errors stop the process at start rather than fall back to a default
// the operator did not choose.
var ErrConfig = errors.New("configuration")

// Options configure a process. Flags fills them from flags and environment variables.
//
// Start logs the effective options once (LogValue). A field that holds a secret is named
// with Password, Token, Secret or NKey, or tagged `secret:"true"`: its value is logged as
// "***". Userinfo in any URL is masked the same way. File paths (credentials, keys) are
// logged as paths; their content never is.
type Options struct {
	NATS        bus.Config
	Streams     bus.StreamConfig
	RedisURL    string // empty or "memory": in-memory stores
	RedisPrefix string
	GRPCAddr    string
	MetricsAddr string // empty: no metrics endpoint
	PprofAddr   string // empty: no profiling endpoint (it is never on the metrics port)
	// ConsoleAddr is where the web console (edge/console) listens; empty: no console.
	// Plain HTTP on a loopback address, HTTPS with the gRPC server's certificate elsewhere.
	ConsoleAddr string
	// ConsoleTiles is the console map's tile URL template, or "none" for a plain
	// background; empty: OpenStreetMap.
	ConsoleTiles string
	Security     Security
	Partitions   string        // which telemetry partitions this instance handles ("" = all, "auto" = by lease)
	LeaseTTL     time.Duration // --partitions auto: how long a dead instance's partitions stall
	Services     []string
	Sim          int   // simulated vehicles run in-process (0 = none)
	SimSeed      int64 // seed of the simulated fleet
	Grace        time.Duration
	// DataDir is the all-in-one's home for everything it keeps between runs: the JetStream
	// store (DataDir/jetstream) and its generated development credentials
	// (DataDir/credentials). Empty: DefaultDataDir().
	DataDir string
	// Ephemeral keeps the embedded JetStream store in a temporary directory removed at
	// exit instead of DataDir (tests, demos).
	Ephemeral bool
	// SeparateConsumers gives every service of the process its own durable consumers,
	// as separate processes have, instead of one shared delivery per partition
	// (bus.ShareTelemetry) when several services run together.
	SeparateConsumers bool
	// Schedules is a JSON file of allowed driving hours per vehicle or group, for the
	// movement-outside-hours theft rule (format in docs/dispatch.md); empty: rule off.
	Schedules string
	// FuelMinConfidence: fuel drains below this confidence are dispatched as unconfirmed
	// warnings instead of critical fuel-theft alarms (the fleet's threshold, 0..1; the
	// flag's default is dispatch.FuelMinConfidence, a zero Options alerts every drain).
	FuelMinConfidence float64
	// AlertRules is a JSON file of per-kind alert rules and webhook sinks (format in
	// docs/dispatch.md); empty: every kind follows its source, no webhooks.
	AlertRules string
	// AlertRetention: resolved alerts are removed this long after they were resolved
	// (the flag's default is dispatch.DefaultAlertRetention; 0 keeps them for ever).
	AlertRetention time.Duration
	// TrackingRules is a JSON file of per-device-model GPS filter profiles and per-group
	// trip thresholds (format in docs/tracking.md); empty: the defaults for everyone.
	TrackingRules string
	// OfflineAfter: a vehicle the stream holds nothing from for this long is offline
	// (tracking.Config.OfflineAfter; zero keeps the default, 10 min).
	OfflineAfter time.Duration
	// FallbackPorts lets the all-in-one move a listener to a free port when its built-in
	// default is taken, so it starts on any machine, and say so (Platform.Moved, the log).
	// An address in Pinned never moves: the process fails with a message naming it. The
	// per-service binaries never fall back (an orchestrator expects the port it configured).
	FallbackPorts bool
	// Pinned names the listen-address flags the operator chose ("grpc-addr",
	// "metrics-addr", "pprof-addr", "teltonika-tcp-addr", "teltonika-udp-addr"), by flag
	// or by environment: Flags records the environment, PinSetFlags the command line.
	Pinned map[string]bool
	// EndpointsFile, when set, receives the bound addresses as JSON once everything
	// listens (fleetctl reads the all-in-one's to find a moved port); removed at stop.
	EndpointsFile string
	// Teltonika configures the Teltonika gateway (service Teltonika).
	Teltonika TeltonikaOptions
	// Devices configures the provisioning service (service Devices).
	Devices DevicesOptions
	// NATSPasswordFile holds the password of NATS.User (read at start).
	NATSPasswordFile string
	// CoAP configures the CoAP gateway (service CoAP).
	CoAP CoAPOptions
	// MsgIDKeyFile holds the gateways' message id key (hex, wire.GatewayMsgID); shared by
	// every gateway instance of a deployment. Empty: MsgIDKey, else the all-in-one's
	// credentials directory, else a random key per process.
	MsgIDKeyFile string
	MsgIDKey     string `secret:"true"`

	// envErr collects malformed environment values seen by Flags; Validate reports them.
	envErr error
}

// Flags registers the options on fs. Each flag's default comes from its environment
// variable when set, then from def. A malformed environment value is remembered and
// reported by Validate (and so by Start): the process stops instead of silently using def.
func (o *Options) Flags(fs *flag.FlagSet, def Options) {
	var e envReader
	fs.StringVar(&o.NATS.URL, "nats-url", e.str("FLEETWIRE_NATS_URL", e.str("NATS_URL", def.NATS.URL)), `NATS server URL, or "embedded" for an in-process server (env FLEETWIRE_NATS_URL, NATS_URL)`)
	fs.StringVar(&o.NATS.CredsFile, "nats-creds", e.str("FLEETWIRE_NATS_CREDS", ""), "NATS credentials file (env FLEETWIRE_NATS_CREDS)")
	fs.StringVar(&o.NATS.User, "nats-user", e.str("FLEETWIRE_NATS_USER", ""), "NATS user this process logs in as (its identity in deployments/nats/nats-server.conf: tracking, geofence, ...) (env FLEETWIRE_NATS_USER)")
	o.NATS.Password = e.str("FLEETWIRE_NATS_PASSWORD", "") // environment only: a flag would show in ps
	fs.StringVar(&o.MsgIDKeyFile, "msgid-key-file", e.str("FLEETWIRE_MSGID_KEY_FILE", ""), "gateways: file holding the hex key of stored messages' ids, shared by a deployment's gateway instances (or env FLEETWIRE_MSGID_KEY) (env FLEETWIRE_MSGID_KEY_FILE)")
	o.MsgIDKey = e.str("FLEETWIRE_MSGID_KEY", "")
	fs.StringVar(&o.NATSPasswordFile, "nats-password-file", e.str("FLEETWIRE_NATS_PASSWORD_FILE", ""), "file holding the NATS user's password (or env FLEETWIRE_NATS_PASSWORD) (env FLEETWIRE_NATS_PASSWORD_FILE)")
	fs.StringVar(&o.NATS.TLSCert, "nats-tls-cert", e.str("FLEETWIRE_NATS_TLS_CERT", ""), "client certificate for NATS TLS (env FLEETWIRE_NATS_TLS_CERT)")
	fs.StringVar(&o.NATS.TLSKey, "nats-tls-key", e.str("FLEETWIRE_NATS_TLS_KEY", ""), "client key for NATS TLS (env FLEETWIRE_NATS_TLS_KEY)")
	fs.StringVar(&o.NATS.TLSCA, "nats-tls-ca", e.str("FLEETWIRE_NATS_TLS_CA", ""), "CA bundle for NATS TLS (env FLEETWIRE_NATS_TLS_CA)")
	fs.StringVar(&o.NATS.ListenHost, "nats-listen-host", e.str("FLEETWIRE_NATS_LISTEN_HOST", "127.0.0.1"), "embedded NATS: interface to listen on (env FLEETWIRE_NATS_LISTEN_HOST)")
	fs.IntVar(&o.NATS.ListenPort, "nats-listen-port", e.int("FLEETWIRE_NATS_LISTEN_PORT", 0), "embedded NATS: port; 0 = 4222 or a free port if taken (env FLEETWIRE_NATS_LISTEN_PORT)")
	fs.StringVar(&o.DataDir, "data-dir", e.str("FLEETWIRE_DATA_DIR", def.DataDir), "embedded NATS: the data directory; JetStream is kept in <data-dir>/jetstream and survives restarts (env FLEETWIRE_DATA_DIR)")
	fs.BoolVar(&o.SeparateConsumers, "separate-consumers", e.bool("FLEETWIRE_SEPARATE_CONSUMERS", false), "services in one process read the telemetry through their own durable consumers instead of one shared delivery per partition (env FLEETWIRE_SEPARATE_CONSUMERS)")
	fs.BoolVar(&o.Ephemeral, "ephemeral", e.bool("FLEETWIRE_EPHEMERAL", false), "embedded NATS: keep JetStream in a temporary directory removed at exit; nothing survives a restart (env FLEETWIRE_EPHEMERAL)")
	fs.StringVar(&o.NATS.StoreDir, "store-dir", e.str("FLEETWIRE_STORE_DIR", ""), "embedded NATS: JetStream directory, overriding <data-dir>/jetstream (env FLEETWIRE_STORE_DIR)")
	fs.Var(syncFlag{&o.NATS}, "js-sync-interval", `embedded NATS: how often JetStream flushes its files to disk, or "always" for every write; an OS crash or power cut loses at most this much acknowledged telemetry (default 1s; env FLEETWIRE_JS_SYNC_INTERVAL)`)
	if v, ok := e.get("FLEETWIRE_JS_SYNC_INTERVAL"); ok {
		if err := (syncFlag{&o.NATS}).Set(strings.TrimSpace(v)); strings.TrimSpace(v) != "" && err != nil {
			e.errs = append(e.errs, fmt.Errorf("%w: FLEETWIRE_JS_SYNC_INTERVAL: %v", ErrConfig, err))
		}
	}
	fs.DurationVar(&o.Streams.TelemetryMaxAge, "telemetry-retention", e.duration("FLEETWIRE_TELEMETRY_RETENTION", 7*24*time.Hour), "how long raw records stay in the telemetry stream (env FLEETWIRE_TELEMETRY_RETENTION)")
	fs.IntVar(&o.Streams.Replicas, "stream-replicas", e.int("FLEETWIRE_STREAM_REPLICAS", 1), "JetStream replicas for the streams (3 in a cluster) (env FLEETWIRE_STREAM_REPLICAS)")
	fs.StringVar(&o.RedisURL, "redis-url", e.str("REDIS_URL", def.RedisURL), `Redis URL for shared state, or "memory" for in-process stores (env REDIS_URL)`)
	fs.StringVar(&o.RedisPrefix, "redis-prefix", e.str("FLEETWIRE_REDIS_PREFIX", "fw:"), "prefix of every Redis key (env FLEETWIRE_REDIS_PREFIX)")
	fs.StringVar(&o.GRPCAddr, "grpc-addr", e.str("FLEETWIRE_GRPC_ADDR", def.GRPCAddr), "gRPC listen address (env FLEETWIRE_GRPC_ADDR)")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", e.str("FLEETWIRE_METRICS_ADDR", def.MetricsAddr), "Prometheus /metrics listen address; empty disables (env FLEETWIRE_METRICS_ADDR)")
	fs.StringVar(&o.ConsoleAddr, "console-addr", e.str("FLEETWIRE_CONSOLE_ADDR", def.ConsoleAddr), "web console listen address (plain HTTP on loopback, HTTPS with the gRPC certificate elsewhere); empty disables (env FLEETWIRE_CONSOLE_ADDR)")
	fs.StringVar(&o.ConsoleTiles, "console-tiles", e.str("FLEETWIRE_CONSOLE_TILES", ""), `web console map tiles: a URL template with {z}/{x}/{y}, or "none" for a plain background; empty = OpenStreetMap (env FLEETWIRE_CONSOLE_TILES)`)
	fs.StringVar(&o.Partitions, "partitions", e.str("FLEETWIRE_PARTITIONS", ""), `telemetry partitions this instance handles: "auto" (shared with the other instances by lease, taken over when one dies; needs Redis), "0-7", "i/k" (instance i of k), "ordinal/k" (i from the host name's trailing number, for StatefulSets); empty = all (env FLEETWIRE_PARTITIONS)`)
	fs.DurationVar(&o.LeaseTTL, "lease-ttl", e.duration("FLEETWIRE_LEASE_TTL", 3*time.Second), "with --partitions auto: a partition lease not renewed for this long is taken by another instance (env FLEETWIRE_LEASE_TTL)")
	fs.StringVar(&o.Schedules, "schedules", e.str("FLEETWIRE_SCHEDULES", ""), "JSON file of allowed driving hours per vehicle or group (docs/dispatch.md); empty disables the outside-hours rule (env FLEETWIRE_SCHEDULES)")
	fs.Float64Var(&o.FuelMinConfidence, "fuel-min-confidence", e.float("FLEETWIRE_FUEL_MIN_CONFIDENCE", dispatch.FuelMinConfidence), "fuel drains below this confidence (0..1) are alerted as unconfirmed warnings, not critical fuel theft (env FLEETWIRE_FUEL_MIN_CONFIDENCE)")
	fs.StringVar(&o.AlertRules, "alert-rules", e.str("FLEETWIRE_ALERT_RULES", ""), "JSON file of per-kind alert rules (raise always/never) and webhook sinks (docs/dispatch.md) (env FLEETWIRE_ALERT_RULES)")
	fs.DurationVar(&o.AlertRetention, "alert-retention", e.duration("FLEETWIRE_ALERT_RETENTION", dispatch.DefaultAlertRetention), "how long resolved alerts are kept; 0 keeps them for ever (env FLEETWIRE_ALERT_RETENTION)")
	fs.StringVar(&o.TrackingRules, "tracking-rules", e.str("FLEETWIRE_TRACKING_RULES", ""), "JSON file of per-device-model GPS filter profiles and per-group trip thresholds (docs/tracking.md); empty uses the defaults (env FLEETWIRE_TRACKING_RULES)")
	fs.DurationVar(&o.OfflineAfter, "offline-after", e.duration("FLEETWIRE_OFFLINE_AFTER", 0), "a vehicle nothing was received from for this long is offline; 0 = the default, 10m (docs/tracking.md) (env FLEETWIRE_OFFLINE_AFTER)")
	fs.DurationVar(&o.Grace, "grace", e.duration("FLEETWIRE_GRACE", 10*time.Second), "graceful shutdown limit (env FLEETWIRE_GRACE)")
	o.securityFlags(fs, &e)
	o.devicesFlags(fs, &e)
	o.envErr = e.err()
	o.Pinned = map[string]bool{}
	for flagName, env := range addrEnv {
		if _, ok := e.get(env); ok {
			o.Pinned[flagName] = true
		}
	}
}

// addrEnv maps each listen-address flag to its environment variable.
var addrEnv = map[string]string{
	"grpc-addr": "FLEETWIRE_GRPC_ADDR", "metrics-addr": "FLEETWIRE_METRICS_ADDR", "pprof-addr": "FLEETWIRE_PPROF_ADDR", "console-addr": "FLEETWIRE_CONSOLE_ADDR",
	"teltonika-tcp-addr": "FLEETWIRE_TELTONIKA_TCP_ADDR", "teltonika-udp-addr": "FLEETWIRE_TELTONIKA_UDP_ADDR",
}

// PinSetFlags pins the listen addresses given on the command line (call it after
// fs.Parse): an address the operator typed never moves to another port.
func (o *Options) PinSetFlags(fs *flag.FlagSet) {
	if o.Pinned == nil {
		o.Pinned = map[string]bool{}
	}
	fs.Visit(func(f *flag.Flag) {
		if _, ok := addrEnv[f.Name]; ok {
			o.Pinned[f.Name] = true
		}
	})
}

// fallback reports whether the listener of flagName may move to a free port.
func (o Options) fallback(flagName string) bool { return o.FallbackPorts && !o.Pinned[flagName] }

// Validate reports configuration errors, each wrapping ErrConfig: malformed environment
// values seen by Flags and names that are not services.
func (o Options) Validate() error {
	errs := []error{o.envErr}
	for _, name := range o.Services {
		if !knownService(name) {
			errs = append(errs, fmt.Errorf("%w: unknown service %q (want one of %s)", ErrConfig, name, strings.Join(AllServices, ", ")))
		}
	}
	return errors.Join(errs...)
}

func knownService(name string) bool {
	for _, s := range append(AllServices[:len(AllServices):len(AllServices)], Gateways...) {
		if s == name {
			return true
		}
	}
	return false
}

// syncFlag reads the JetStream sync policy: a duration, or "always".
type syncFlag struct{ c *bus.Config }

func (f syncFlag) String() string {
	if f.c == nil {
		return ""
	}
	if f.c.SyncAlways {
		return "always"
	}
	if f.c.SyncInterval == 0 {
		return bus.DefaultSyncInterval.String()
	}
	return f.c.SyncInterval.String()
}

func (f syncFlag) Set(v string) error {
	if v == "always" {
		f.c.SyncAlways, f.c.SyncInterval = true, 0
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return fmt.Errorf("sync interval %q: want a positive duration or \"always\"", v)
	}
	f.c.SyncAlways, f.c.SyncInterval = false, d
	return nil
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

// envReader reads flag defaults from the environment and remembers every value it could
// not parse, so one start reports all of them at once.
type envReader struct {
	lookup func(string) (string, bool) // nil: os.LookupEnv
	errs   []error
}

func (e *envReader) get(key string) (string, bool) {
	if e.lookup != nil {
		return e.lookup(key)
	}
	return os.LookupEnv(key)
}

// str returns the variable when set (even empty: "FLEETWIRE_METRICS_ADDR=" disables the
// endpoint), else def.
func (e *envReader) str(key, def string) string {
	if v, ok := e.get(key); ok {
		return v
	}
	return def
}

// int returns the variable parsed as an integer; unset or empty means def.
func (e *envReader) int(key string, def int) int {
	v, ok := e.get(key)
	if !ok || strings.TrimSpace(v) == "" {
		return def
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("%w: %s=%q is not an integer", ErrConfig, key, v))
		return def
	}
	return n
}

// float returns the variable parsed as a number; unset or empty means def.
func (e *envReader) float(key string, def float64) float64 {
	v, ok := e.get(key)
	if !ok || strings.TrimSpace(v) == "" {
		return def
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("%w: %s=%q is not a number", ErrConfig, key, v))
		return def
	}
	return f
}

// duration returns the variable parsed as a Go duration ("90s", "7h"); unset or empty
// means def.
func (e *envReader) duration(key string, def time.Duration) time.Duration {
	v, ok := e.get(key)
	if !ok || strings.TrimSpace(v) == "" {
		return def
	}
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("%w: %s=%q is not a duration such as 30s or 7h", ErrConfig, key, v))
		return def
	}
	return d
}

// bool returns the variable parsed as a boolean ("1", "true", "0", "false"); unset or
// empty means def.
func (e *envReader) bool(key string, def bool) bool {
	v, ok := e.get(key)
	if !ok || strings.TrimSpace(v) == "" {
		return def
	}
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("%w: %s=%q is not a boolean", ErrConfig, key, v))
		return def
	}
	return b
}

func (e *envReader) err() error { return errors.Join(e.errs...) }

// env reads one string variable for callers outside Flags (the log level).
func env(key, def string) string {
	var e envReader
	return e.str(key, def)
}

// LogValue renders the effective options with secrets masked (see Options).
func (o Options) LogValue() slog.Value { return maskedValue(reflect.ValueOf(o), false) }

const masked = "***"

var secretName = []string{"password", "passwd", "token", "secret", "nkey"}

func isSecretField(f reflect.StructField) bool {
	if f.Tag.Get("secret") == "true" {
		return true
	}
	name := strings.ToLower(f.Name)
	for _, s := range secretName {
		if strings.Contains(name, s) {
			return true
		}
	}
	return false
}

// maskedValue walks v (structs, slices, maps and scalars) into an slog value, replacing
// secrets. Unexported fields are left out.
func maskedValue(v reflect.Value, secret bool) slog.Value {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return slog.AnyValue(nil)
		}
		return maskedValue(v.Elem(), secret)
	case reflect.Struct:
		var attrs []slog.Attr
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			attrs = append(attrs, slog.Attr{Key: f.Name, Value: maskedValue(v.Field(i), secret || isSecretField(f))})
		}
		return slog.GroupValue(attrs...)
	case reflect.String:
		s := v.String()
		if secret && s != "" {
			return slog.StringValue(masked)
		}
		return slog.StringValue(maskURL(s))
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 { // raw bytes: keys, certificates
			if secret && v.Len() > 0 {
				return slog.StringValue(masked)
			}
			return slog.StringValue(fmt.Sprintf("%d bytes", v.Len()))
		}
		out := make([]string, 0, v.Len())
		for i := 0; i < v.Len(); i++ {
			out = append(out, maskedValue(v.Index(i), secret).String())
		}
		return slog.StringValue("[" + strings.Join(out, " ") + "]")
	case reflect.Map:
		if secret && v.Len() > 0 {
			return slog.StringValue(masked)
		}
		return slog.StringValue(fmt.Sprintf("%d entries", v.Len()))
	case reflect.Func, reflect.Chan:
		return slog.StringValue(v.Type().String())
	default:
		if v.Kind() == reflect.Int64 && v.Type() == reflect.TypeOf(time.Duration(0)) {
			return slog.StringValue(time.Duration(v.Int()).String())
		}
		if secret && !v.IsZero() {
			return slog.StringValue(masked)
		}
		return slog.AnyValue(v.Interface())
	}
}

// maskURL hides the userinfo of a URL ("nats://user:pass@host" → "nats://***@host"); other
// strings are returned as they are.
func maskURL(s string) string {
	if !strings.Contains(s, "://") || !strings.Contains(s, "@") {
		return s
	}
	var out []string
	// A NATS URL may list several servers separated by commas.
	for _, part := range strings.Split(s, ",") {
		u, err := url.Parse(strings.TrimSpace(part))
		if err != nil {
			// Unparseable but shaped like a URL with userinfo: hide everything before '@'.
			if i := strings.LastIndex(part, "@"); i >= 0 {
				if j := strings.Index(part, "://"); j >= 0 && j < i {
					part = part[:j+3] + masked + part[i:]
				}
			}
			out = append(out, part)
			continue
		}
		if u.User != nil {
			u.User = nil
			part = u.Scheme + "://" + masked + "@" + strings.TrimPrefix(u.String(), u.Scheme+"://")
		}
		out = append(out, part)
	}
	return strings.Join(out, ",")
}
