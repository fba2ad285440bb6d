// Command teltonika runs the Teltonika gateway as its own process, against external NATS:
// Teltonika trackers connect over TCP or UDP, their records are stored in JetStream as
// their vehicle's, and commands reach them over Codec 12 (docs/protocol-teltonika.md).
// Run it with -h for its flags; every flag has an environment variable.
//
//	teltonika --nats-url nats://127.0.0.1:4222 --teltonika-tcp-addr :5027 --teltonika-udp-addr :5027 --teltonika-devices devices.txt
package main

import "github.com/fleetwire/fleetwire/cmd/internal/launch"

func main() { launch.Main(launch.Teltonika) }
