package main

// What every command shares: its flag set (help and completion come from it), its
// subcommands, and the three output formats (aligned table, JSON lines, CSV).

import (
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// env is what a running command sees.
type env struct {
	cli
	name    string // the command's name
	format  string // table, json or csv
	globals globals
	gfs     *flag.FlagSet
	conn    *grpc.ClientConn // nil for local commands and help
	conns   connSettings     // how conn was made (for hints)
	// helpTo receives help text instead of stderr (fleetctl help COMMAND).
	helpTo io.Writer
	// listing: completion asks for the flags and subcommands instead of running.
	listing io.Writer
}

func (e *env) out() io.Writer { return e.stdout }

func (e *env) json() bool { return e.format == "json" }

// flagSet is the command's own flag set; its -h prints the synopsis, the summary and the
// flags.
func (e *env) flagSet() *flag.FlagSet {
	c := commands[e.name]
	return e.subFlagSet("", c.args, c.summary)
}

// subFlagSet is a subcommand's flag set ("zones create").
func (e *env) subFlagSet(sub, args, summary string) *flag.FlagSet {
	name := e.name
	if sub != "" {
		name += " " + sub
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	w := e.helpTo
	if w == nil {
		w = e.stderr
	}
	fs.SetOutput(w)
	fs.Usage = func() {
		fmt.Fprintf(w, "usage: fleetctl %s %s\n\n%s\n", name, args, summary)
		has := false
		fs.VisitAll(func(*flag.Flag) { has = true })
		if has {
			fmt.Fprintln(w, "\nflags:")
			fs.PrintDefaults()
		}
		fmt.Fprintln(w, "\nglobal flags (--addr, --token, --ca, --insecure, -o, --timeout, --config): fleetctl help")
	}
	return fs
}

// parse parses flags that may come before or after positional arguments ("ack 12 --note
// x" as well as "ack --note x 12") and returns the positionals. Completion gets the flag
// names instead.
func (e *env) parse(fs *flag.FlagSet, args []string) ([]string, error) {
	if e.listing != nil {
		fs.VisitAll(func(f *flag.Flag) { fmt.Fprintf(e.listing, "--%s\n", f.Name) })
		return nil, flag.ErrHelp
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if !errors.Is(err, flag.ErrHelp) {
				return nil, fmt.Errorf("%w: %v", errReported, err) // the flag package printed it
			}
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		if fs.Arg(0) == "--" && len(fs.Args()) > 0 {
			return append(pos, fs.Args()[1:]...), nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// noFlags parses a command without flags of its own (so -h still works) and checks the
// number of positionals.
func (e *env) noFlags(args []string, minArgs, maxArgs int) ([]string, error) {
	pos, err := e.parse(e.flagSet(), args)
	if err != nil {
		return nil, err
	}
	if len(pos) < minArgs || (maxArgs >= 0 && len(pos) > maxArgs) {
		return nil, usageErr("wrong number of arguments")
	}
	return pos, nil
}

// sub is a subcommand of a command group ("zones create").
type sub struct {
	name, args, summary string
	run                 func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error
}

// dispatch runs the subcommand args[0] names, else def (when not empty) with all args.
// The subcommand gets its flag set ready, named and described.
func (e *env) dispatch(ctx context.Context, args []string, subs []sub, def string) error {
	find := func(name string) *sub {
		for i := range subs {
			if subs[i].name == name {
				return &subs[i]
			}
		}
		return nil
	}
	var s *sub
	if len(args) > 0 {
		if s = find(args[0]); s != nil {
			args = args[1:]
		}
	}
	if s == nil && e.listing != nil {
		for _, s := range subs {
			fmt.Fprintln(e.listing, s.name)
		}
		if def == "" {
			return flag.ErrHelp
		}
	}
	if s == nil && len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
		w := e.helpTo
		if w == nil {
			w = e.stderr
		}
		c := commands[e.name]
		fmt.Fprintf(w, "usage: fleetctl %s %s\n\n%s\n\nsubcommands:\n", e.name, c.args, c.summary)
		for _, s := range subs {
			fmt.Fprintf(w, "  %s %s\n      %s\n", s.name, s.args, s.summary)
		}
		fmt.Fprintf(w, "\nfleetctl %s SUBCOMMAND -h explains one.\n", e.name)
		return flag.ErrHelp
	}
	if s == nil && def != "" {
		s = find(def)
	}
	if s == nil {
		names := make([]string, len(subs))
		for i, s := range subs {
			names[i] = s.name
		}
		if len(args) == 0 {
			return usageErr("which one: %s?", strings.Join(names, ", "))
		}
		return usageErr("unknown subcommand %q (%s)", args[0], strings.Join(names, ", "))
	}
	return s.run(ctx, e, e.subFlagSet(s.name, s.args, s.summary), args)
}

// emit prints one message as a JSON line.
func (e *env) emit(m proto.Message) error {
	b, err := protojson.MarshalOptions{}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(e.out(), string(b))
	return err
}

// table renders rows as an aligned table or CSV (for -o json, commands emit messages
// instead).
type table struct {
	tw *tabwriter.Writer
	cw *csv.Writer
}

func (e *env) table(header ...string) *table {
	t := &table{}
	if e.format == "csv" {
		t.cw = csv.NewWriter(e.out())
		_ = t.cw.Write(lowerHeader(header))
		return t
	}
	t.tw = tabwriter.NewWriter(e.out(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(t.tw, strings.Join(header, "\t"))
	return t
}

// lowerHeader turns "ODO KM" into "odo_km": CSV headers a spreadsheet or a script can
// name.
func lowerHeader(h []string) []string {
	out := make([]string, len(h))
	for i, s := range h {
		out[i] = strings.ReplaceAll(strings.ToLower(s), " ", "_")
	}
	return out
}

func (t *table) row(cells ...string) {
	if t.cw != nil {
		_ = t.cw.Write(cells)
		return
	}
	for i, c := range cells {
		cells[i] = strings.Map(func(r rune) rune { // a tab or newline would break the columns
			if r == '\t' || r == '\n' || r == '\r' {
				return ' '
			}
			return r
		}, c)
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error {
	if t.cw != nil {
		t.cw.Flush()
		return t.cw.Error()
	}
	return t.tw.Flush()
}

// fields prints one object as "name: value" lines (table) or name,value rows (CSV).
func (e *env) fields(pairs [][2]string) error {
	if e.format == "csv" {
		cw := csv.NewWriter(e.out())
		_ = cw.Write([]string{"field", "value"})
		for _, p := range pairs {
			_ = cw.Write([]string{p[0], p[1]})
		}
		cw.Flush()
		return cw.Error()
	}
	tw := tabwriter.NewWriter(e.out(), 0, 4, 2, ' ', 0)
	for _, p := range pairs {
		fmt.Fprintf(tw, "%s:\t%s\n", p[0], p[1])
	}
	return tw.Flush()
}

// streamTable prints rows as they come (watch, --follow): the columns cannot be measured
// in advance, so each has a fixed width, wide enough for its usual values; a longer value
// pushes the rest of its row, not every later row.
type streamTable struct {
	e      *env
	widths []int
	cw     *csv.Writer
}

func (e *env) streamTable(header []string, widths []int) *streamTable {
	s := &streamTable{e: e, widths: widths}
	if e.format == "csv" {
		s.cw = csv.NewWriter(e.out())
		_ = s.cw.Write(lowerHeader(header))
		s.cw.Flush()
		return s
	}
	_ = s.row(header...)
	return s
}

func (s *streamTable) row(cells ...string) error {
	if s.cw != nil {
		_ = s.cw.Write(cells)
		s.cw.Flush()
		return s.cw.Error()
	}
	var b strings.Builder
	for i, c := range cells {
		if i == len(cells)-1 || i >= len(s.widths) {
			b.WriteString(c)
			break
		}
		b.WriteString(c)
		for n := len([]rune(c)); n < s.widths[i]; n++ {
			b.WriteByte(' ')
		}
		b.WriteString("  ")
	}
	_, err := fmt.Fprintln(s.e.out(), strings.TrimRight(b.String(), " "))
	return err
}

// timeLayout is every time fleetctl prints: the date, the time and the zone.
const timeLayout = "2006-01-02 15:04:05 MST"

// when formats a timestamp in the local zone; "-" when unset.
func (e *env) when(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().In(e.loc).Format(timeLayout)
}

// ago formats how long before now a timestamp is ("12s ago").
func (e *env) ago(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	d := e.now().Sub(ts.AsTime())
	if d < 0 {
		return "in " + human(-d)
	}
	return human(d) + " ago"
}

// human formats a duration to the second ("1h2m3s", "3d4h").
func human(d time.Duration) string {
	d = d.Round(time.Second)
	if d >= 48*time.Hour {
		days := d / (24 * time.Hour)
		return fmt.Sprintf("%dd%dh", days, (d-days*24*time.Hour)/time.Hour)
	}
	return d.String()
}

func dur(d *durationpb.Duration) string {
	if d == nil {
		return "-"
	}
	return human(d.AsDuration())
}

// num formats a number with the given decimals.
func num(f float64, decimals int) string { return strconv.FormatFloat(f, 'f', decimals, 64) }

// optNum formats an optional number; "-" when absent.
func optNum(f *float64, decimals int) string {
	if f == nil {
		return "-"
	}
	return num(*f, decimals)
}

func enumName(s, prefix string) string { return strings.ToLower(strings.TrimPrefix(s, prefix)) }

// enumValue finds an enum value by its short lower-case name ("acknowledged",
// "set_report_interval", "set-report-interval") or its full name.
func enumValue(values map[string]int32, prefix, name string) (int32, bool) {
	n := strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	if v, ok := values[prefix+n]; ok && v != 0 {
		return v, true
	}
	v, ok := values[n]
	return v, ok && v != 0
}

// enumNames lists an enum's short names, for messages and help.
func enumNames(values map[string]int32, prefix string) string {
	var names []string
	for k, v := range values {
		if v != 0 {
			names = append(names, enumName(k, prefix))
		}
	}
	sort.Slice(names, func(i, j int) bool {
		return values[prefix+strings.ToUpper(names[i])] < values[prefix+strings.ToUpper(names[j])]
	})
	return strings.Join(names, ", ")
}

// sortedMap renders a map as "k=v,k=v" in key order.
func sortedMap(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, ",")
}

func joinOrDash(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// kvFlag is a repeatable key=value flag.
type kvFlag map[string]string

func (m kvFlag) String() string { return sortedMap(m) }
func (m kvFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q is not key=value", v)
	}
	m[k] = val
	return nil
}

// timeFlag reads a point in time: RFC 3339 ("2026-12-01T08:00:00Z"), a local date and
// time ("2026-12-01 08:00", "2026-12-01"), or a duration before now ("2h", "7d").
type timeFlag struct {
	e   *env
	t   *time.Time
	set bool
}

func (f *timeFlag) String() string {
	if f.t == nil || f.t.IsZero() {
		return ""
	}
	return f.t.Format(time.RFC3339)
}

func (f *timeFlag) Set(v string) error {
	t, err := parseWhen(v, f.e.now(), f.e.loc)
	if err != nil {
		return err
	}
	*f.t, f.set = t, true
	return nil
}

func (e *env) timeVar(fs *flag.FlagSet, name string, def time.Time, usage string) *timeFlag {
	t := def
	f := &timeFlag{e: e, t: &t}
	fs.Var(f, name, usage+` (RFC 3339, "2006-01-02 15:04" local, or an age such as 2h or 7d)`)
	return f
}

func (f *timeFlag) ts() *timestamppb.Timestamp {
	if f.t.IsZero() {
		return nil
	}
	return timestamppb.New(*f.t)
}

func parseWhen(v string, now time.Time, loc *time.Location) (time.Time, error) {
	v = strings.TrimSpace(v)
	if d, ok := strings.CutSuffix(v, "d"); ok {
		if n, err := strconv.ParseFloat(d, 64); err == nil && n >= 0 {
			return now.Add(-time.Duration(n * 24 * float64(time.Hour))), nil
		}
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, v, loc); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time (RFC 3339, 2006-01-02 15:04, or an age such as 2h or 7d)", v)
}

// noPos parses a command that takes flags only.
func (e *env) noPos(fs *flag.FlagSet, args []string) ([]string, error) {
	pos, err := e.parse(fs, args)
	if err == nil && len(pos) > 0 {
		return nil, usageErr("unexpected argument %q", pos[0])
	}
	return pos, err
}

// latLng reads "lat,lon".
func latLng(s string) (float64, float64, error) {
	a, b, ok := strings.Cut(s, ",")
	if !ok {
		return 0, 0, fmt.Errorf("%q: want LAT,LON", s)
	}
	lat, err1 := strconv.ParseFloat(strings.TrimSpace(a), 64)
	lon, err2 := strconv.ParseFloat(strings.TrimSpace(b), 64)
	if err1 != nil || err2 != nil || lat < -90 || lat > 90 || lon < -180 || lon > 180 {
		return 0, 0, fmt.Errorf("%q: want LAT,LON in degrees", s)
	}
	return lat, lon, nil
}
