//go:build race

package faulttest

// RaceEnabled: the test binary has the race detector, and so do the binaries
// BuildBinaries builds (make test runs go test -race: they then reuse its compiled
// packages, and a data race in a service under fault injection fails the test).
const RaceEnabled = true
