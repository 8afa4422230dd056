//go:build race

package exporter

// raceEnabled is set when the tests run under the race detector, which
// makes the gigabyte-sized tests several times slower without checking
// anything more: the part writer and reader run on one goroutine.
const raceEnabled = true
