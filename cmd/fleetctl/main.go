// Command fleetctl is the dispatcher's console: it talks to Fleetwire's gRPC API.
//
//	fleetctl COMMAND [ARGS] [--addr HOST:PORT] [--token T] [--ca FILE] [-o table|json|csv]
//
// Global flags may stand anywhere on the line, before or after the command. Credentials
// come from the flags, then FLEETCTL_TOKEN / FLEETCTL_CA, then the file `fleetctl login`
// writes, then (for an address on this machine) the credentials a fleetwire all-in-one
// generated in its data directory.
//
// `fleetctl help` lists the commands, `fleetctl help COMMAND` (or `COMMAND -h`) explains
// one. A command group is one file: it adds its commands with register in an init
// function, and help, completion and flag handling come from here.
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
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// command is one fleetctl command.
type command struct {
	name    string
	args    string // what follows the name in a synopsis, e.g. "ID [--note N]"
	summary string
	// run does the work. Flags are parsed by the command itself, through e.parse, so that
	// "-h" shows its help and completion lists its flags.
	run func(ctx context.Context, e *env, args []string) error
	// stream reports whether these args make the command run until interrupted (no
	// overall timeout); nil: never.
	stream func(args []string) bool
	// local commands need no server (help, completion, login dials by itself).
	local bool
}

// commands is every command by name; each file adds its own with register.
var commands = map[string]command{}

// register adds commands. A duplicate name is a programming error in this package.
func register(cs ...command) {
	for _, c := range cs {
		if _, dup := commands[c.name]; dup {
			panic("fleetctl: command registered twice: " + c.name)
		}
		commands[c.name] = c
	}
}

func always([]string) bool { return true }

// following reports whether args ask to follow a stream.
func following(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		switch strings.TrimLeft(a, "-") {
		case "follow", "follow=true":
			return true
		}
	}
	return false
}

// defaultPort is the all-in-one's (and the tracking binary's) gRPC port.
const defaultPort = "50051"

// globals are the flags every command accepts, anywhere on the line.
type globals struct {
	addr, token, ca, cfgPath, output string
	plaintext                        bool
	timeout                          time.Duration
}

func (g *globals) flags(fs *flag.FlagSet) {
	fs.StringVar(&g.addr, "addr", envOr("FLEETCTL_ADDR", ""), "Fleetwire gRPC address HOST:PORT (env FLEETCTL_ADDR; default: the logged-in server, else the local all-in-one's, else 127.0.0.1:"+defaultPort+")")
	fs.StringVar(&g.token, "token", "", "API token (env FLEETCTL_TOKEN; default: from fleetctl login, or the local all-in-one's admin token)")
	fs.StringVar(&g.ca, "ca", "", "CA bundle for the server's certificate (env FLEETCTL_CA)")
	fs.BoolVar(&g.plaintext, "insecure", false, "plaintext gRPC, for a server started with --insecure")
	fs.StringVar(&g.cfgPath, "config", configPath(), "credentials file written by login (env FLEETCTL_CONFIG)")
	fs.StringVar(&g.output, "o", envOr("FLEETCTL_OUTPUT", "table"), "output format: table, json (one object per line) or csv (env FLEETCTL_OUTPUT)")
	fs.DurationVar(&g.timeout, "timeout", 10*time.Second, "deadline for one request (not for streams)")
}

// cli is one invocation's surroundings; tests replace the clock and the zone.
type cli struct {
	stdout, stderr io.Writer
	now            func() time.Time
	loc            *time.Location
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(argv []string, stdout, stderr io.Writer) int {
	return cli{stdout: stdout, stderr: stderr, now: time.Now, loc: time.Local}.run(argv)
}

// splitGlobals takes the global flags out of argv wherever they stand and returns them
// apart from the rest (the command and its own arguments). "--" ends the scan.
func splitGlobals(fs *flag.FlagSet, argv []string) (global, rest []string) {
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		if a == "--" {
			return global, append(rest, argv[i:]...)
		}
		if len(a) < 2 || a[0] != '-' {
			rest = append(rest, a)
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := fs.Lookup(name)
		if f == nil {
			rest = append(rest, a)
			continue
		}
		global = append(global, a)
		if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() || hasValue {
			continue
		}
		if i+1 < len(argv) {
			i++
			global = append(global, argv[i])
		}
	}
	return global, rest
}

// wantsHelp reports whether args ask for help ("-h", "--help") before any "--".
func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help", "--h":
			return true
		}
	}
	return false
}

