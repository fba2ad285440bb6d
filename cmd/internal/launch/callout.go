package launch

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/fleetwire/fleetwire/pkg/metrics"
	"github.com/fleetwire/fleetwire/pkg/natsauth"
)

// The stand-alone auth callout responder (cmd/callout): what lets devices log in to an
// external nats-server configured from deployments/nats/nats-server.conf. The all-in-one
// answers logins in process; a deployment of separate services runs this instead.
//
// It is a process of its own rather than part of cmd/devices because its issuer seed
// signs logins into the platform account: whoever holds it can mint any permission. It
// stays with the smallest process there is (no gRPC, no Redis, no write access to the
// registry), not beside an API that is reachable from consoles.

// CalloutOptions configure cmd/callout.
type CalloutOptions struct {
	NATSURL                      string
	TLSCert, TLSKey, TLSCA       string
	CalloutPassword              string `secret:"true"`
	KickerPassword               string `secret:"true"`
	IssuerSeed                   string `secret:"true"`
	XKeySeed                     string `secret:"true"`
	CalloutPasswordFile          string
	KickerPasswordFile           string
	IssuerSeedFile, XKeySeedFile string
	Replicas                     int
	MetricsAddr                  string
}

// calloutFlags parses args with defaults from lookup (the environment).
func calloutFlags(args []string, lookup func(string) (string, bool), stderr io.Writer) (CalloutOptions, string, error) {
	fs := flag.NewFlagSet("callout", flag.ContinueOnError)
	fs.SetOutput(stderr)
	e := &envReader{lookup: lookup}
	var o CalloutOptions
	fs.StringVar(&o.NATSURL, "nats-url", e.str("FLEETWIRE_NATS_URL", e.str("NATS_URL", "nats://127.0.0.1:4222")), "NATS server URL (env FLEETWIRE_NATS_URL, NATS_URL)")
	fs.StringVar(&o.TLSCert, "nats-tls-cert", e.str("FLEETWIRE_NATS_TLS_CERT", ""), "client certificate for NATS TLS (env FLEETWIRE_NATS_TLS_CERT)")
	fs.StringVar(&o.TLSKey, "nats-tls-key", e.str("FLEETWIRE_NATS_TLS_KEY", ""), "client key for NATS TLS (env FLEETWIRE_NATS_TLS_KEY)")
	fs.StringVar(&o.TLSCA, "nats-tls-ca", e.str("FLEETWIRE_NATS_TLS_CA", ""), "CA bundle for NATS TLS (env FLEETWIRE_NATS_TLS_CA)")
	fs.StringVar(&o.CalloutPasswordFile, "callout-password-file", e.str("FLEETWIRE_NATS_CALLOUT_PASSWORD_FILE", ""), "file holding the callout identity's NATS password (or env FLEETWIRE_NATS_CALLOUT_PASSWORD) (env FLEETWIRE_NATS_CALLOUT_PASSWORD_FILE)")
	fs.StringVar(&o.KickerPasswordFile, "kicker-password-file", e.str("FLEETWIRE_NATS_KICKER_PASSWORD_FILE", ""), "file holding the kicker identity's NATS password (or env FLEETWIRE_NATS_KICKER_PASSWORD) (env FLEETWIRE_NATS_KICKER_PASSWORD_FILE)")
	fs.StringVar(&o.IssuerSeedFile, "issuer-seed-file", e.str("FLEETWIRE_NATS_CALLOUT_ISSUER_SEED_FILE", ""), "file holding the issuer's account nkey seed, SA... (or env FLEETWIRE_NATS_CALLOUT_ISSUER_SEED) (env FLEETWIRE_NATS_CALLOUT_ISSUER_SEED_FILE)")
	fs.StringVar(&o.XKeySeedFile, "xkey-seed-file", e.str("FLEETWIRE_NATS_CALLOUT_XKEY_SEED_FILE", ""), "file holding the curve nkey seed, SX..., that decrypts login requests (or env FLEETWIRE_NATS_CALLOUT_XKEY_SEED); none: the server must not set auth_callout xkey (env FLEETWIRE_NATS_CALLOUT_XKEY_SEED_FILE)")
	fs.IntVar(&o.Replicas, "stream-replicas", e.int("FLEETWIRE_STREAM_REPLICAS", 1), "replicas of the device registry bucket, should this process create it (env FLEETWIRE_STREAM_REPLICAS)")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", e.str("FLEETWIRE_METRICS_ADDR", "127.0.0.1:9471"), "Prometheus /metrics address; empty: none (env FLEETWIRE_METRICS_ADDR)")
	level := fs.String("log-level", e.str("FLEETWIRE_LOG_LEVEL", "info"), "debug, info, warn or error (env FLEETWIRE_LOG_LEVEL)")
	if err := fs.Parse(args); err != nil {
		return o, "", err
	}
	if err := e.err(); err != nil {
		return o, "", err
	}
	secret := func(dst *string, file, envKey, what string) error {
		if file != "" {
			data, err := os.ReadFile(file)
			if err != nil {
				return fmt.Errorf("%w: %s: %w", ErrConfig, what, err)
			}
			*dst = strings.TrimSpace(string(data))
			return nil
		}
		*dst = strings.TrimSpace(e.str(envKey, ""))
		return nil
	}
	err := errors.Join(
		secret(&o.CalloutPassword, o.CalloutPasswordFile, natsauth.PasswordEnv(natsauth.UserCallout), "callout password"),
		secret(&o.KickerPassword, o.KickerPasswordFile, natsauth.PasswordEnv(natsauth.UserKicker), "kicker password"),
		secret(&o.IssuerSeed, o.IssuerSeedFile, natsauth.IssuerEnv+"_SEED", "issuer seed"),
		secret(&o.XKeySeed, o.XKeySeedFile, natsauth.XKeyEnv+"_SEED", "xkey seed"),
	)
	if err != nil {
		return o, "", err
	}
	var missing []string
	if o.CalloutPassword == "" {
		missing = append(missing, "the callout password (--callout-password-file or "+natsauth.PasswordEnv(natsauth.UserCallout)+")")
	}
	if o.KickerPassword == "" {
		missing = append(missing, "the kicker password (--kicker-password-file or "+natsauth.PasswordEnv(natsauth.UserKicker)+")")
	}
	if o.IssuerSeed == "" {
		missing = append(missing, "the issuer seed (--issuer-seed-file or "+natsauth.IssuerEnv+"_SEED)")
	}
	if len(missing) > 0 {
		return o, "", fmt.Errorf("%w: missing %s", ErrConfig, strings.Join(missing, ", "))
	}
	return o, *level, nil
}

