// Package bus connects Fleetwire to NATS: an external cluster, or a nats-server embedded
// in the process with JetStream for the all-in-one binary and for tests. It provisions the
// streams, builds every subject (subjects.go) and runs the durable consumers the services
// read from (consumer.go).
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	neturl "net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Embedded is the URL value that asks for an in-process NATS server.
const Embedded = "embedded"

// Config says how to reach NATS.
type Config struct {
	// URL of an external NATS server, or Embedded (also the meaning of "").
	URL string
	// CredsFile is a NATS credentials file for an external server.
	CredsFile string
	// User and Password log in as a static NATS user (pkg/natsauth's identities), on an
	// external server or on the embedded one when it has a ServerConfig.
	User, Password string
	// InboxPrefix replaces "_INBOX" in this connection's reply subjects; a server that
	// confines each identity lets it receive replies only under its own prefix
	// (natsauth.InboxPrefix).
	InboxPrefix string
	// TLS client certificate, key and CA bundle for an external server.
	TLSCert, TLSKey, TLSCA string
	// Name is the connection name shown by the server.
	Name string

	// Embedded server settings.
	// ListenHost and ListenPort are where the embedded server accepts other processes
	// (fleetsim, fleetctl's tools). Port 0 means "4222, or any free port if it is taken";
	// -1 means any free port.
	ListenHost string
	ListenPort int
	// StoreDir is the JetStream directory; empty means a temporary directory removed on Close.
	StoreDir string
	// SyncInterval is how often JetStream flushes its files to disk (default
	// DefaultSyncInterval); SyncAlways flushes every write. Records are acknowledged to
	// trackers once written, before they are flushed: an OS crash or power cut loses what
	// was acknowledged since the last flush. A process crash loses nothing either way.
	SyncInterval time.Duration
	SyncAlways   bool
	// ServerConfig is nats-server configuration text applied to the embedded server before
	// it starts: the accounts, users and auth callout of pkg/natsauth. Empty: no
	// authorization (tests of a single process, --insecure).
	ServerConfig string `secret:"true"`
	// MQTT is the embedded server's MQTT listener (off by default; mqtt.go).
	MQTT MQTTConfig
	// MaxPayload is the embedded server's max_payload: the largest message it accepts
	// (wire.MaxMessageBytes, the format's limit; 0: nats-server's default of 1 MiB).
	MaxPayload int32
}

// DefaultSyncInterval bounds what an OS crash can cost the embedded server: one second
// of acknowledged records, for about one flush per second per stream (nats-server's own
// default is two minutes). "Always" (a flush per write) holds every acknowledged record
// at roughly 3-5 k writes/s on this class of machine (../docs/architecture.md).
const DefaultSyncInterval = time.Second

// Bus is a NATS connection with JetStream, and the embedded server when there is one.
type Bus struct {
	// The connection and its JetStream context stay inside the package: services go
	// through the Bus's methods (handles.go), so provisioning is serialised in one place
	// and what the platform asks of NATS is listed here.
	nc *nats.Conn
	js jetstream.JetStream
	// provMu serialises stream and bucket creation and update: nats-server (v2.15) races
	// between checking a stream's configuration and applying an update when several run
	// at once, as they did when components provisioned concurrently after a restart.
	provMu sync.Mutex

	log      *slog.Logger
	srv      *server.Server
	tmpStore string
	mqttHost string // the embedded server's MQTT listener, when on
	mqttPort int

	metrics *ConsumerMetrics // nil until RegisterMetrics
	events  *EventMetrics    // nil until RegisterMetrics

	lagMu sync.Mutex
	lags  map[string]*atomic.Int64 // by durable (Lag)

	shared *Shared  // nil: every service consumes on its own (ShareTelemetry)
	guards sync.Map // service → BatchGuard (GuardBatches)

	leaseCfg *LeaseConfig // nil: ConsumePartitions takes the partitions it is given (leases.go)
	owned    sync.Map     // service → *ownedSet, while leasing

	deadLetter func(context.Context, DeadLetter) error // OnDeadLetter
}

// Open connects to NATS, starting the embedded server first when cfg asks for it.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Bus, error) {
	b := &Bus{log: log}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectBufSize(64 << 20),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted()) }),
	}
	if cfg.User != "" {
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(cfg.InboxPrefix))
	}
	url := cfg.URL
	if url == "" || url == Embedded {
		if err := b.startEmbedded(cfg); err != nil {
			return nil, err
		}
		url = b.srv.ClientURL()
		opts = append(opts, nats.InProcessServer(b.srv))
	} else {
		if cfg.CredsFile != "" {
			opts = append(opts, nats.UserCredentials(cfg.CredsFile))
		}
		if cfg.TLSCert != "" || cfg.TLSKey != "" {
			opts = append(opts, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
		}
		if cfg.TLSCA != "" {
			opts = append(opts, nats.RootCAs(cfg.TLSCA))
		}
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("connect to nats %s: %w", redactURL(url), err)
	}
	b.nc = nc
	js, err := jetstream.New(nc)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	b.js = js
	return b, nil
}

