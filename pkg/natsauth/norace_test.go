//go:build !race

package natsauth_test

const raceEnabled = false
