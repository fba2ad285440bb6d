//go:build race

package fuel

// raceEnabled: under the race detector the accuracy runs shrink to a smoke size. They
// are single-goroutine replays, so the detector has nothing to find in them; the figures
// and their thresholds come from the ordinary run.
const raceEnabled = true
