// Command fleetwire runs the whole platform in one process: an embedded NATS server with
// JetStream, the tracking (with alerts and commands), geofence and maintenance services on
// in-memory stores, and optionally a simulated fleet. With no flags it starts on any
// machine and prints where to connect.
//
//	go run ./cmd/fleetwire --sim 500
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"syscall"

	"github.com/fleetwire/fleetwire/cmd/internal/launch"
	"github.com/fleetwire/fleetwire/pkg/bus"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "credentials" {
		os.Exit(launch.CredentialsMain(os.Args[2:], os.Stdout, os.Stderr))
	}
	fs := flag.NewFlagSet("fleetwire", flag.ExitOnError)
	var o launch.Options
	o.Flags(fs, launch.Options{
		NATS:        bus.Config{URL: bus.Embedded},
		RedisURL:    "memory",
		GRPCAddr:    "127.0.0.1:50051",
		MetricsAddr: "127.0.0.1:9464",
		ConsoleAddr: "127.0.0.1:8088",
		DataDir:     launch.DefaultDataDir(),
	})
	o.TeltonikaFlags(fs, launch.TeltonikaOptions{TCPAddr: "127.0.0.1:5027", UDPAddr: "127.0.0.1:5027"})
	o.CoAPFlags(fs, launch.CoAPOptions{Addr: "127.0.0.1:5683"})
	o.MQTTFlags(fs, launch.DefaultMQTTPort)
	fs.IntVar(&o.Sim, "sim", 0, "run this many simulated vehicles in-process")
	fs.Int64Var(&o.SimSeed, "sim-seed", 1, "seed of the simulated fleet (same seed, same fleet)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	_ = fs.Parse(os.Args[1:])
	// The defaults move to a free port when taken, and say so; an address given by flag
	// or environment never moves.
	o.FallbackPorts = true
	o.PinSetFlags(fs)
	o.EndpointsFile = filepath.Join(o.DataDir, launch.EndpointsFile)
	// Like the other defaults, the MQTT port moves only when it was not asked for.
	o.NATS.MQTT.Fallback = os.Getenv("FLEETWIRE_MQTT_PORT") == ""
	fs.Visit(func(f *flag.Flag) { o.NATS.MQTT.Fallback = o.NATS.MQTT.Fallback && f.Name != "mqtt-port" })
	o.Services = append([]string(nil), launch.AllServices...)
	if o.Teltonika.TCPAddr != "" || o.Teltonika.UDPAddr != "" {
		o.Services = append(o.Services, launch.Teltonika)
	}
	if o.CoAP.Addr != "" {
		o.Services = append(o.Services, launch.CoAP)
	}
	launch.TuneGC()
	if _, err := launch.ParseLevel(*level); err != nil {
		fmt.Fprintf(os.Stderr, "fleetwire: %v\n", err)
		os.Exit(2)
	}
	log := launch.NewLogger(os.Stderr, *level)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	p, err := launch.Start(ctx, o, log)
	if err != nil {
		log.Error("start failed", "err", err)
		os.Exit(1)
	}
	fmt.Printf(`Fleetwire is running.
  gRPC (fleet.v1 services, health, reflection): %[1]s
  NATS (trackers publish to fleet.up.<vehicle>.tele): %[2]s
  Prometheus metrics: http://%[3]s/metrics
%[9]s  Simulated vehicles: %[4]d
%[5]s%[6]s%[7]s%[8]s`, p.GRPCAddr, p.Bus.ClientURL(), p.MetricsAddr, o.Sim, teltonikaHelp(p, o), coapHelp(p), mqttHelp(p), movedHelp(p, o), consoleHelp(p))
	if p.Insecure {
		fmt.Printf(`
  !!! %[2]s !!!

  go run ./cmd/fleetctl --insecure --addr %[1]s vehicles
  grpcurl -plaintext %[1]s list
Ctrl-C stops.
`, p.GRPCAddr, launch.InsecureBanner)
	} else if p.Credentials == nil {
		fmt.Printf("\n  TLS and API tokens are on, with the certificate given; use fleetctl login --addr %s --token T --ca FILE\nCtrl-C stops.\n", p.GRPCAddr)
	} else {
		fmt.Printf(`
  TLS and API tokens are on. Development credentials (CA, server certificate, admin token)
  are in %[2]s; fleetctl on this machine finds them by itself:

  go run ./cmd/fleetctl --addr %[1]s vehicles
  go run ./cmd/fleetctl --addr %[1]s watch
  grpcurl -cacert %[3]s -H "authorization: Bearer $(cat %[4]s)" %[1]s list
Ctrl-C stops.
`, p.GRPCAddr, p.Credentials.Dir, p.CAFile, p.Credentials.TokenFile)
	}
	if c := p.NATSCredentials; c != nil {
		fmt.Printf(`
  NATS is authenticated: every device logs in as its own id and may publish only under
  fleet.up.<id>.> (docs/security.md). The simulated vehicles' secrets are in
  %[2]s. Register a device and connect it:

  go run ./cmd/fleetctl --addr %[4]s devices add truck-1     (prints its secret once)
  nats --server %[1]s --user truck-1 --password SECRET --inbox-prefix _INBOX_truck-1 pub fleet.up.truck-1.tele ...
  Service and tool passwords (admin, tracking, ...) are in %[3]s/<user>.password:
  nats --server %[1]s --user admin --password "$(cat %[3]s/admin.password)" stream ls
`, p.Bus.ClientURL(), c.DeviceSecretsPath(), c.Dir, p.GRPCAddr)
	}
	if err := p.Wait(); err != nil {
		log.Error("stopped with error", "err", err)
		os.Exit(1)
	}
}

