#!/bin/sh
# Writes .env for docker-compose.yml with fresh random secrets: the Redis password and one
# NATS password per service identity (pkg/natsauth's table; deployments/nats/nats-server.conf
# reads them as $FLEETWIRE_NATS_<USER>_PASSWORD). Run once from the repository root; an
# existing .env is kept. The file is mode 0600 and must never be committed.
set -eu
[ -e .env ] && { echo ".env exists; remove it first to make new secrets" >&2; exit 1; }
umask 077
secret() { openssl rand -hex 24; }
{
	echo "REDIS_PASSWORD=$(secret)"
	for user in admin tracking geofence maintenance dispatch devices teltonika callout kicker loadgen; do
		echo "FLEETWIRE_NATS_$(echo "$user" | tr a-z A-Z)_PASSWORD=$(secret)"
	done
} > .env
echo "wrote .env (mode 0600): Redis password and NATS service passwords"
