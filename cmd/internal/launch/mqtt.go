package launch

import (
	"errors"
	"flag"
)

// MQTT devices connect to the embedded NATS server's own MQTT listener (no separate
// broker; docs/protocol-mqtt.md). Only the all-in-one has an embedded server; against an
// external one, MQTT is that server's configuration (an "mqtt" block).

// DefaultMQTTPort is the all-in-one's MQTT port: 1883, MQTT's registered port, is often
// held by a broker already running on the machine, so Fleetwire's own defaults to the
// next one (and moves to a free port when that is taken too).
const DefaultMQTTPort = 1884

// MQTTFlags registers the embedded server's MQTT listener flags; defPort 0 leaves MQTT
// off unless asked for.
func (o *Options) MQTTFlags(fs *flag.FlagSet, defPort int) {
	var e envReader
	fs.IntVar(&o.NATS.MQTT.Port, "mqtt-port", e.int("FLEETWIRE_MQTT_PORT", defPort), "embedded NATS: MQTT listener port (a taken port moves to a free one); 0 disables, -1 any free port (env FLEETWIRE_MQTT_PORT)")
	fs.StringVar(&o.NATS.MQTT.Host, "mqtt-host", e.str("FLEETWIRE_MQTT_HOST", ""), "embedded NATS: MQTT listener interface; default the NATS listen host, loopback (env FLEETWIRE_MQTT_HOST)")
	o.envErr = errors.Join(o.envErr, e.err())
}
