package bus

import (
	"fmt"
	"net"
	"strconv"

	"github.com/nats-io/nats-server/v2/server"
)

// MQTTConfig turns on the embedded server's own MQTT listener (MQTT 3.1.1): MQTT devices
// connect to nats-server itself, no separate broker. A topic fleet/up/<id>/<kind> is the
// NATS subject fleet.up.<id>.<kind>, so an MQTT device's records land in the telemetry
// stream like a NATS tracker's, under the same permissions (docs/protocol-mqtt.md).
type MQTTConfig struct {
	// Port: 0 leaves MQTT off; -1 picks a free port; otherwise that port, or a free one
	// when it is taken and Fallback is set (the all-in-one on a machine with a broker on
	// its port).
	Port     int
	Host     string // default: the NATS listen host (loopback)
	Fallback bool
}

// applyMQTT fills the server options for cfg's MQTT listener. The port is chosen here, so
// the bound address is known before the server starts (MQTTAddr).
func applyMQTT(cfg Config, opts *server.Options) error {
	m := cfg.MQTT
	if m.Port == 0 {
		return nil
	}
	host := m.Host
	if host == "" {
		host = opts.Host
	}
	port, err := pickPort(host, m.Port, m.Fallback)
	if err != nil {
		return fmt.Errorf("embedded nats: mqtt: %w", err)
	}
	opts.MQTT.Host, opts.MQTT.Port = host, port
	return nil
}

// pickPort returns port when it is free on host, a free one when port is -1 or (with
// fallback) taken, and an error otherwise. The probe is closed before the server binds:
// another process could take the port in between, which the server then reports.
func pickPort(host string, port int, fallback bool) (int, error) {
	if port > 0 {
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err == nil {
			l.Close()
			return port, nil
		}
		if !fallback {
			return 0, err
		}
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// MQTTAddr is the embedded server's MQTT listener ("host:port"), or "" when it has none.
func (b *Bus) MQTTAddr() string {
	if b.srv == nil || b.mqttPort == 0 {
		return ""
	}
	return net.JoinHostPort(b.mqttHost, strconv.Itoa(b.mqttPort))
}
