// Command dispatch runs the Fleetwire dispatch service (theft detection, alerts, commands) as its own process, against external NATS
// and (by default) Redis. Run it with -h for its flags; every flag has an environment variable.
package main

import "github.com/fleetwire/fleetwire/cmd/internal/launch"

func main() { launch.Main(launch.Dispatch) }
