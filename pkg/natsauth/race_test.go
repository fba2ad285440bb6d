//go:build race

package natsauth_test

const raceEnabled = true
