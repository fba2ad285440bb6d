package layout

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/fleetwire/fleetwire/"

// pkgInfo is the part of `go list -json` the rule needs.
type pkgInfo struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

// area names the layer of a package inside the module and, for services and edges, which
// one: ("services", "tracking"), ("edge", "teltonika"), ("pkg", ""), ("cmd", "").
func area(path string) (layer, name string) {
	rest, ok := strings.CutPrefix(path, module)
	if !ok {
		return "", "" // outside the module: the standard library, dependencies
	}
	parts := strings.Split(rest, "/")
	switch parts[0] {
	case "services", "edge":
		if len(parts) > 1 {
			return parts[0], parts[1]
		}
		return parts[0], ""
	}
	return parts[0], ""
}

// violation says why from may not import to, or "" when it may.
func violation(from, to string) string {
	fl, fn := area(from)
	tl, tn := area(to)
	if tl == "" {
		return ""
	}
	switch fl {
	case "services":
		switch {
		case tl == "services" && tn != fn:
			return "a service imports another service (services meet over NATS and gRPC)"
		case tl == "edge":
			return "a service imports an edge (edges depend on services' contracts, not the reverse)"
		case tl == "cmd":
			return "a service imports cmd"
		}
	case "edge":
		switch {
		case tl == "services":
			return "an edge imports a service (edges import pkg only)"
		case tl == "edge" && tn != fn:
			return "an edge imports another edge"
		case tl == "cmd":
			return "an edge imports cmd"
		}
	case "pkg":
		switch tl {
		case "services", "edge", "cmd":
			return "pkg imports " + tl + " (pkg is the foundation every layer may use)"
		}
	}
	return ""
}

func TestViolationRules(t *testing.T) {
	tests := []struct {
		from, to string
		bad      bool
	}{
		{"services/dispatch", "services/tracking", true},
		{"services/geofence", "services/geofence/fence", false},
		{"services/geofence/fence", "services/geofence", false},
		{"services/tracking", "edge/teltonika", true},
		{"services/tracking", "pkg/bus", false},
		{"edge/teltonika", "services/tracking", true},
		{"edge/teltonika", "pkg/wire", false},
		{"edge/teltonika/frame", "edge/teltonika", false},
		{"edge/coap", "edge/teltonika", true},
		{"pkg/bus", "services/tracking", true},
		{"pkg/bus", "edge/teltonika", true},
		{"pkg/bus", "pkg/wire", false},
		{"pkg/bus", "proto/fleet/v1", false},
		{"cmd/internal/launch", "services/tracking", false},
		{"cmd/fleetwire", "edge/teltonika", false},
		{"services/tracking", "fmt", false},
	}
	for _, tt := range tests {
		t.Run(tt.from+"→"+tt.to, func(t *testing.T) {
			got := violation(module+tt.from, qualify(tt.to))
			if (got != "") != tt.bad {
				t.Errorf("violation = %q, want bad=%v", got, tt.bad)
			}
		})
	}
}

func qualify(p string) string {
	if strings.Contains(p, "/") {
		return module + p
	}
	return p
}

// TestDependencyRule lists every package of the module (tests included) and fails on
// each import that breaks the rule.
func TestDependencyRule(t *testing.T) {
	if testing.Short() {
		t.Skip("lists the whole module")
	}
	cmd := exec.Command("go", "list", "-json", "github.com/fleetwire/fleetwire/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	seen := 0
	for {
		var p pkgInfo
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		seen++
		for _, imps := range [][]string{p.Imports, p.TestImports, p.XTestImports} {
			for _, imp := range imps {
				if why := violation(p.ImportPath, imp); why != "" {
					t.Errorf("%s imports %s: %s", strings.TrimPrefix(p.ImportPath, module), strings.TrimPrefix(imp, module), why)
				}
			}
		}
	}
	if seen < 10 {
		t.Fatalf("go list found %d packages; want the whole module", seen)
	}
}
