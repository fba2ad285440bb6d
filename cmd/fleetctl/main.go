// Command fleetctl is the dispatcher's console: it talks to Fleetwire's gRPC API.
//
//	fleetctl [--addr HOST:PORT] [--token T] [--ca FILE] [-o table|json] COMMAND [ARGS]
//
// Credentials come from the flags, then FLEETCTL_TOKEN / FLEETCTL_CA, then the file
// `fleetctl login` writes, then (for an address on this machine) the credentials a
// fleetwire all-in-one generated in its data directory.
//
// Run fleetctl without a command for the list.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

type command struct {
	run     func(ctx context.Context, conn *grpc.ClientConn, args []string, out io.Writer, jsonOut bool) error
	usage   string
	summary string
	stream  func(args []string) bool // runs until interrupted: no overall timeout
}

func always([]string) bool { return true }

// following reports whether args ask to follow a stream.
func following(args []string) bool {
	for _, a := range args {
		if a == "--follow" || a == "-follow" || a == "-f" || a == "--follow=true" || a == "-follow=true" {
			return true
		}
	}
	return false
}

var commands = map[string]command{
	"vehicles": {run: runVehicles, usage: "vehicles [--group G] [--status S]", summary: "list vehicles with their live state"},
	"vehicle":  {run: runVehicle, usage: "vehicle ID", summary: "one vehicle in detail"},
	"watch":    {run: runWatch, usage: "watch [--vehicle ID]... [--group G]... [--bbox minLat,minLon,maxLat,maxLon]", summary: "stream live updates", stream: always},
	"alerts":   {run: runAlerts, usage: "alerts [--follow] [--vehicle V] [--state S] [--kind K]", summary: "the alert feed; --follow streams new alerts", stream: following},
	"ack":      {run: runAck, usage: "ack ID [--note N] [--who NAME]", summary: "acknowledge an alert"},
	"resolve":  {run: runResolve, usage: "resolve ID [--note N] [--who NAME]", summary: "resolve an alert"},
	"command":  {run: runSendCommand, usage: "command VEHICLE KIND [key=value ...]", summary: "send IMMOBILIZE, RESUME, LOCATE_NOW or SET_REPORT_INTERVAL"},
	"commands": {run: runCommands, usage: "commands [VEHICLE]", summary: "commands sent and their state"},
	"audit":    {run: runAudit, usage: "audit [--after N] [--limit N] [--principal P]", summary: "the audit trail of every change (admin)"},
	"tokens":   {run: runTokens, usage: "tokens create NAME ROLE [--group G]... [--ttl D] | list | revoke ID", summary: "API tokens (admin)"},
	"login":    {usage: "login --addr HOST:PORT --token T [--ca FILE]", summary: "check credentials and save them for later commands"},
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(argv []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fleetctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", envOr("FLEETCTL_ADDR", ""), "Fleetwire gRPC address (env FLEETCTL_ADDR; default: the logged-in server, else 127.0.0.1:50051)")
	token := fs.String("token", "", "API token (env FLEETCTL_TOKEN; default: from fleetctl login, or the local all-in-one's admin token)")
	ca := fs.String("ca", "", "CA bundle for the server's certificate (env FLEETCTL_CA)")
	plaintext := fs.Bool("insecure", false, "plaintext gRPC, for a server started with --insecure")
	cfgPath := fs.String("config", configPath(), "credentials file written by login (env FLEETCTL_CONFIG)")
	output := fs.String("o", envOr("FLEETCTL_OUTPUT", "table"), "output format: table or json (env FLEETCTL_OUTPUT)")
	timeout := fs.Duration("timeout", 10*time.Second, "deadline for one request (not for streams)")
	fs.Usage = func() { usage(fs, stderr) }
	if err := fs.Parse(argv); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		usage(fs, stderr)
		return 2
	}
	name, args := fs.Arg(0), fs.Args()[1:]
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "fleetctl: unknown command %q\n", name)
		usage(fs, stderr)
		return 2
	}
	if *output != "table" && *output != "json" {
		fmt.Fprintf(stderr, "fleetctl: -o must be table or json, not %q\n", *output)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cs := connSettings{addr: *addr, token: *token, ca: *ca, plaintext: *plaintext}
	if name == "login" {
		lfs := flag.NewFlagSet("login", flag.ContinueOnError)
		lfs.SetOutput(stderr)
		lfs.StringVar(&cs.addr, "addr", cs.addr, "server address")
		lfs.StringVar(&cs.token, "token", cs.token, "API token")
		lfs.StringVar(&cs.ca, "ca", cs.ca, "CA bundle of the server's certificate")
		if err := lfs.Parse(args); err != nil {
			return 2
		}
		lctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		if err := runLogin(lctx, cs, *cfgPath, stdout); err != nil {
			fmt.Fprintf(stderr, "fleetctl login: %v\n", err)
			return 1
		}
		return 0
	}
	if err := cs.resolve(*cfgPath); err != nil {
		fmt.Fprintf(stderr, "fleetctl: %v\n", err)
		return 1
	}
	conn, err := cs.dial()
	if err != nil {
		fmt.Fprintf(stderr, "fleetctl: %v\n", err)
		return 1
	}
	defer conn.Close()
	if cmd.stream == nil || !cmd.stream(args) {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	if err := cmd.run(ctx, conn, args, stdout, *output == "json"); err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled) {
			return 0
		}
		if errors.Is(err, flag.ErrHelp) {
			return 2
		}
		if st, ok := status.FromError(err); ok {
			fmt.Fprintf(stderr, "fleetctl %s: %s: %s\n", name, st.Code(), st.Message())
		} else {
			fmt.Fprintf(stderr, "fleetctl %s: %v\n", name, err)
		}
		return 1
	}
	return 0
}

func usage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintln(w, "usage: fleetctl [--addr HOST:PORT] [--token T] [--ca FILE] [-o table|json] COMMAND [ARGS]")
	fmt.Fprintln(w, "\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-60s %s\n", commands[n].usage, commands[n].summary)
	}
	fmt.Fprintln(w, "\nflags:")
	fs.PrintDefaults()
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
