package layout

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestServicesUseBusMethods fails when a service's code (tests aside) takes the bus's raw
// connection (bus.Bus.Conn): services reach NATS through the Bus's methods, so stream and
// bucket provisioning stays serialised in pkg/bus and every use of NATS is listed there.
// Edges and simulators, which speak NATS as devices do, may hold the connection.
func TestServicesUseBusMethods(t *testing.T) {
	fset := token.NewFileSet()
	err := filepath.WalkDir("../../services", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if c, ok := n.(*ast.CallExpr); ok && len(c.Args) == 0 {
				if sel, ok := c.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "Conn" {
					t.Errorf("%s: a service calls Conn(); use the bus's methods (pkg/bus/handles.go)", fset.Position(c.Pos()))
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
