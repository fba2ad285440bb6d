// Package layout holds the check of the repository's dependency rule, run by the test
// suite: cmd → edge → services → pkg, one way only.
//
//   - a service (services/<name>/...) never imports another service, an edge or cmd;
//   - an edge (edge/<name>/...) imports pkg only: never a service or cmd;
//   - pkg never imports services, edges or cmd.
//
// Services meet over NATS subjects and gRPC; the binaries in cmd wire them together.
package layout
