package launch

import (
	"fmt"
	"io"
	"strings"

	"github.com/fleetwire/fleetwire/pkg/auth"
)

// CredentialsMain is `fleetwire credentials DIR [HOST...]`: it creates what is missing of
// the development credentials in DIR (a CA, a server certificate also valid for each HOST,
// an admin token; the files the all-in-one makes for itself) and exits. It is for a
// deployment of separate service processes that must share one set, such as
// docker-compose.yml's init container; production uses its own CA's certificates.
func CredentialsMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, "usage: fleetwire credentials DIR [HOST...]")
		return 2
	}
	c, err := auth.EnsureDevCredentials(args[0], args[1:]...)
	if err != nil {
		fmt.Fprintf(stderr, "fleetwire credentials: %v\n", err)
		return 1
	}
	state := "present"
	if c.Created {
		state = "created"
	}
	// The token stays in its file: this output may end up in a log.
	fmt.Fprintf(stdout, "development credentials %s in %s: CA %s, server certificate %s (key %s), admin token in %s\n",
		state, c.Dir, c.CAFile, c.CertFile, c.KeyFile, c.TokenFile)
	return 0
}