// CalloutMain is cmd/callout: it answers device logins for an external nats-server until
// ctx ends. ready, when not nil, is called once logins are answered.
func CalloutMain(ctx context.Context, args []string, lookup func(string) (string, bool), stderr io.Writer, ready func(*natsauth.Responder)) error {
	o, level, err := calloutFlags(args, lookup, stderr)
	if err != nil {
		return err
	}
	if _, err := ParseLevel(level); err != nil {
		return err
	}
	log := NewLogger(stderr, level).With("service", "callout")
	var opts []nats.Option
	if o.TLSCert != "" || o.TLSKey != "" {
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reg := prometheus.NewRegistry()
	if err := metrics.Register(reg, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return err
	}
	var admin *adminServer
	adminErr := make(chan error, 1)
	if o.MetricsAddr != "" {
		if admin, err = newAdminServer(o.MetricsAddr, false, reg); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		go func() { adminErr <- admin.Serve(ctx) }()
	} else {
		adminErr <- nil
	}
	log.Info("starting", "nats", maskURL(o.NATSURL), "xkey", o.XKeySeed != "", "metrics", o.MetricsAddr)
	err = natsauth.ServeCallout(ctx, natsauth.CalloutConfig{
		URL: o.NATSURL, CalloutPassword: o.CalloutPassword, KickerPassword: o.KickerPassword,
		IssuerSeed: []byte(o.IssuerSeed), XKeySeed: []byte(o.XKeySeed), Replicas: o.Replicas,
		Options: opts, Log: log,
	}, func(r *natsauth.Responder) {
		if err := metrics.Register(reg, r.Collectors()...); err != nil {
			log.Error("responder metrics", "err", err)
		}
		log.Info("answering device logins")
		if ready != nil {
			ready(r)
		}
	})
	cancel()
	if aerr := <-adminErr; err == nil {
		err = aerr
	}
	return err
}
