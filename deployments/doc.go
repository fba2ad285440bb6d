// Package deployments holds no code: its test reads docker-compose.yml and the Kubernetes
// manifests and checks the properties docs/security.md promises for them (what is published
// on the host, Redis's password and persistence, container hardening, resource limits,
// network policies, pinned images). No container engine is needed to run it.
package deployments
