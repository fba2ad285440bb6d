// Command devices runs the Fleetwire provisioning service (fleet.v1.DeviceService: device
// credentials issued, rotated and revoked) as its own process, against external NATS. Run
// it with -h for its flags; every flag has an environment variable.
package main

import "github.com/fleetwire/fleetwire/cmd/internal/launch"

func main() { launch.Main(launch.Devices) }
