// Command coap runs the CoAP gateway as its own process, against external NATS: trackers
// POST their records to /up/<kind> over UDP (RFC 7252), each request carrying the device's
// id and secret from the platform's device registry, and observe /down/cmd for their
// commands (docs/protocol-coap.md). Run it with -h for its flags; every flag has an
// environment variable.
//
//	coap --nats-url nats://127.0.0.1:4222 --coap-addr :5683
package main

import "github.com/fleetwire/fleetwire/cmd/internal/launch"

func main() { launch.Main(launch.CoAP) }