func (b *Bus) startEmbedded(cfg Config) error {
	dir := cfg.StoreDir
	if dir == "" {
		removeStaleTemp(b.log)
		tmp, err := os.MkdirTemp("", tempPrefix)
		if err != nil {
			return fmt.Errorf("jetstream store dir: %w", err)
		}
		// The owner's pid lets a later run remove the directory of one that was killed
		// before it could (removeStaleTemp).
		if err := os.WriteFile(filepath.Join(tmp, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
			_ = os.RemoveAll(tmp)
			return fmt.Errorf("jetstream store dir: %w", err)
		}
		dir, b.tmpStore = tmp, tmp
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("jetstream store dir: %w", err)
	}
	sync := cfg.SyncInterval
	if sync <= 0 {
		sync = DefaultSyncInterval
	}
	host := cfg.ListenHost
	if host == "" {
		host = "127.0.0.1"
	}
	port := cfg.ListenPort
	switch {
	case port == 0:
		port = nats.DefaultPort
		if l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port))); err != nil {
			port = server.RANDOM_PORT // 4222 is taken (often by a system NATS): pick a free port
			b.log.Warn("the default NATS port is taken; the embedded server listens on a free one instead", "wanted", net.JoinHostPort(host, strconv.Itoa(nats.DefaultPort)))
		} else {
			l.Close()
		}
	case port > 0:
		// A port the operator chose never moves: fail at once with its address, rather
		// than after the server's own start-up timeout.
		addr := net.JoinHostPort(host, strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("embedded nats: cannot listen on %s (in use, or not allowed); choose another port, or 0 for 4222 or a free one: %w", addr, err)
		}
		l.Close()
	}
	opts := &server.Options{
		ServerName:   "fleetwire-embedded",
		Host:         host,
		Port:         port,
		JetStream:    true,
		StoreDir:     dir,
		NoSigs:       true,
		MaxPayload:   cfg.MaxPayload,
		SyncInterval: sync,
		SyncAlways:   cfg.SyncAlways,
	}
	if err := applyMQTT(cfg, opts); err != nil {
		if b.tmpStore != "" {
			_ = os.RemoveAll(b.tmpStore)
		}
		return err
	}
	b.mqttHost, b.mqttPort = opts.MQTT.Host, opts.MQTT.Port
	if cfg.ServerConfig != "" {
		if err := opts.ProcessConfigString(cfg.ServerConfig); err != nil {
			return fmt.Errorf("embedded nats: configuration: %w", err)
		}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("embedded nats: %w", err)
	}
	srv.SetLoggerV2(natsLogger{log: b.log.With("from", "nats-server"), logins: &loginLimiter{}}, b.log.Enabled(context.Background(), slog.LevelDebug), false, false)
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return errors.New("embedded nats: not ready after 10s")
	}
	b.srv = srv
	b.log.Info("embedded nats started", "url", srv.ClientURL(), "jetstream_dir", dir)
	return nil
}

// redactURL hides the userinfo of each server in a NATS URL list: errors end up in logs.
func redactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		if u, err := neturl.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = nil
			parts[i] = strings.Replace(u.String(), "://", "://***@", 1)
		} else if err != nil && strings.Contains(p, "@") {
			parts[i] = "(unparseable url)"
		}
	}
	return strings.Join(parts, ",")
}

const (
	tempPrefix = "fleetwire-js-"
	ownerFile  = "fleetwire.pid"
)

// removeStaleTemp removes temporary JetStream directories whose owning process is gone
// (killed before its Close), so ephemeral runs leave nothing behind for long.
func removeStaleTemp(log *slog.Logger) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	for _, d := range dirs {
		raw, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue // not ours to judge (no owner recorded)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		if err := os.RemoveAll(d); err == nil {
			log.Info("removed a temporary JetStream directory left by a killed run", "dir", d, "pid", pid)
		}
	}
}

// processAlive reports whether pid names a running process (signal 0 probes without
// sending anything).
func processAlive(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	err = p.Signal(syscall.Signal(0))
	return err == nil || errors.Is(err, syscall.EPERM)
}

// ClientURL is the URL other processes use to reach this bus's server.
func (b *Bus) ClientURL() string {
	if b.srv != nil {
		return b.srv.ClientURL()
	}
	if b.nc != nil {
		return b.nc.ConnectedUrlRedacted()
	}
	return ""
}

// Embedded reports whether the bus runs its own server.
func (b *Bus) Embedded() bool { return b.srv != nil }

// Close drains the connection and stops the embedded server, removing a temporary store.
func (b *Bus) Close() {
	if b.nc != nil {
		_ = b.nc.Drain()
		deadline := time.Now().Add(5 * time.Second)
		for !b.nc.IsClosed() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		b.nc.Close()
	}
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
	if b.tmpStore != "" {
		_ = os.RemoveAll(b.tmpStore)
	}
}
