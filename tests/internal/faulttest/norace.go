//go:build !race

package faulttest

// RaceEnabled: the test binary has no race detector, nor do the binaries BuildBinaries builds.
const RaceEnabled = false
