#!/bin/sh
# Writes .env for docker-compose.yml with fresh random secrets: the Redis password, one NATS
# password per identity of pkg/natsauth's table (deployments/nats/nats-server.conf reads them
# as $FLEETWIRE_NATS_<USER>_PASSWORD), the auth callout issuer's account nkey and the
# responder's curve nkey that login requests are encrypted to (public keys for the server,
# seeds for the responder, cmd/callout) and the gateways' message id key. Run once from the repository root; an existing
# .env is kept. The file is mode 0600; git ignores it.
set -eu
[ -e .env ] && { echo ".env exists; remove it first to make new secrets" >&2; exit 1; }
umask 077
# nats-server may parse an environment value that looks numeric as a number, so every
# password begins with letters.
secret() { echo "fw$(openssl rand -hex 24)"; }
# nk is nats-io's nkey tool, from the nkeys module this repository already depends on.
keys=$(go run github.com/nats-io/nkeys/nk -gen account -pubout)
xkeys=$(go run github.com/nats-io/nkeys/nk -gen curve -pubout)
{
	echo "REDIS_PASSWORD=$(secret)"
	echo "FLEETWIRE_MSGID_KEY=$(openssl rand -hex 32)"
	for user in admin platform tracking geofence maintenance dispatch devices teltonika callout kicker loadgen; do
		echo "FLEETWIRE_NATS_$(echo "$user" | tr a-z A-Z)_PASSWORD=$(secret)"
	done
	# The cluster profile's routes log in as the route identity (deployments/nats/nats-cluster.conf).
	echo "FLEETWIRE_NATS_ROUTE_PASSWORD=$(secret)"
	echo "FLEETWIRE_NATS_CALLOUT_ISSUER_SEED=$(echo "$keys" | sed -n 1p)"
	echo "FLEETWIRE_NATS_CALLOUT_ISSUER=$(echo "$keys" | sed -n 2p)"
	echo "FLEETWIRE_NATS_CALLOUT_XKEY_SEED=$(echo "$xkeys" | sed -n 1p)"
	echo "FLEETWIRE_NATS_CALLOUT_XKEY=$(echo "$xkeys" | sed -n 2p)"
} > .env
echo "wrote .env (mode 0600): the Redis password, NATS passwords, the callout issuer key and the key that encrypts login requests"