func newGlobalFlags(g *globals) *flag.FlagSet {
	fs := flag.NewFlagSet("fleetctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.flags(fs)
	return fs
}

func (c cli) run(argv []string) int {
	var g globals
	gfs := newGlobalFlags(&g)
	global, rest := splitGlobals(gfs, argv)
	if err := gfs.Parse(global); err != nil {
		fmt.Fprintf(c.stderr, "fleetctl: %v\n", err)
		return 2
	}
	if len(rest) == 0 || rest[0] == "-h" || rest[0] == "--help" || rest[0] == "-help" {
		c.usage(gfs, c.stderr)
		if len(rest) == 0 {
			return 2
		}
		return 0
	}
	name, args := rest[0], rest[1:]
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(c.stderr, "fleetctl: unknown command %q (fleetctl help lists them)\n", name)
		if m := closest(name); m != "" {
			fmt.Fprintf(c.stderr, "did you mean %q?\n", m)
		}
		return 2
	}
	switch g.output {
	case "table", "json", "csv":
	default:
		fmt.Fprintf(c.stderr, "fleetctl: -o must be table, json or csv, not %q\n", g.output)
		return 2
	}
	e := &env{cli: c, name: name, format: g.output, globals: g, gfs: gfs}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	help := wantsHelp(args)
	if !cmd.local && !help {
		cs := connSettings{addr: g.addr, token: g.token, ca: g.ca, plaintext: g.plaintext}
		if err := cs.resolve(g.cfgPath); err != nil {
			fmt.Fprintf(c.stderr, "fleetctl: %v\n", err)
			return 2
		}
		if cs.addrNote != "" {
			fmt.Fprintf(c.stderr, "fleetctl: %s\n", cs.addrNote)
		}
		conn, err := cs.dial()
		if err != nil {
			fmt.Fprintf(c.stderr, "fleetctl: %v\n", err)
			return 1
		}
		defer conn.Close()
		e.conn, e.conns = conn, cs
	}
	if cmd.stream == nil || !cmd.stream(args) {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.timeout)
		defer cancel()
	}
	err := cmd.run(ctx, e, args)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		if help {
			return 0
		}
		return 2
	case errors.Is(err, errReported):
		return 2
	case errors.Is(err, errUsage):
		fmt.Fprintf(c.stderr, "fleetctl %s: %v\n", name, err)
		fmt.Fprintf(c.stderr, "usage: fleetctl %s %s (fleetctl %s -h for more)\n", name, cmd.args, name)
		return 2
	case errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled):
		return 0
	}
	c.report(e, err)
	return 1
}

// errUsage marks a command line that does not make sense; run prints the synopsis.
var errUsage = errors.New("usage")

// errReported marks a command-line error already printed (by the flag package).
var errReported = errors.New("bad flags")

func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
}

// report prints a failed command's error, with a hint where the cause is usually the
// address, the credentials or the transport.
func (c cli) report(e *env, err error) {
	st, ok := status.FromError(err)
	if !ok {
		fmt.Fprintf(c.stderr, "fleetctl %s: %v\n", e.name, err)
		return
	}
	fmt.Fprintf(c.stderr, "fleetctl %s: %s: %s\n", e.name, st.Code(), st.Message())
	if h := hint(e.conns, st); h != "" {
		fmt.Fprintln(c.stderr, h)
	}
}

// hint explains the usual causes of a failed call.
func hint(cs connSettings, st *status.Status) string {
	msg := st.Message()
	switch {
	case st.Code() == codes.Unavailable && strings.Contains(msg, "first record does not look like a TLS handshake"):
		return fmt.Sprintf("  %s speaks plaintext gRPC: the server runs with --insecure; add --insecure (and no token).", cs.addr)
	case st.Code() == codes.Unavailable && (strings.Contains(msg, "x509") || strings.Contains(msg, "certificate")):
		return fmt.Sprintf("  the certificate of %s is not signed by the CA in use (%s): pass the server's CA with --ca, or fleetctl login --ca FILE.", cs.addr, orDash(cs.ca))
	case st.Code() == codes.Unavailable:
		return unreachableHint(cs)
	case st.Code() == codes.Unauthenticated:
		return "  no valid token: pass --token, set FLEETCTL_TOKEN, or run fleetctl login --addr HOST:PORT --token T --ca FILE."
	}
	return ""
}

// unreachableHint says which address was tried, where it came from and how to find the
// right one.
func unreachableHint(cs connSettings) string {
	return fmt.Sprintf(`  no Fleetwire server answered at %s (%s).
  Is it running? The all-in-one (go run ./cmd/fleetwire) prints its gRPC address when it
  starts, moves to a free port when %s is taken, and writes the address it uses to
  %s. Pass that address with --addr HOST:PORT (or FLEETCTL_ADDR).`,
		cs.addr, cs.addrFrom, defaultPort, endpointsPath(allInOneDataDir()))
}

// closest suggests a command for a mistyped name: one that it starts, or the one it
// starts with.
func closest(name string) string {
	for _, n := range sortedNames() {
		if strings.HasPrefix(n, name) || strings.HasPrefix(name, n) {
			return n
		}
	}
	return ""
}

func sortedNames() []string {
	names := make([]string, 0, len(commands))
	for n := range commands {
		if !strings.HasPrefix(n, "__") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

func (c cli) usage(gfs *flag.FlagSet, w io.Writer) {
	fmt.Fprintln(w, "usage: fleetctl COMMAND [ARGS] [--addr HOST:PORT] [--token T] [--ca FILE] [-o table|json|csv]")
	fmt.Fprintln(w, "\ncommands:")
	for _, n := range sortedNames() {
		cmd := commands[n]
		fmt.Fprintf(w, "  %-12s %s\n", n, cmd.summary)
	}
	fmt.Fprintln(w, "\nfleetctl help COMMAND (or COMMAND -h) explains one; global flags may stand anywhere:")
	gfs.SetOutput(w)
	gfs.PrintDefaults()
	gfs.SetOutput(io.Discard)
}

func init() {
	register(command{name: "help", args: "[COMMAND]", summary: "list the commands, or explain one", local: true, run: runHelp})
}

// runHelp prints the command list, or one command's help (its flags included).
func runHelp(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || wantsHelp(args) {
		e.cli.usage(e.gfs, e.out())
		return nil
	}
	cmd, ok := commands[args[0]]
	if !ok {
		return usageErr("unknown command %q", args[0])
	}
	he := &env{cli: e.cli, name: cmd.name, format: e.format, globals: e.globals, gfs: e.gfs, helpTo: e.out()}
	err := cmd.run(ctx, he, append(args[1:], "-h"))
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