// movedHelp says which default ports were taken and where the addresses are written.
func movedHelp(p *launch.Platform, o launch.Options) string {
	if len(p.Moved) == 0 {
		return ""
	}
	names := make([]string, 0, len(p.Moved))
	for n := range p.Moved {
		names = append(names, n)
	}
	sort.Strings(names)
	s := ""
	for _, n := range names {
		s += fmt.Sprintf("  (%s: %s was taken, so a free port is used; give --%s to insist on one)\n", n, p.Moved[n], flagOf[n])
	}
	return s + fmt.Sprintf("  These addresses are also in %s while it runs (fleetctl reads it).\n", o.EndpointsFile)
}

var flagOf = map[string]string{"console": "console-addr", "grpc": "grpc-addr", "metrics": "metrics-addr", "pprof": "pprof-addr", "teltonika tcp": "teltonika-tcp-addr", "teltonika udp": "teltonika-udp-addr"}

// teltonikaHelp says where Teltonika trackers connect and how to register one.
func teltonikaHelp(p *launch.Platform, o launch.Options) string {
	if p.TeltonikaTCP == "" && p.TeltonikaUDP == "" {
		return ""
	}
	s := fmt.Sprintf("  Teltonika trackers (Codec 8, 8E, 16; commands over Codec 12): TCP %s, UDP %s\n", orOff(p.TeltonikaTCP), orOff(p.TeltonikaUDP))
	s += "    register a device: fleetctl devices add VEHICLE --protocol teltonika, and map its IMEI with --teltonika-device IMEI=VEHICLE"
	if o.Teltonika.DevicesFile != "" {
		s += fmt.Sprintf(", or append \"IMEI vehicle-id\" to %s (re-read on change)", o.Teltonika.DevicesFile)
	} else {
		s += ", or --teltonika-devices FILE of \"IMEI vehicle-id\" lines (re-read on change)"
	}
	s += "\n    unregistered devices are refused; listen elsewhere with --teltonika-tcp-addr / --teltonika-udp-addr\n"
	return s
}

// coapHelp says where CoAP trackers send and how to register one.
func coapHelp(p *launch.Platform) string {
	if p.CoAPAddr == "" {
		return ""
	}
	return fmt.Sprintf(`  CoAP trackers (RFC 7252 over UDP; POST /up/<kind>, observe /down/cmd): coap://%[1]s
    register a device: fleetctl devices add ID --protocol coap (prints its secret once), then
    coap-client -m post -f batch.pb "coap://%[1]s/up/tele?id=ID&key=SECRET"
    unregistered or revoked devices are answered 4.01; listen elsewhere with --coap-addr
`, p.CoAPAddr)
}

// mqttHelp says where MQTT devices connect and how to register one.
func mqttHelp(p *launch.Platform) string {
	if p.MQTTAddr == "" {
		return ""
	}
	host, port, _ := net.SplitHostPort(p.MQTTAddr)
	return fmt.Sprintf(`  MQTT devices (3.1.1, the NATS server's own listener): mqtt://%[1]s
    register a device: fleetctl devices add ID --protocol mqtt (prints its secret once), then
    mosquitto_pub -h %[2]s -p %[3]s -q 1 -u ID -P SECRET -t fleet/up/ID/tele -f batch.pb
    mosquitto_sub -h %[2]s -p %[3]s -q 1 -u ID -P SECRET -t fleet/down/ID/cmd
    listen elsewhere with --mqtt-port (0 turns MQTT off)
`, p.MQTTAddr, host, port)
}

func orOff(addr string) string {
	if addr == "" {
		return "off"
	}
	return addr
}

// consoleHelp names the web console's address and how to sign in to it.
func consoleHelp(p *launch.Platform) string {
	if p.ConsoleURL == "" {
		return ""
	}
	if p.Insecure || p.Credentials == nil {
		return fmt.Sprintf("  Web console: %s\n", p.ConsoleURL)
	}
	return fmt.Sprintf("  Web console: %s (sign in with a token: `fleetctl tokens create NAME ROLE`, or the admin token in %s)\n",
		p.ConsoleURL, filepath.Join(p.Credentials.Dir, "admin.token"))
}
