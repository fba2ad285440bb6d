// Command redischeck says, loudly, when the Redis-backed tests are going to be skipped:
// go test prints a passing package's output only with -v, so the skip message the tests
// write would otherwise go unseen. make test runs it before and after the suite. It exits
// 1 only when FLEETWIRE_REQUIRE_REDIS=1 makes a missing Redis a failure.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/fleetwire/fleetwire/pkg/redistest"
)

func main() {
	err := redistest.Ping(context.Background())
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "\n*** %s ***\n\n", redistest.Unavailable(err))
	if redistest.Required() {
		os.Exit(1)
	}
}
