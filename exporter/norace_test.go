//go:build !race

package exporter

// raceEnabled is set when the tests run under the race detector.
const raceEnabled = false
